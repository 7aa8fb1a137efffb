"""``$body.<path>`` queries: the path language edgeHub accepts, and what a query yields.

edgeHub validates the path when the route compiles (``ident(.ident)*`` with at most one ``[n]`` after
an ident; no slices, no quoted names) and, at run time, selects tokens with Newtonsoft's JSONPath on
the parsed body. What comes back decides the value:

- no match: a null (so ``$body.missing > 5`` is true: null sorts above numbers);
- several matches, an object or an array: undefined;
- a number, string, bool or JSON null: that value;
- a string that looks like an ISO-8601 date: undefined (Newtonsoft turns it into a date token).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from .values import JSON_NULL, MISSING, UNDEF

_IDENT = r"[^()<>@,;:\\\"/\[\]?={}.\s]+"
_SEGMENT = re.compile(rf"({_IDENT})(?:\[([0-9]+)\])?")


class BodyPathError(ValueError):
    """The path is not one edgeHub accepts; the message says why."""


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    index: int | None


def parse_path(path: str) -> tuple[Step, ...]:
    """Validate a ``$body`` path (the text after ``$body.``) and split it into steps."""
    if not path:
        raise BodyPathError("$body query cannot be empty")
    steps: list[Step] = []
    for part in path.split("."):
        m = _SEGMENT.fullmatch(part)
        if m is None:
            if not part:
                raise BodyPathError(f"empty name in $body path {path!r}")
            raise BodyPathError(
                f"unsupported $body path {path!r}: use names separated by '.', each with at most one "
                "[index] (no slices, quotes or empty brackets)"
            )
        steps.append(Step(m.group(1), int(m.group(2)) if m.group(2) is not None else None))
    return tuple(steps)


_ISO_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,7})?(?:Z|[+-]\d{2}(?::?\d{2})?)?"
)
_MS_DATE = re.compile(r"/Date\(-?\d+(?:[+-]\d{4})?\)/")


def looks_like_date(text: str) -> bool:
    """Whether Newtonsoft's reader would turn this JSON string into a date token."""
    if text.startswith("/"):
        return _MS_DATE.fullmatch(text) is not None
    if not 19 <= len(text) <= 40 or not text[0].isdigit() or text[10] != "T":
        return False
    m = _ISO_DATE.fullmatch(text)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return hour <= 23 and minute <= 59 and second <= 59


def _select(node: Any, steps: tuple[Step, ...]) -> list[Any]:
    current = [node]
    for step in steps:
        found: list[Any] = []
        for item in current:
            if step.name == "*":
                if isinstance(item, dict):
                    found.extend(item.values())
                elif isinstance(item, list):
                    found.extend(item)
            elif isinstance(item, dict) and step.name in item:
                found.append(item[step.name])
        if step.index is not None:
            found = [x[step.index] for x in found if isinstance(x, list) and step.index < len(x)]
        current = found
        if not current:
            break
    return current


def leaf_value(value: Any) -> Any:
    """A JSON value as a query value (see the module docstring)."""
    if value is None:
        return JSON_NULL
    if value is True or value is False:
        return value
    if isinstance(value, float):
        return UNDEF if value != value else value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return float("inf") if value > 0 else float("-inf")
    if isinstance(value, str):
        return UNDEF if looks_like_date(value) else value
    return UNDEF  # objects and arrays


def query(root: Any, steps: tuple[Step, ...]) -> Any:
    """Run a validated path on a parsed body (``None`` when the body cannot be queried)."""
    if root is None:
        return UNDEF
    found = _select(root, steps)
    if not found:
        return MISSING
    if len(found) > 1:
        return UNDEF
    return leaf_value(found[0])


def twin_change_query(root: Any, steps: tuple[Step, ...]) -> Any:
    """``twin_change_includes``: True when the path exists (object or not), False when it does not."""
    if root is None:
        return UNDEF
    return bool(_select(root, steps))
