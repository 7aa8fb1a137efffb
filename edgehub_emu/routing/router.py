"""The route table: which endpoints a message goes to, with which priority and time-to-live.

As edgeHub's evaluator does: every route whose source matches and whose condition is True yields its
endpoint; an endpoint reached by several routes gets one copy, at the lowest priority number among
them, with that route's time-to-live (0 means the global one). A message no route takes is dropped
("no_route"). ``explain`` says, for tools, why each route did or did not fire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from .endpoints import Endpoint
from .message import Message
from .route import Route
from .values import UNDEF

DEFAULT_TIME_TO_LIVE_SECS: Final = 7200
"""Global time-to-live when the manifest sets none (the deployment template's default)."""

_SOURCE_CACHE_LIMIT: Final = 4096
Evaluate = Callable[[Message], Any]


@dataclass(frozen=True, slots=True)
class RoutedEndpoint:
    """One copy of a message for one endpoint."""

    endpoint: Endpoint
    priority: int
    time_to_live_secs: int
    route: str


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """What one route made of one message: ``fired``, ``false``, ``undefined`` or ``source_mismatch``."""

    route: Route
    outcome: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Explanation:
    message_source: str
    verdicts: tuple[RouteVerdict, ...]
    endpoints: tuple[RoutedEndpoint, ...]


class RouteTable:
    """Compiled routes plus the global time-to-live. Immutable: a reload builds a new table."""

    def __init__(self, routes: Iterable[Route], global_ttl_secs: int = DEFAULT_TIME_TO_LIVE_SECS) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self.global_ttl_secs = global_ttl_secs
        self._copies = tuple(
            RoutedEndpoint(r.endpoint, r.priority, r.time_to_live_secs or global_ttl_secs, r.name)
            for r in self.routes
        )
        self._by_source: dict[str, tuple[tuple[str, Evaluate | None, RoutedEndpoint], ...]] = {}
        self.hits: dict[str, int] = {r.name: 0 for r in self.routes}
        self.unrouted = 0

    def __len__(self) -> int:
        return len(self.routes)

    def _candidates(self, source: str) -> tuple[tuple[str, Evaluate | None, RoutedEndpoint], ...]:
        """(name, condition or None when it is just ``true``, copy) of the routes whose FROM matches."""
        found = self._by_source.get(source)
        if found is None:
            found = tuple(
                (r.name, None if r.condition.text.strip() == "true" else r.condition.evaluate, copy)
                for r, copy in zip(self.routes, self._copies, strict=True)
                if r.matches_source(source)
            )
            if len(self._by_source) >= _SOURCE_CACHE_LIMIT:
                self._by_source.clear()
            self._by_source[source] = found
        return found

    def route(self, message: Message) -> list[RoutedEndpoint]:
        """The endpoints ``message`` goes to: one copy per endpoint, lowest priority number first wins."""
        source = message.source
        candidates = self._by_source.get(source) or self._candidates(source)

        hits = self.hits
        if len(candidates) == 1:  # the common case: one route takes what this source sends
            name, evaluate, copy = candidates[0]
            if evaluate is None or evaluate(message) is True:
                hits[name] += 1
                return [copy]
            self.unrouted += 1
            return []
        best: dict[str, RoutedEndpoint] = {}
        for name, evaluate, copy in candidates:
            if evaluate is None or evaluate(message) is True:
                hits[name] += 1
                key = copy.endpoint.id

                current = best.get(key)
                if current is None or copy.priority < current.priority:
                    best[key] = copy
        if not best:
            self.unrouted += 1
        return list(best.values())

    def explain(self, message: Message) -> Explanation:
        """Like ``route``, and say for each route what happened and why (for ``route test``)."""
        source = message.source
        verdicts = []
        for route in self.routes:
            if not route.matches_source(source):
                reason = f"message source {source} does not start with {route.source}"
                verdicts.append(RouteVerdict(route, "source_mismatch", (reason,)))
                continue
            result = route.condition.evaluate(message)
            if result is True:
                verdicts.append(RouteVerdict(route, "fired"))
            elif result is UNDEF:
                verdicts.append(RouteVerdict(route, "undefined", _undefined_reasons(route, message)))
            else:
                verdicts.append(RouteVerdict(route, "false"))
        best: dict[str, RoutedEndpoint] = {}
        for verdict, copy in zip(verdicts, self._copies, strict=True):
            if verdict.outcome == "fired":
                current = best.get(copy.endpoint.id)
                if current is None or copy.priority < current.priority:
                    best[copy.endpoint.id] = copy
        return Explanation(source, tuple(verdicts), tuple(best.values()))


def _undefined_reasons(route: Route, message: Message) -> tuple[str, ...]:
    reasons = []
    if route.condition.uses_body:
        why = message.body_query_reason()
        if why is not None:
            reasons.append(f"$body is unreadable: {why}")
    app = message.app_properties_ci()
    system = message.system_properties_ci()
    for name in route.condition.references:
        if name.startswith("{"):
            inner = name[2:-1]
            if not inner.lower().startswith("body.") and inner.lower() not in system:
                reasons.append(f"system property {name} is not set")
        elif name.startswith("$"):
            if (
                name.lower() not in app
                and not name.lower().startswith("$body.")
                and name[1:].lower() not in system
            ):
                reasons.append(f"{name} is not set (neither an application property nor a system property)")
        elif name.lower() not in app:
            reasons.append(f"application property '{name}' is not set")
    if not reasons:
        reasons.append("the condition evaluates to undefined (a number or string is not a condition)")
    return tuple(reasons)
