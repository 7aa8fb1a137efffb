"""Errors of the routing package: what went wrong in a route, and where, in words a user can act on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a route or condition text, at a 1-based line and column of that text."""

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class RouteError(Exception):
    """Base of every routing error. ``problems`` lists each one found, in order."""

    kind = "route error"

    def __init__(self, text: str, problems: list[Problem]) -> None:
        self.text = text
        self.problems = problems
        super().__init__(self.summary())

    def summary(self) -> str:
        details = "; ".join(str(p) for p in self.problems) or "invalid"
        return f"{self.kind} in {self.text!r}: {details}"


class RouteSyntaxError(RouteError):
    """The route or condition does not parse (edgeHub rejects it when it reads the configuration)."""

    kind = "syntax error"


class ConditionCompileError(RouteError):
    """The condition parses but does not compile: types, functions, ``$body`` paths."""

    kind = "compile error"


class EndpointError(RouteError):
    """The sink is not one edgeHub can create: an unknown ``$x`` or function, or a bad address."""

    kind = "endpoint error"
