"""Endpoint queues in memory (``--store memory``, the pytest fixture): fast, and gone when the process
ends. The same behaviour as the durable log, tested by the same suite: lowest priority number first,
FIFO within, time-to-live from enqueue, expired entries skipped and counted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from itertools import count

from ..routing import Message, RoutedEndpoint
from .base import Entry, Lanes, QueueInfo, Stored, earliest


def _nobody(endpoint_id: str) -> None:
    """Until the hub wires delivery in, nobody listens."""


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.ready: Callable[[str], None] = _nobody
        self._lanes = Lanes()
        self._sequence = count(1)

    def add(self, message: Message, copies: Sequence[RoutedEndpoint], stored: Stored) -> bool:
        now = self.clock()
        sequence = next(self._sequence)
        lanes = self._lanes
        for copy in copies:
            endpoint_id = copy.endpoint.id
            lane = lanes.lane(endpoint_id, copy.priority)
            lane.ready.append(
                Entry(
                    sequence,
                    endpoint_id,
                    copy.priority,
                    message,
                    now + copy.time_to_live_secs,
                    copy.route,
                    lane,
                )
            )
            lane.count += 1
            lane.last_sequence = sequence
        for copy in copies:
            self.ready(copy.endpoint.id)
        return True

    def take(self, endpoint_id: str) -> Entry | None:
        lanes = self._lanes.by_endpoint.get(endpoint_id)
        if not lanes:
            return None
        now = self.clock()
        for lane in lanes:
            ready = lane.ready
            while ready:
                entry = ready.popleft()
                if entry.expires_at <= now:
                    lane.count -= 1
                    self._lanes.count_expired(endpoint_id)
                    continue
                lane.leased.append(entry)
                return entry
        return None

    def ack(self, entry: Entry) -> None:
        lane = entry.lane
        if lane is not None and lane.unlease(entry):
            lane.count -= 1

    def release(self, entries: Iterable[Entry]) -> None:
        by_lane: dict[tuple[str, int], list[Entry]] = {}
        for entry in entries:
            by_lane.setdefault((entry.endpoint_id, entry.priority), []).append(entry)
        for (endpoint_id, priority), released in by_lane.items():  # the caller delivers them again
            lane = self._lanes.find(endpoint_id, priority)
            if lane is None:
                continue
            lane.put_back([e for e in released if lane.unlease(e)])

    def peek(self, endpoint_id: str, limit: int = 100) -> list[Entry]:
        out: list[Entry] = []
        for lane in self._lanes.by_endpoint.get(endpoint_id, ()):
            out.extend(lane.leased)
            out.extend(lane.ready)
        return out[:limit]

    def depth(self, endpoint_id: str) -> dict[int, int]:
        return self._lanes.depth(endpoint_id)

    def endpoints(self) -> list[str]:
        return self._lanes.endpoints()

    def queues(self) -> list[QueueInfo]:
        now = self.clock()
        return [
            QueueInfo(lane.endpoint_id, lane.priority, lane.count, earliest([*lane.leased, *lane.ready], now))
            for lane in self._lanes.all()
            if lane.count
        ]

    def expired_counts(self) -> dict[str, int]:
        return dict(self._lanes.expired)

    def purge_expired(self) -> int:
        """Drop expired entries nobody is reading (a module that never connects)."""
        now = self.clock()
        purged = 0
        for lane in self._lanes.all():
            keep = [e for e in lane.ready if e.expires_at > now]
            dropped = len(lane.ready) - len(keep)
            if dropped:
                lane.ready.clear()
                lane.ready.extend(keep)
                lane.count -= dropped
                self._lanes.count_expired(lane.endpoint_id, dropped)
                purged += dropped
        return purged

    def close(self) -> None:
        """Nothing to flush in memory."""
