"""The local "cloud": what reaches ``$upstream`` when no bridge is configured is recorded here.

Tests and tools read it (``messages()``, ``wait_for(...)``); the management API and a durable capture
build on it. Each record keeps the body, properties, system properties, enqueue time and the sender.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..routing import Message


@dataclass(frozen=True, slots=True)
class UpstreamRecord:
    sequence: int
    message: Message
    received_at: float

    @property
    def origin(self) -> str:
        sys = self.message.system_properties
        module = sys.get("connectionModuleId")
        device = sys.get("connectionDeviceId") or ""
        return f"{device}/{module}" if module else device


class UpstreamCapture:
    """Keeps the last ``limit`` upstream messages in memory and wakes waiters."""

    def __init__(self, limit: int = 10_000) -> None:
        self._records: deque[UpstreamRecord] = deque(maxlen=limit)
        self._sequence = 0
        self._changed = asyncio.Condition()

    async def send(self, message: Message) -> None:
        """The upstream sink's interface: returns once the message is accepted."""
        self._sequence += 1
        self._records.append(UpstreamRecord(self._sequence, message, time.time()))
        async with self._changed:
            self._changed.notify_all()

    @property
    def last_sequence(self) -> int:
        return self._sequence

    def messages(self, since: int = 0) -> list[UpstreamRecord]:
        return [r for r in self._records if r.sequence > since]

    async def wait_for(
        self,
        predicate: Callable[[UpstreamRecord], bool] = lambda r: True,
        timeout: float = 10,
        since: int = 0,
    ) -> UpstreamRecord:
        """The first record after ``since`` that satisfies ``predicate``; TimeoutError if none comes."""

        def found() -> UpstreamRecord | None:
            return next((r for r in self._records if r.sequence > since and predicate(r)), None)

        async def wait() -> UpstreamRecord:
            async with self._changed:
                while (record := found()) is None:
                    await self._changed.wait()
                return record

        async with asyncio.timeout(timeout):
            return await wait()
