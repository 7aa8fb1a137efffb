"""Endpoint queues in memory: one FIFO per (endpoint, priority), lowest priority number served first.

This is the store interface the hub uses (``add`` returns once a message is queued for every endpoint it
routes to, ``head``/``remove`` deliver in order); the durable SQLite store implements the same
interface. Time-to-live runs from enqueue; expired messages are skipped and counted when read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ..routing import Message, RoutedEndpoint


@dataclass(slots=True)
class Entry:
    """One message queued for one endpoint."""

    sequence: int
    endpoint_id: str
    priority: int
    message: Message
    expires_at: float
    route: str
    attempts: int = 0
    message_id: int = 0  # durable store: the row holding the body
    copies: int = 1  # durable store: how many endpoint rows share that body


@dataclass
class _Queue:
    by_priority: dict[int, deque[Entry]] = field(default_factory=dict)
    waiter: asyncio.Event | None = None

    def priorities(self) -> list[int]:
        return sorted(p for p, q in self.by_priority.items() if q)


class MemoryStore:
    """Queues in memory: fast, and lost when the process ends (``--store memory``, tests)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._queues: dict[str, _Queue] = {}
        self._sequence = itertools.count(1)
        self.clock = clock
        self.expired: dict[str, int] = {}

    def _queue(self, endpoint_id: str) -> _Queue:
        queue = self._queues.get(endpoint_id)
        if queue is None:
            queue = self._queues[endpoint_id] = _Queue()
        return queue

    def add(self, message: Message, copies: Iterable[RoutedEndpoint]) -> Awaitable[None] | None:
        """Queue ``message`` for each endpoint copy. Returns None: in memory it is done at once."""
        now = self.clock()
        for copy in copies:
            queue = self._queue(copy.endpoint.id)
            entry = Entry(
                next(self._sequence),
                copy.endpoint.id,
                copy.priority,
                message,
                now + copy.time_to_live_secs,
                copy.route,
            )
            queue.by_priority.setdefault(copy.priority, deque()).append(entry)
            if queue.waiter is not None:
                queue.waiter.set()
        return None

    def head(self, endpoint_id: str) -> Entry | None:
        """The next message to deliver: lowest priority number first, FIFO within; expired ones dropped."""
        queue = self._queues.get(endpoint_id)
        if queue is None:
            return None
        now = self.clock()
        for priority in queue.priorities():
            items = queue.by_priority[priority]
            while items:
                entry = items[0]
                if entry.expires_at <= now:
                    items.popleft()
                    self.expired[endpoint_id] = self.expired.get(endpoint_id, 0) + 1
                    continue
                return entry
        return None

    def next_unsent(self, endpoint_id: str, sent: set[int]) -> Entry | None:
        """The first entry in delivery order that is not already in flight (``sent`` sequences)."""
        if not sent:
            return self.head(endpoint_id)
        queue = self._queues.get(endpoint_id)
        if queue is None:
            return None
        now = self.clock()
        for priority in queue.priorities():
            for entry in queue.by_priority[priority]:
                if entry.sequence not in sent and entry.expires_at > now:
                    return entry
        return None

    def remove(self, entry: Entry) -> None:
        """Checkpoint: the endpoint acknowledged (or edgeHub would drop) this entry."""
        queue = self._queues.get(entry.endpoint_id)
        if queue is None:
            return
        items = queue.by_priority.get(entry.priority)
        if items and items[0] is entry:
            items.popleft()
        elif items:
            with contextlib.suppress(ValueError):
                items.remove(entry)

    async def wait(self, endpoint_id: str, timeout: float | None = None) -> None:
        """Until something is added for ``endpoint_id`` (or ``timeout`` passes)."""
        queue = self._queue(endpoint_id)
        if queue.waiter is None:
            queue.waiter = asyncio.Event()
        queue.waiter.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await queue.waiter.wait()

    def depth(self, endpoint_id: str) -> dict[int, int]:
        queue = self._queues.get(endpoint_id)
        if queue is None:
            return {}
        return {p: len(q) for p, q in sorted(queue.by_priority.items()) if q}

    def endpoints(self) -> list[str]:
        return [e for e, q in self._queues.items() if q.priorities()]

    def purge_expired(self) -> int:
        """Drop expired entries nobody is reading (counted as ``ttl_expiry``)."""
        now = self.clock()
        purged = 0
        for endpoint_id, queue in self._queues.items():
            for items in queue.by_priority.values():
                keep = deque(e for e in items if e.expires_at > now)
                dropped = len(items) - len(keep)
                if dropped:
                    items.clear()
                    items.extend(keep)
                    self.expired[endpoint_id] = self.expired.get(endpoint_id, 0) + dropped
                    purged += dropped
        return purged

    def close(self) -> None:
        """Nothing to flush in memory."""
