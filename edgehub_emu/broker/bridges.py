"""``mqttBroker.bridges``: which topics travel between the local broker and a remote one, sans-IO.

Each bridge names an ``endpoint`` (``$upstream``: the configured upstream broker) and ``settings``; a
setting has a ``direction`` (``in``: remote to local, ``out``: local to remote, ``both``), a ``topic``
filter, and prefixes: ``inPrefix`` on the local side, ``outPrefix`` on the remote side. A local topic
``{inPrefix}{t}`` travels as ``{outPrefix}{t}`` when ``t`` matches ``topic``, and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..mqtt.topic_trie import filter_matches, valid_filter
from .policy import PolicyError

DIRECTIONS = ("in", "out", "both")
UPSTREAM = "$upstream"


@dataclass(frozen=True, slots=True)
class BridgeSetting:
    direction: str
    topic: str
    in_prefix: str = ""
    out_prefix: str = ""

    @property
    def outbound(self) -> bool:
        return self.direction in ("out", "both")

    @property
    def inbound(self) -> bool:
        return self.direction in ("in", "both")

    @property
    def local_filter(self) -> str:
        return self.in_prefix + self.topic

    @property
    def remote_filter(self) -> str:
        return self.out_prefix + self.topic

    def to_remote(self, local_topic: str) -> str | None:
        """The remote topic for a local one, or None when this setting does not carry it out."""
        if not self.outbound or not local_topic.startswith(self.in_prefix):
            return None
        rest = local_topic[len(self.in_prefix) :]
        return self.out_prefix + rest if filter_matches(self.topic, rest) else None

    def to_local(self, remote_topic: str) -> str | None:
        """The local topic for a remote one, or None when this setting does not bring it in."""
        if not self.inbound or not remote_topic.startswith(self.out_prefix):
            return None
        rest = remote_topic[len(self.out_prefix) :]
        return self.in_prefix + rest if filter_matches(self.topic, rest) else None


@dataclass(frozen=True, slots=True)
class Bridge:
    endpoint: str
    settings: tuple[BridgeSetting, ...]

    def to_remote(self, local_topic: str) -> str | None:
        for setting in self.settings:
            remote = setting.to_remote(local_topic)
            if remote is not None:
                return remote
        return None

    def to_local(self, remote_topic: str) -> str | None:
        for setting in self.settings:
            local = setting.to_local(remote_topic)
            if local is not None:
                return local
        return None

    @property
    def remote_subscriptions(self) -> list[str]:
        return list(dict.fromkeys(s.remote_filter for s in self.settings if s.inbound))


def _prefix(value: Any, path: str, problems: list[tuple[str, str]]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append((path, "must be a string"))
        return ""
    if "+" in value or "#" in value:
        problems.append((path, f"{value!r}: a prefix cannot hold the wildcards '+' or '#'"))
    return value


def parse_bridges(value: Any, path: str = "bridges") -> list[Bridge]:
    """Bridges from the manifest's ``mqttBroker.bridges``; raises PolicyError with every problem."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError([(path, "must be a list of bridges")])
    problems: list[tuple[str, str]] = []
    bridges = []
    for b, item in enumerate(value):
        where = f"{path}[{b}]"
        if not isinstance(item, dict):
            problems.append((where, "a bridge is an object with endpoint and settings"))
            continue
        endpoint = item.get("endpoint")
        if endpoint != UPSTREAM:
            problems.append(
                (f"{where}.endpoint", f'{endpoint!r}: only "$upstream" (the --upstream broker) is supported')
            )
        raw_settings = item.get("settings")
        if not isinstance(raw_settings, list) or not raw_settings:
            problems.append((f"{where}.settings", "must be a non-empty list of settings"))
            continue
        settings = []
        for s, raw in enumerate(raw_settings):
            at = f"{where}.settings[{s}]"
            if not isinstance(raw, dict):
                problems.append((at, "a setting is an object with direction and topic"))
                continue
            direction = raw.get("direction")
            if direction not in DIRECTIONS:
                problems.append((f"{at}.direction", f"{direction!r}: use one of {', '.join(DIRECTIONS)}"))
            topic = raw.get("topic")
            if not isinstance(topic, str) or not valid_filter(topic):
                problems.append((f"{at}.topic", f"{topic!r} is not a valid topic filter"))
            in_prefix = _prefix(raw.get("inPrefix"), f"{at}.inPrefix", problems)
            out_prefix = _prefix(raw.get("outPrefix"), f"{at}.outPrefix", problems)
            settings.append(BridgeSetting(str(direction), str(topic), in_prefix, out_prefix))
        bridges.append(Bridge(str(endpoint), tuple(settings)))
    if problems:
        raise PolicyError(problems)
    return bridges
