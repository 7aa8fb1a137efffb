"""The broker mode: user-defined topics next to the IoT Hub ones, under an authorization policy.

The protocol head hands over what is not IoT Hub's: filters that turn on no edgeHub feature and topics
that are neither telemetry nor ``$iothub/…``. Here they are checked against the policy (a denied
subscription gets SUBACK 0x80, a denied publish is acknowledged and dropped, and both are counted) and
then published or subscribed on ``UserTopics``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ..iothub import UNKNOWN, classify_subscription
from ..mqtt import codec
from ..mqtt.codec import Publish
from ..mqtt.session import Session
from ..mqtt.topic_trie import valid_filter
from .config import BrokerConfig
from .policy import CONNECT, PUBLISH, SUBSCRIBE, AuthorizationPolicy, Client, Decision
from .user_topics import MAX_QUEUED_MESSAGES, Stored, UserTopics

log = logging.getLogger("edgehub_emu.broker")


class BrokerMode:
    def __init__(
        self,
        config: BrokerConfig,
        sessions: Mapping[str, Session],
        this_device_id: str,
        hub_hostname: str,
        max_queued: int = MAX_QUEUED_MESSAGES,
    ) -> None:
        self.policy = AuthorizationPolicy(config.authorizations, this_device_id, hub_hostname)
        self.config = config
        self.topics = UserTopics(sessions, max_queued)
        self.counters: Counter[str] = Counter()

    def reconfigure(self, config: BrokerConfig) -> None:
        """A new manifest: new rules apply to what clients do from now on (subscriptions stay)."""
        self.config = config
        self.policy = AuthorizationPolicy(
            config.authorizations, self.policy.this_device_id, self.policy.hub_hostname
        )

    def status(self) -> dict[str, Any]:
        """User-topic state for ``status``: the policy's size, retained topics, decisions counted."""
        return {
            "authorizations": len(self.config.authorizations),
            "bridges": len(self.config.bridges),
            "retained": sorted(self.topics.retained),
            "sessions": len(self.topics.sessions),  # connected, and persistent ones away
            "subscriptions": self.topics.subscription_count(),
            "counters": {**self.counters, **self.topics.counters},
        }

    def authorize_connect(self, client: Client) -> Decision:
        decision = self.policy.decide(client, CONNECT)
        if not decision.allowed:
            self.counters["refused_connect"] += 1
        return decision

    def subscribe(self, client: Client, topic_filter: str, qos: int) -> int:
        """The SUBACK return code for one user-topic filter (registered when granted)."""
        if not valid_filter(topic_filter):
            return codec.SUBACK_FAILURE
        decision = self.policy.decide(client, SUBSCRIBE, topic_filter)
        if not decision.allowed:
            self.counters["denied_subscribe"] += 1
            log.warning(
                "refused %s's subscription to %r: %s", client.client_id, topic_filter, decision.reason
            )
            return codec.SUBACK_FAILURE
        granted = min(qos, 2)
        self.topics.subscribe(client.client_id, topic_filter, granted)
        return granted

    def subscribed(self, session: Session, granted: list[tuple[str, int]]) -> None:
        user_filters = self.topics.filters(session.client_id)
        for topic_filter, qos in granted:
            if topic_filter in user_filters:
                self.topics.send_retained(session, topic_filter, qos)

    def unsubscribe(self, client_id: str, filters: list[str]) -> None:
        for topic_filter in filters:
            self.topics.unsubscribe(client_id, topic_filter)

    def publish(self, client: Client, packet: Publish, stored: Stored) -> bool:
        """Publish on a user topic if the policy allows it (else it is dropped and counted). True when
        done; False when the PUBACK waits for ``stored`` (a bridge queue's commit)."""
        decision = self.policy.decide(client, PUBLISH, packet.topic)
        if not decision.allowed:
            self.counters["denied_publish"] += 1
            log.warning("dropped %s's message on %r: %s", client.client_id, packet.topic, decision.reason)
            return True
        return self.topics.publish(packet.topic, packet.payload, packet.qos, packet.retain, stored=stored)

    def connected(self, session: Session, present: bool) -> None:
        """A new session starts without user subscriptions; a resumed one keeps them (after a hub
        restart they come back from the session store)."""
        if not present:
            self.topics.forget(session.client_id)
            return
        known = self.topics.filters(session.client_id)
        for topic_filter, subscription in session.subscriptions.items():
            if topic_filter not in known and is_user_filter(topic_filter):
                self.topics.subscribe(session.client_id, topic_filter, subscription.qos)

    def disconnected(self, session: Session) -> None:
        if session.clean:
            self.topics.forget(session.client_id)


def is_user_filter(topic_filter: str) -> bool:
    """Whether a SUBSCRIBE filter is a user topic rather than one of IoT Hub's."""
    return not topic_filter.startswith("$iothub/") and classify_subscription(topic_filter) == UNKNOWN
