"""Reload the deployment when its manifest file changes, as edgeHub applies a new twin: a manifest with
an error, an unreadable or a missing file keeps the deployment that runs (the log says so and why), and
the watcher keeps watching, so the next valid version loads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from .errors import ManifestError

log = logging.getLogger("edgehub_emu.hub")

Loaded = TypeVar("Loaded")


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def watch_manifest(
    path: Path, load: Callable[[], Loaded], apply: Callable[[Loaded], None], interval: float = 1.0
) -> Coroutine[Any, Any, None]:
    """The watch, to run as a task; the file as it is now (not when the task first runs) is the start.
    ``load`` runs in a thread (read, validate, compile: the slow part); ``apply`` on the event loop."""
    return _watch(path, _mtime(path), load, apply, interval)


async def _watch(
    path: Path,
    last: int | None,
    load: Callable[[], Loaded],
    apply: Callable[[Loaded], None],
    interval: float,
) -> None:
    while True:
        await asyncio.sleep(interval)
        current = _mtime(path)
        if current == last:
            continue
        last = current
        if current is None:
            log.warning("%s is gone: the deployment loaded from it keeps running", path)
            continue
        try:
            # Read, validate and compile off the event loop (a big manifest takes a while): connections
            # keep being served; only applying what compiled happens on the loop.
            apply(await asyncio.to_thread(load))
        except ManifestError as exc:
            log.error("kept the previous deployment: %s", exc)
        except (OSError, ValueError, RecursionError) as exc:  # unreadable, not UTF-8, nested too deep
            log.error("kept the previous deployment: %s could not be loaded (%s)", path, exc)
        else:
            log.info("reloaded %s", path)
