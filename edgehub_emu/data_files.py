"""Files of the data directory that can be found damaged: how a loader says so, and how one is moved
aside when the user asks for a fresh start (``--reset-damaged``).

A damaged file is never replaced silently: a fresh ``identities.json`` means new keys, and every
module's connection string stops working; a fresh ``twins.json`` loses what was set from the cloud
side. So the hub refuses to start and names the file, what it holds and what the user can do; with
``--reset-damaged`` it moves the file aside as ``NAME.corrupt-<time>`` and says what was lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("edgehub_emu.data")


class DamagedFile(Exception):
    """``path`` cannot be read as what it should be; ``holds`` says what would be lost without it;
    ``aside`` is what a fresh start moves away (the file, or the directory it only makes sense in)."""

    def __init__(self, path: Path, reason: str, holds: str, aside: Path | None = None) -> None:
        super().__init__(f"{path} is damaged ({reason})")
        self.path = path
        self.reason = reason
        self.holds = holds
        self.aside = aside or path


def set_aside(path: Path) -> Path:
    """Move a damaged file (and its SQLite companions) or directory aside, as ``NAME.corrupt-<UTC time>``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))
    return target


def write_json(path: Path, value: Any, *, indent: int | None = None, private: bool = False) -> None:
    """Write a JSON file whole: a temporary file beside it, then a rename, so that a crash leaves the
    old file or the new one, never half of one. ``private``: readable by its owner only (keys)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=indent), encoding="utf-8")
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def failure_reason(exc: OSError) -> str:
    """How a failed write reads in the log: "disk full", or the system's words."""
    return "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))


class JsonFile:
    """A JSON file of the data directory, written whole (a temporary file, then a rename) at each change.

    A write that fails (disk full, a read-only file system) does not fail the change: the owner keeps
    its state in memory, the failure is said once (until a write works again), and the next change
    writes the whole state, so the file catches up as soon as it can be written."""

    def __init__(self, path: Path, holds: str) -> None:
        self.path = path
        self.holds = holds
        self._failing = False

    def write(self, value: Any) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, value)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot save %s (%s): %s are kept in memory and saved at the next change",
                    self.path,
                    failure_reason(exc),
                    self.holds,
                )
            with contextlib.suppress(OSError):
                self.path.with_suffix(".tmp").unlink(missing_ok=True)
            return False
        if self._failing:
            self._failing = False
            log.warning("%s is saved again", self.path)
        return True
