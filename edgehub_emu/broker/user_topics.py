"""Publish/subscribe on user-defined topics: the MQTT broker of IoT Edge 1.2, without its IoT Hub parts.

Subscriptions of every session live in one topic trie. A message goes once to each matching session, at
the highest QoS any of its matching filters granted (capped by the publisher's QoS). A session that is
away but persistent (clean session 0) gets its QoS 1 and 2 messages queued until it returns. Retained
messages (the last one per topic; an empty payload clears it) go to new matching subscriptions with the
retain flag. As the MQTT standard says, filters that start with a wildcard do not match ``$`` topics.

Authorization is not decided here: the protocol head checks the policy before calling in.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from ..mqtt.session import NotConnected, Session
from ..mqtt.topic_trie import TopicTrie, filter_matches

log = logging.getLogger("edgehub_emu.broker")

Listener = Callable[[str, bytes, int, bool], None]
"""Told of every publish that did not come in over a bridge (``topic, payload, qos, retain``)."""

Stored = Callable[[BaseException | None], None]
Forward = Callable[[str, bytes, int, bool, Stored], bool]
"""Takes a publish out over a bridge; like a broker's publish: True when done, else ``stored`` says
when (the bridge queue's commit), and the publisher's acknowledgement waits for it."""


@dataclass(frozen=True, slots=True)
class Retained:
    topic: str
    payload: bytes
    qos: int


def _dollar_safe(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 §4.7.2: ``+/…`` and ``#`` do not match topics that start with ``$``."""
    return not (topic.startswith("$") and topic_filter[:1] in ("+", "#"))


MAX_QUEUED_MESSAGES = 1000
"""User-topic messages (QoS 1 and 2) kept for a subscriber that lags, as mosquitto's default."""


class UserTopics:
    def __init__(self, sessions: Mapping[str, Session], max_queued: int = MAX_QUEUED_MESSAGES) -> None:
        self.sessions = sessions
        self.max_queued = max_queued
        self._trie: TopicTrie[int] = TopicTrie()
        self._filters: dict[str, dict[str, int]] = {}
        self.retained: dict[str, Retained] = {}
        self.listeners: list[Listener] = []
        self.forward: Forward | None = None
        self.counters: Counter[str] = Counter()

    # --- subscriptions ----------------------------------------------------------------------------

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> None:
        filters = self._filters.setdefault(client_id, {})
        if topic_filter in filters:
            self._trie.remove(topic_filter, (client_id, topic_filter))
        filters[topic_filter] = qos
        self._trie.add(topic_filter, (client_id, topic_filter), qos)

    def send_retained(self, session: Session, topic_filter: str, qos: int) -> int:
        """Send the retained messages a new subscription matches; returns how many."""
        sent = 0
        for retained in list(self.retained.values()):
            if filter_matches(topic_filter, retained.topic) and _dollar_safe(topic_filter, retained.topic):
                self._send(session, retained.topic, retained.payload, min(qos, retained.qos), retain=True)
                sent += 1
        return sent

    def unsubscribe(self, client_id: str, topic_filter: str) -> None:
        filters = self._filters.get(client_id)
        if filters is not None and filters.pop(topic_filter, None) is not None:
            self._trie.remove(topic_filter, (client_id, topic_filter))

    def forget(self, client_id: str) -> None:
        """The client's session ended (clean session): drop its subscriptions."""
        for topic_filter in self._filters.pop(client_id, {}):
            self._trie.remove(topic_filter, (client_id, topic_filter))

    def subscription_count(self) -> int:
        """User-topic filters held for every session (connected, or persistent and away)."""
        return sum(len(filters) for filters in self._filters.values())

    def filters(self, client_id: str) -> dict[str, int]:
        return dict(self._filters.get(client_id, {}))

    # --- publishing -------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        from_bridge: bool = False,
        stored: Stored | None = None,
    ) -> bool:
        """Deliver to every matching session now (or queue for persistent ones that are away). True when
        done; False when a bridge takes it out and ``stored`` will say when it is queued for that."""
        self.counters["received"] += 1
        if retain:
            if payload:
                self.retained[topic] = Retained(topic, payload, qos)
            else:
                self.retained.pop(topic, None)
        best: dict[str, int] = {}
        for key, granted in self._trie.match(topic):
            client_id, topic_filter = cast(tuple[str, str], key)
            if _dollar_safe(topic_filter, topic) and granted >= best.get(client_id, -1):
                best[client_id] = granted
        for client_id, granted in best.items():
            session = self.sessions.get(client_id)
            if session is None:
                continue
            effective = min(qos, granted)
            if session.connected and session.lagging():  # a subscriber that does not keep up
                if effective == 0 or session.wait_to_send(topic, payload, effective, self.max_queued):
                    self.counters["dropped_slow_subscriber"] += 1
            elif session.connected:
                self._send(session, topic, payload, effective, retain=False)
            elif not session.clean and effective > 0:
                if session.queue_offline(topic, payload, effective):
                    self.counters["dropped_offline_limit"] += 1
                self.counters["queued_offline"] += 1
        if from_bridge:
            return True
        for listener in self.listeners:
            try:
                listener(topic, payload, qos, retain)
            except Exception:
                log.exception("a listener of user topics failed on %s", topic)
        if self.forward is None or stored is None:
            return True
        return self.forward(topic, payload, qos, retain, stored)

    def _send(self, session: Session, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        try:
            session.publish(topic, payload, qos, retain)
        except NotConnected:
            return
        self.counters["delivered"] += 1
