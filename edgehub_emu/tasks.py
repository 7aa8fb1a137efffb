"""Background work that nobody awaits: kept referenced until done, and its failure logged.

asyncio only keeps weak references to tasks, so an unreferenced one can vanish mid-flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("edgehub_emu")
_running: set[asyncio.Future[Any]] = set()


def spawn(work: Awaitable[Any], what: str) -> asyncio.Future[Any]:
    """Run ``work`` in the background; log (never raise) its failure, naming ``what`` it was."""
    future = asyncio.ensure_future(work)
    _running.add(future)

    def done(f: asyncio.Future[Any]) -> None:
        _running.discard(f)
        if not f.cancelled() and f.exception() is not None:
            log.error("%s failed", what, exc_info=f.exception())

    future.add_done_callback(done)
    return future


def every(interval: float, action: Callable[[], Any], what: str) -> asyncio.Future[Any]:
    """Run ``action`` every ``interval`` seconds in the background until cancelled; a failing round is
    logged and the next one runs."""

    async def repeat() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                action()
            except Exception:
                log.exception("%s failed", what)

    return spawn(repeat(), what)
