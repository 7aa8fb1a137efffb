"""What a client's PUBLISH topic or SUBSCRIBE filter means, decided once per packet; with the broker mode
on, this is the one place that says whether a topic is IoT Hub's or a user topic."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from itertools import pairwise

from ...broker import is_user_filter
from ...iothub import classify_subscription


class TopicKind(enum.Enum):
    TELEMETRY = "telemetry"
    TWIN = "twin"
    METHOD_RESPONSE = "method response"
    USER = "user topic"


TWIN_PREFIX = "$iothub/twin/"
METHOD_RESPONSE_PREFIX = "$iothub/methods/res/"


def looks_like_telemetry(topic: str) -> bool:
    """Telemetry topics go through routes also in the broker mode (malformed ones are dropped there)."""
    return topic.startswith("devices/") and "/messages/events" in topic


def publish_kind(topic: str, broker_mode: bool) -> TopicKind:
    """edgeHub's dispatch: ``$iothub/twin/…`` is a twin request, ``$iothub/methods/res/…`` a method
    response, anything else telemetry; with the broker mode, topics that are neither IoT Hub's nor
    telemetry are user topics."""
    if topic.startswith(TWIN_PREFIX):
        return TopicKind.TWIN
    if topic.startswith(METHOD_RESPONSE_PREFIX):
        return TopicKind.METHOD_RESPONSE
    if broker_mode and not topic.startswith("$iothub/") and not looks_like_telemetry(topic):
        return TopicKind.USER
    return TopicKind.TELEMETRY


def is_user_subscription(topic_filter: str, broker_mode: bool) -> bool:
    """Whether a SUBSCRIBE filter goes to the broker mode's user topics rather than IoT Hub's."""
    return broker_mode and is_user_filter(topic_filter)


def is_telemetry_filter(topic_filter: str) -> bool:
    """A filter on telemetry topics (``devices/{d}[/modules/{m}]/messages/events…``), as a client would
    subscribe to see another one's messages."""
    levels = topic_filter.split("/")
    return levels[0] == "devices" and any(
        a in ("messages", "+") and b == "events" for a, b in pairwise(levels)
    )


def features(filters: Iterable[str]) -> set[str]:
    """The edgeHub features a client's subscriptions turn on."""
    return {classify_subscription(f) for f in filters}
