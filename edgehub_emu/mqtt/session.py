"""MQTT sessions: subscriptions, outbound QoS 1 messages in flight, and persistence of subscriptions.

A session outlives its connections when the client connects with clean session 0: subscriptions
survive disconnects (and hub restarts, through ``SessionStore``), and QoS 1 and 2 messages that were
sent but not acknowledged are sent again, with DUP set, when the client returns (a QoS 2 message whose
PUBREC came gets its PUBREL again instead). Clean session 1 discards all of it. Routed messages for an
absent module wait in endpoint queues, as in edgeHub; only the broker mode's user-topic messages wait
in the session (``queue_offline``), as in any MQTT broker.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from ..data_files import JsonFile
from . import codec
from .errors import NotConnected
from .topic_trie import TopicTrie

MAX_OFFLINE_MESSAGES: Final = 10_000
_UNKNOWN: Any = object()  # not yet in a cache (None is an answer: no subscription matches)


class Connection(Protocol):
    """What a session needs from the connection currently attached to it."""

    def send_publish(
        self, topic: str, payload: bytes, qos: int, packet_id: int | None, dup: bool, retain: bool = False
    ) -> None: ...

    def send_packet(self, packet: codec.Packet) -> None: ...

    def close(self, reason: str) -> None: ...

    def backed_up(self) -> bool: ...

    def when_drained(self, callback: Callable[[], None]) -> None: ...


Settle = Callable[[Any, bool], None]
"""``settle(token, delivered)``: the client acknowledged (True) or the session was discarded first."""


class InFlight:
    """A QoS 1 or 2 message sent and not yet acknowledged (a plain class: one is made per delivery)."""

    __slots__ = ("payload", "qos", "released", "retain", "sent", "settle", "token", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        token: Any = None,
        settle: Settle | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.token = token
        self.settle = settle
        self.sent = True
        self.released = False  # QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP


@dataclass
class Subscription:
    qos: int
    created: float = field(default_factory=time.time)


class Subscriptions(dict[str, Subscription]):
    """Filter -> subscription, with a topic trie kept in step for matching, and the granted QoS of
    topics that differ only in their last level remembered per prefix while no filter looks at the text
    of that level (a delivery's topic ends in its property bag, a level unique to each message)."""

    def __init__(self) -> None:
        super().__init__()
        self.trie: TopicTrie[Subscription] = TopicTrie()
        self._by_prefix: dict[tuple[str, bool], int | None] = {}
        self._literal_levels: set[int] | None = None

    def __setitem__(self, topic_filter: str, subscription: Subscription) -> None:
        super().__setitem__(topic_filter, subscription)
        self.trie.add(topic_filter, topic_filter, subscription)
        self._changed()

    def __delitem__(self, topic_filter: str) -> None:
        super().__delitem__(topic_filter)
        self.trie.remove(topic_filter, topic_filter)
        self._changed()

    def _changed(self) -> None:
        self._by_prefix.clear()
        self._literal_levels = None

    def granted_qos(self, topic: str) -> int | None:
        """The highest QoS granted by a filter that matches ``topic``; None if none matches."""
        best: int | None = None
        for _, sub in self.trie.match(topic):
            if best is None or sub.qos > best:
                best = sub.qos
        return best

    def granted_qos_at(self, prefix: str, last: str) -> int | None:
        """``granted_qos(prefix + "/" + last)`` (``prefix`` alone when ``last`` is empty), where ``last``
        is a single level."""
        key = (prefix, bool(last))
        found = self._by_prefix.get(key, _UNKNOWN)  # (every delivery comes here: the answer first)
        if found is not _UNKNOWN:
            return found
        topic = f"{prefix}/{last}" if last else prefix
        literal = self._literal_levels
        if literal is None:
            literal = self._literal_levels = {
                i for f in self for i, level in enumerate(f.split("/")) if level not in ("+", "#")
            }
        if prefix.count("/") + 1 in literal:  # a filter names that level: the answer depends on it
            return self.granted_qos(topic)
        found = self._by_prefix[key] = self.granted_qos(topic)
        return found

    def pop(self, topic_filter: str, default: Any = None) -> Any:
        if topic_filter in self:
            value = self[topic_filter]
            del self[topic_filter]
            return value
        return default

    def clear(self) -> None:
        super().clear()
        self.trie = TopicTrie()
        self._changed()


class Session:
    """One client id's session. ``identity`` is set by the broker at CONNECT (who authenticated)."""

    def __init__(self, client_id: str, clean: bool) -> None:
        self.client_id = client_id
        self.clean = clean
        self.subscriptions = Subscriptions()
        self.inflight: OrderedDict[int, InFlight] = OrderedDict()
        self.connection: Connection | None = None
        self.identity: Any = None
        self.username: Any = None
        self.attachment: Any = None  # the broker's state for an authenticated client
        self.awaiting_release: set[int] = set()  # inbound QoS 2: PUBREC sent, waiting for PUBREL
        self.offline: deque[tuple[str, bytes, int]] = deque()
        self.waiting: deque[tuple[str, bytes, int]] = deque()  # user topics, for a client that lags
        self.left_at: float | None = None  # when its client went away (monotonic), for expiry
        self._next_id = 0

    @property
    def connected(self) -> bool:
        return self.connection is not None

    def granted_qos(self, topic: str) -> int | None:
        """The highest QoS granted by a filter that matches ``topic``; None if none matches."""
        return self.subscriptions.granted_qos(topic)

    def _allocate(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.inflight:
                return self._next_id
        raise RuntimeError("no free packet identifier: 65535 messages in flight")

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        token: Any = None,
        settle: Settle | None = None,
    ) -> None:
        """Send to the client now. A QoS 1 or 2 message stays in flight until the client acknowledges
        it (PUBACK, or PUBCOMP for QoS 2): then ``settle(token, True)``; if the session is discarded
        first, ``settle(token, False)``. Raises ``NotConnected`` if no connection is attached."""
        connection = self.connection
        if connection is None:
            raise NotConnected(self.client_id)
        if qos == 0:
            connection.send_publish(topic, payload, 0, None, False, retain)
            return
        packet_id = self._next_id % 65535 + 1
        if packet_id in self.inflight:
            packet_id = self._allocate()
        self._next_id = packet_id
        self.inflight[packet_id] = InFlight(topic, payload, qos, retain, token, settle)
        connection.send_publish(topic, payload, qos, packet_id, False, retain)

    def acknowledge(self, packet_id: int) -> None:
        """PUBACK (QoS 1) or PUBCOMP (QoS 2): the message is delivered."""
        entry = self.inflight.pop(packet_id, None)
        if entry is not None and entry.settle is not None:
            entry.settle(entry.token, True)

    def abandon(self, tokens: Collection[Any]) -> None:
        """Forget messages in flight that their sender gave up on (an acknowledgement that comes later
        is ignored)."""
        for packet_id in [p for p, e in self.inflight.items() if e.token is not None and e.token in tokens]:
            del self.inflight[packet_id]

    def received(self, packet_id: int) -> None:
        """PUBREC of an outbound QoS 2 message: answer PUBREL (again, if the client asks again)."""
        entry = self.inflight.get(packet_id)
        if entry is not None:
            entry.released = True
        if self.connection is not None:
            self.connection.send_packet(codec.Pubrel(packet_id))

    def resend_inflight(self) -> None:
        """After a reconnect with clean session 0: send what was not acknowledged again, DUP set (or the
        PUBREL of a QoS 2 message the client has received)."""
        connection = self.connection
        if connection is None:
            return
        for packet_id, entry in self.inflight.items():
            if entry.released:
                connection.send_packet(codec.Pubrel(packet_id))
            else:
                connection.send_publish(
                    entry.topic, entry.payload, entry.qos, packet_id, entry.sent, entry.retain
                )
            entry.sent = True

    def lagging(self) -> bool:
        """The client reads slower than it is sent to: user-topic messages wait (or QoS 0 ones drop)."""
        return bool(self.waiting) or (self.connection is not None and self.connection.backed_up())

    def wait_to_send(self, topic: str, payload: bytes, qos: int, limit: int) -> bool:
        """Keep a user-topic message until the lagging client catches up; True if the oldest waiting one
        had to make room (at most ``limit`` wait, as mosquitto's ``max_queued_messages``)."""
        dropped = len(self.waiting) >= limit
        if dropped:
            self.waiting.popleft()
        if not self.waiting and self.connection is not None:
            self.connection.when_drained(self._send_waiting)
        self.waiting.append((topic, payload, qos))
        return dropped

    def _send_waiting(self) -> None:
        connection = self.connection
        while self.waiting and connection is not None and not connection.backed_up():
            topic, payload, qos = self.waiting.popleft()
            self.publish(topic, payload, qos)
        if self.waiting and connection is not None:
            connection.when_drained(self._send_waiting)

    def queue_offline(self, topic: str, payload: bytes, qos: int) -> bool:
        """Keep a user-topic message for a persistent session that is away; True if the oldest had to
        make room (at most ``MAX_OFFLINE_MESSAGES`` wait)."""
        dropped = len(self.offline) >= MAX_OFFLINE_MESSAGES
        if dropped:
            self.offline.popleft()
        self.offline.append((topic, payload, qos))
        return dropped

    def flush_offline(self) -> None:
        """Send what waited while the client was away, in order: first what was waiting for it to
        catch up when it left (its old connection's drain watch went with that connection)."""
        self.offline.extendleft(reversed(self.waiting))
        self.waiting.clear()
        while self.offline and self.connection is not None:
            topic, payload, qos = self.offline.popleft()
            self.publish(topic, payload, qos)

    def discard(self, reason: str) -> None:
        """Clean session: forget subscriptions and what is in flight (its senders deliver it again)."""
        self.subscriptions.clear()
        self.offline.clear()
        self.awaiting_release.clear()
        inflight = list(self.inflight.values())
        self.inflight.clear()
        for entry in inflight:
            if entry.settle is not None:
                entry.settle(entry.token, False)


class SessionStore:
    """Subscriptions of persistent sessions in a JSON file, so they survive a hub restart."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file = JsonFile(path, "the persistent sessions' subscriptions") if path is not None else None
        self._data: dict[str, dict[str, int]] = {}
        self._started = time.monotonic()
        self._seen: dict[str, float] = {}
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                self._data = {k: {f: int(q) for f, q in v.items()} for k, v in raw.items()}
            except (OSError, ValueError, AttributeError):
                self._data = {}

    def load(self, client_id: str) -> dict[str, int] | None:
        return self._data.get(client_id)

    def stale(self, expiry: float, now: float, keep: set[str]) -> list[str]:
        """Stored sessions (outside ``keep``) not seen for ``expiry`` seconds; one stored before this
        hub started counts as seen at its start."""
        return [
            client_id
            for client_id in self._data
            if client_id not in keep and now - self._seen.setdefault(client_id, self._started) > expiry
        ]

    def save(self, session: Session) -> None:
        if session.clean:
            return
        self._data[session.client_id] = {f: s.qos for f, s in session.subscriptions.items()}
        self._seen[session.client_id] = time.monotonic()
        self._flush()

    def delete(self, client_id: str) -> None:
        if self._data.pop(client_id, None) is not None:
            self._flush()

    def _flush(self) -> None:
        if self._file is not None:
            self._file.write(self._data)
