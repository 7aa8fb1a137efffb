"""The manifest's ``mqttBroker`` object (``$edgeHub`` schema 1.2): authorizations and bridges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .bridges import Bridge, parse_bridges
from .policy import PolicyError, Statement, parse_authorizations


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    authorizations: tuple[Statement, ...]
    bridges: tuple[Bridge, ...]


def parse_broker_config(value: Any) -> BrokerConfig:
    """Parse ``mqttBroker``; raises PolicyError listing every problem (paths relative to it)."""
    if not isinstance(value, dict):
        raise PolicyError([("", "must be an object with authorizations and/or bridges")])
    problems: list[tuple[str, str]] = []
    unknown = set(value) - {"authorizations", "bridges"}
    if unknown:
        problems.append(("", f"unknown field(s) {', '.join(sorted(unknown))} (use authorizations, bridges)"))
    statements: list[Statement] = []
    bridges: list[Bridge] = []
    try:
        statements = parse_authorizations(value.get("authorizations"))
    except PolicyError as exc:
        problems.extend(exc.problems)
    try:
        bridges = parse_bridges(value.get("bridges"))
    except PolicyError as exc:
        problems.extend(exc.problems)
    if problems:
        raise PolicyError(problems)
    return BrokerConfig(tuple(statements), tuple(bridges))
