"""``mqttBroker.authorizations``: IoT Edge 1.2's authorization policy for the MQTT broker, sans-IO.

A policy is a list of statements. Each names ``identities`` and has ``allow`` and/or ``deny`` rules; a
rule names ``operations`` (``mqtt:connect``, ``mqtt:publish``, ``mqtt:subscribe``) and ``resources``
(topic filters; not needed when the only operation is ``mqtt:connect``). Everything is denied unless a
statement allows it, and a matching deny wins over any allow. Identities are written hub-qualified
(``myhub.azure-devices.net/device/module``) or bare (``device/module``); both are accepted.

Variables are substituted per client: ``{{iot:identity}}`` (``device`` or ``device/module``),
``{{iot:device_id}}``, ``{{iot:module_id}}`` (empty for a device), ``{{iot:this_device_id}}`` (the edge
device), ``{{mqtt:client_id}}``, and in resources ``{{mqtt:topic}}``. An identity of just a variable
that names the client (``{{iot:identity}}``) matches every client.

A subscribe request is allowed when a resource filter covers the requested filter as text: ``alerts/#``
covers ``alerts/+/x`` and ``alerts/#``, but not ``#``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..mqtt.topic_trie import filter_matches, valid_filter

CONNECT = "mqtt:connect"
PUBLISH = "mqtt:publish"
SUBSCRIBE = "mqtt:subscribe"
OPERATIONS = (CONNECT, PUBLISH, SUBSCRIBE)
VARIABLES = (
    "iot:identity",
    "iot:device_id",
    "iot:module_id",
    "iot:this_device_id",
    "mqtt:client_id",
    "mqtt:topic",
)
_VARIABLE = re.compile(r"\{\{([^{}]*)\}\}")


class PolicyError(Exception):
    """The policy is not valid; ``problems`` are (path relative to ``mqttBroker``, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Client:
    """Who asks: an IoT identity (``device``/``module``), or an anonymous local tool (``--dev``)."""

    client_id: str
    device_id: str
    module_id: str | None = None
    anonymous: bool = False

    @property
    def identity(self) -> str:
        return self.device_id if self.module_id is None else f"{self.device_id}/{self.module_id}"


@dataclass(frozen=True, slots=True)
class Rule:
    operations: tuple[str, ...]
    resources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Statement:
    identities: tuple[str, ...]
    allow: tuple[Rule, ...]
    deny: tuple[Rule, ...]
    index: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


class AuthorizationPolicy:
    """Evaluates a parsed policy for an edge device (``this_device_id``) of a hub (``hub_hostname``)."""

    def __init__(self, statements: Iterable[Statement], this_device_id: str, hub_hostname: str) -> None:
        self.statements = tuple(statements)
        self.this_device_id = this_device_id
        self.hub_hostname = hub_hostname

    def decide(self, client: Client, operation: str, resource: str | None = None) -> Decision:
        """Deny wins; without a matching rule, an IoT client is denied and an anonymous local tool (only
        possible with ``--dev``) is allowed."""
        allowed_by: int | None = None
        for statement in self.statements:
            if not any(self._identity_matches(i, client) for i in statement.identities):
                continue
            for rule in statement.deny:
                if self._rule_matches(rule, client, operation, resource):
                    return Decision(False, f"denied by mqttBroker.authorizations[{statement.index}]")
            if allowed_by is None and any(
                self._rule_matches(r, client, operation, resource) for r in statement.allow
            ):
                allowed_by = statement.index
        if allowed_by is not None:
            return Decision(True, f"allowed by mqttBroker.authorizations[{allowed_by}]")
        if client.anonymous:
            return Decision(True, "anonymous local client (--dev): allowed unless denied")
        target = f" on {resource!r}" if resource is not None else ""
        return Decision(False, f"no statement of mqttBroker.authorizations allows {operation}{target}")

    def allows(self, client: Client, operation: str, resource: str | None = None) -> bool:
        return self.decide(client, operation, resource).allowed

    def _substitute(self, text: str, client: Client, topic: str | None = None) -> str:
        values = {
            "iot:identity": client.identity,
            "iot:device_id": client.device_id,
            "iot:module_id": client.module_id or "",
            "iot:this_device_id": self.this_device_id,
            "mqtt:client_id": client.client_id,
            "mqtt:topic": topic or "",
        }
        return _VARIABLE.sub(lambda m: values.get(m.group(1).strip(), m.group(0)), text)

    def _identity_matches(self, pattern: str, client: Client) -> bool:
        if pattern.strip() in ("{{iot:identity}}", "{{mqtt:client_id}}"):
            return True
        wanted = self._substitute(pattern, client)
        prefix = f"{self.hub_hostname}/"
        if wanted.startswith(prefix):
            wanted = wanted[len(prefix) :]
        elif "." in wanted.split("/", 1)[0] and "/" in wanted:
            return False  # qualified with another hub's name
        return wanted in (client.identity, client.client_id)

    def _rule_matches(self, rule: Rule, client: Client, operation: str, resource: str | None) -> bool:
        if operation not in rule.operations:
            return False
        if operation == CONNECT:
            return True
        if resource is None:
            return False
        for pattern in rule.resources:
            topic_filter = self._substitute(pattern, client, resource)
            if filter_matches(topic_filter, resource):
                return True
        return False


def _strings(value: Any, path: str, problems: list[tuple[str, str]], what: str) -> list[str]:
    if not isinstance(value, list) or not value:
        problems.append((path, f"{what} must be a non-empty list of strings"))
        return []
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            problems.append((f"{path}[{i}]", f"{what} must be non-empty strings"))
        else:
            out.append(item)
    return out


def _check_variables(text: str, path: str, problems: list[tuple[str, str]]) -> None:
    for name in _VARIABLE.findall(text):
        if name.strip() not in VARIABLES:
            problems.append((path, f"unknown variable {{{{{name}}}}} (known: {', '.join(VARIABLES)})"))


def _parse_rule(value: Any, path: str, problems: list[tuple[str, str]]) -> Rule | None:
    if not isinstance(value, dict):
        problems.append((path, "a rule is an object with operations and resources"))
        return None
    operations = _strings(value.get("operations"), f"{path}.operations", problems, "operations")
    for i, op in enumerate(operations):
        if op not in OPERATIONS:
            problems.append(
                (f"{path}.operations[{i}]", f"unknown operation {op!r} (use {', '.join(OPERATIONS)})")
            )
    resources: list[str] = []
    if value.get("resources") is not None:
        resources = _strings(value["resources"], f"{path}.resources", problems, "resources")
    elif set(operations) - {CONNECT}:
        problems.append((f"{path}.resources", "resources are required for mqtt:publish and mqtt:subscribe"))
    for i, resource in enumerate(resources):
        where = f"{path}.resources[{i}]"
        _check_variables(resource, where, problems)
        if not valid_filter(_VARIABLE.sub("x", resource)):
            problems.append(
                (
                    where,
                    f"{resource!r} is not a valid topic filter ('+' and '#' fill a whole level, '#' last)",
                )
            )
    return Rule(tuple(operations), tuple(resources))


def parse_authorizations(value: Any, path: str = "authorizations") -> list[Statement]:
    """Statements from the manifest's ``mqttBroker.authorizations``; raises PolicyError with every
    problem, each at its path."""
    problems: list[tuple[str, str]] = []
    statements: list[Statement] = []
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError([(path, "must be a list of statements")])
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            problems.append((where, "a statement is an object with identities and allow and/or deny"))
            continue
        unknown = set(item) - {"identities", "allow", "deny"}
        if unknown:
            problems.append(
                (where, f"unknown field(s) {', '.join(sorted(unknown))} (use identities, allow, deny)")
            )
        identities = _strings(item.get("identities"), f"{where}.identities", problems, "identities")
        for i, identity in enumerate(identities):
            _check_variables(identity, f"{where}.identities[{i}]", problems)
        if "allow" not in item and "deny" not in item:
            problems.append((where, "a statement needs allow or deny rules"))
        effects: dict[str, list[Rule]] = {"allow": [], "deny": []}
        for effect in effects:
            rules = item.get(effect)
            if rules is None:
                continue
            if not isinstance(rules, list):
                problems.append((f"{where}.{effect}", "must be a list of rules"))
                continue
            for r, rule in enumerate(rules):
                parsed = _parse_rule(rule, f"{where}.{effect}[{r}]", problems)
                if parsed is not None:
                    effects[effect].append(parsed)
        statements.append(
            Statement(tuple(identities), tuple(effects["allow"]), tuple(effects["deny"]), index)
        )
    if problems:
        raise PolicyError(problems)
    return statements
