"""What every endpoint queue store offers, and the lane bookkeeping both stores share.

A *lane* is one FIFO queue: one endpoint at one priority (edgeHub's ``{endpoint}_Pri{p}``). Delivery
takes entries from an endpoint's lanes, lowest priority number first; a taken entry is *leased* until
it is acknowledged (``ack``: it leaves the queue) or given back (``release``: delivered again, in its
old place). Expired entries are skipped when taken and counted. Nothing here blocks or sleeps: a
store says when an endpoint has new entries through its ``ready`` callback.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..routing import Message, RoutedEndpoint

Stored = Callable[[BaseException | None], None]
"""Called once a message is committed (with None) or could not be stored (with the error)."""


class StoreError(Exception):
    """The store cannot take the message (disk full, an I/O error): the publisher is disconnected
    without an acknowledgement, as edgeHub does."""


@dataclass(slots=True, eq=False)
class Entry:
    """One message queued for one endpoint. ``sequence`` is the message's place in the store (shared by
    its copies for other endpoints); within a lane it only grows."""

    sequence: int
    endpoint_id: str
    priority: int
    message: Message
    expires_at: float
    route: str
    lane: Lane | None = field(default=None, repr=False)  # the store's own bookkeeping


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One lane as ``status`` shows it."""

    endpoint_id: str
    priority: int
    messages: int
    next_expiry: float | None


class Store(Protocol):
    """Endpoint queues. Create one inside the running event loop; ``close()`` at the end."""

    ready: Callable[[str], None]
    """Told the id of an endpoint that has new entries to take (once per commit, per endpoint)."""

    def add(self, message: Message, copies: Sequence[RoutedEndpoint], stored: Stored) -> bool:
        """Queue ``message`` for each copy. True: stored already (``stored`` is not called). False:
        ``stored`` is called once the commit is done or failed."""
        ...

    def take(self, endpoint_id: str) -> Entry | None:
        """The next entry to deliver (lowest priority number first, FIFO within), leased."""
        ...

    def ack(self, entry: Entry) -> None:
        """The entry is done (delivered, or dropped as edgeHub drops it): it leaves the queue."""
        ...

    def release(self, entries: Iterable[Entry]) -> None:
        """Leased entries to deliver again, in their old places (``ready`` is not called: the caller
        delivers them)."""
        ...

    def peek(self, endpoint_id: str, limit: int = 100) -> list[Entry]:
        """What waits for an endpoint (in flight first), without taking it."""
        ...

    def depth(self, endpoint_id: str) -> dict[int, int]: ...

    def endpoints(self) -> list[str]: ...

    def queues(self) -> list[QueueInfo]: ...

    def expired_counts(self) -> dict[str, int]: ...

    def purge_expired(self) -> int: ...

    def close(self) -> None: ...


class Lane:
    """One endpoint at one priority: entries in memory in order (``ready``), leased ones (in take order,
    which is sequence order), and the count of entries not yet done, wherever they are."""

    __slots__ = ("count", "endpoint_id", "key", "last_sequence", "leased", "priority", "ready", "spill")

    def __init__(self, endpoint_id: str, priority: int, key: int = 0) -> None:
        self.endpoint_id = endpoint_id
        self.priority = priority
        self.key = key  # the durable store's number for this lane
        self.ready: deque[Entry] = deque()
        self.leased: deque[Entry] = deque()
        self.count = 0
        self.last_sequence = 0
        self.spill: tuple[int, int] | None = (
            None  # durable store: (segment, index) of the first entry not in memory
        )

    def unlease(self, entry: Entry) -> bool:
        leased = self.leased
        if leased and leased[0] is entry:
            leased.popleft()
            return True
        try:
            leased.remove(entry)
        except ValueError:
            return False
        return True

    def put_back(self, entries: list[Entry]) -> None:
        """Released entries go before everything not yet taken, in sequence order."""
        entries.sort(key=lambda e: e.sequence, reverse=True)
        self.ready.extendleft(entries)


class Lanes:
    """Lanes by endpoint, in priority order, and the expired counts: what both stores keep in memory."""

    def __init__(self) -> None:
        self.by_endpoint: dict[str, list[Lane]] = {}  # in priority order
        self.expired: dict[str, int] = {}
        self.by_key: dict[tuple[str, int], Lane] = {}  # by (endpoint, priority)

    def lane(self, endpoint_id: str, priority: int, key: int = 0) -> Lane:
        lane = self.by_key.get((endpoint_id, priority))
        if lane is None:
            lane = self.by_key[(endpoint_id, priority)] = Lane(endpoint_id, priority, key)
            lanes = self.by_endpoint.setdefault(endpoint_id, [])
            lanes.append(lane)
            lanes.sort(key=lambda item: item.priority)
        return lane

    def find(self, endpoint_id: str, priority: int) -> Lane | None:
        return self.by_key.get((endpoint_id, priority))

    def count_expired(self, endpoint_id: str, n: int = 1) -> None:
        self.expired[endpoint_id] = self.expired.get(endpoint_id, 0) + n

    def depth(self, endpoint_id: str) -> dict[int, int]:
        return {lane.priority: lane.count for lane in self.by_endpoint.get(endpoint_id, ()) if lane.count}

    def endpoints(self) -> list[str]:
        return [e for e, lanes in self.by_endpoint.items() if any(lane.count for lane in lanes)]

    def all(self) -> Iterable[Lane]:
        for lanes in self.by_endpoint.values():
            yield from lanes


def earliest(entries: Iterable[Entry], now: float) -> float | None:
    """The first expiry still ahead among ``entries``."""
    ahead = [e.expires_at for e in entries if e.expires_at > now]
    return min(ahead) if ahead else None
