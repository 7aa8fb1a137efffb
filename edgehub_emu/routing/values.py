"""Runtime values of edgeHub's condition language, and the operations on them.

edgeHub's conditions are statically typed (number, string, Bool, null, undefined and the dynamically
typed result of a ``$body`` query). The compiler picks an operation by static type once; the functions
here are what those operations do at run time, with edgeHub's three-valued logic and its "undefined"
rules. Everything is plain Python values so that evaluation allocates little:

- number: ``float``; an undefined number is NaN (as in edgeHub).
- string: ``str``; ``None`` is a property that is present with a null value; ``UNDEF`` is missing.
- Bool: ``True``, ``False`` or ``UNDEF``.
- null: the ``NULL`` literal.
- query value (``$body`` result): ``UNDEF``; ``True``/``False``; ``float``; ``str``; ``NULL_STRING``
  (a string-typed value that is null); ``JSON_NULL`` (a null leaf, or a null literal converted);
  ``MISSING`` (a path that matched nothing; also null-typed, but a different instance, which
  ``is_null`` tells apart, as edgeHub does); or a ``JsonObject`` wrapper.

This module must not import anything from the rest of the hub.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Final


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name


UNDEF: Final = _Sentinel("UNDEF")
"""Undefined: a missing property, a failed function, an undefined comparison."""
NULL: Final = _Sentinel("NULL")
"""The ``null`` literal (static type null)."""
NULL_STRING: Final = _Sentinel("NULL_STRING")
"""A query value of string type whose value is null (a null property converted to a query value)."""
JSON_NULL: Final = _Sentinel("JSON_NULL")
"""A query value of null type: a JSON ``null`` leaf, or the ``null`` literal converted."""
MISSING: Final = _Sentinel("MISSING")
"""The query value of a ``$body`` path that matched nothing: null-typed, a distinct instance."""

NAN: Final = float("nan")
INF: Final = float("inf")


class JsonObject:
    """A ``$body`` query result that is not a leaf (object, array, date): compared by identity only."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"JsonObject({self.value!r})"


class Type(enum.Enum):
    """Static types of condition expressions, named as edgeHub's compiler names them."""

    NUMBER = "number"
    STRING = "string"
    BOOL = "Bool"
    NULL = "null"
    UNDEFINED = "undefined"
    QUERY = "QueryValue"

    def __str__(self) -> str:
        return self.value


QUERY_COMPATIBLE: Final = frozenset({Type.NUMBER, Type.STRING, Type.BOOL, Type.NULL})
"""Static types that a query value may stand in for (edgeHub's ``QueryValue.IsSupportedType``)."""


# --- conversions to query values --------------------------------------------------------------


def number_to_query(x: float) -> Any:
    return UNDEF if x != x else x


def string_to_query(x: Any) -> Any:
    if x is UNDEF:
        return UNDEF
    return NULL_STRING if x is None else x


def identity(x: Any) -> Any:
    return x


def null_to_query(_: Any) -> Any:
    return JSON_NULL


def undefined_to_query(_: Any) -> Any:
    return UNDEF


TO_QUERY = {
    Type.NUMBER: number_to_query,
    Type.STRING: string_to_query,
    Type.BOOL: identity,
    Type.NULL: null_to_query,
    Type.UNDEFINED: undefined_to_query,
    Type.QUERY: identity,
}


# --- query value classification ---------------------------------------------------------------

# edgeHub's QueryValueType order: None < Bool < Double < String < Null < Object.
RANK_NONE, RANK_BOOL, RANK_DOUBLE, RANK_STRING, RANK_NULL, RANK_OBJECT = range(6)


def query_rank(v: Any) -> int:
    t = type(v)
    if t is float:
        return RANK_DOUBLE
    if t is str or v is NULL_STRING:
        return RANK_STRING
    if t is bool:
        return RANK_BOOL
    if v is UNDEF:
        return RANK_NONE
    if v is JSON_NULL or v is MISSING:
        return RANK_NULL
    return RANK_OBJECT


def query_compare(a: Any, b: Any) -> int | None:
    """edgeHub's QueryValue.CompareTo: by type rank first, then by value. None means undefined."""
    if a is UNDEF or b is UNDEF:
        return None
    ra, rb = query_rank(a), query_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == RANK_DOUBLE:
        return (a > b) - (a < b)
    if ra == RANK_STRING:
        # string.Compare(null, x) sorts null first; two nulls are equal.
        if a is NULL_STRING or b is NULL_STRING:
            return (a is not NULL_STRING) - (b is not NULL_STRING)
        return (a > b) - (a < b)
    if ra == RANK_BOOL:
        return int(a) - int(b)
    if ra == RANK_NULL:
        return 0
    return 0 if a.value is b.value else (1 if id(a.value) > id(b.value) else -1)


# --- Bool (three-valued) ----------------------------------------------------------------------


def bool_not(a: Any) -> Any:
    return UNDEF if a is UNDEF else not a


def query_to_bool(v: Any) -> Any:
    """edgeHub's explicit QueryValue → Bool conversion: only a Bool query value is a Bool."""
    return v if type(v) is bool else UNDEF


def query_and(a: Any, b: Any) -> Any:
    if type(a) is bool and type(b) is bool:
        return a and b
    return UNDEF


def query_or(a: Any, b: Any) -> Any:
    if type(a) is bool and type(b) is bool:
        return a or b
    return UNDEF


def query_not(a: Any) -> Any:
    return (not a) if type(a) is bool else UNDEF


# --- arithmetic with .NET double semantics ----------------------------------------------------


def divide(x: float, y: float) -> float:
    try:
        return x / y
    except ZeroDivisionError:
        if x != x or x == 0:
            return NAN
        return math.copysign(INF, x) * math.copysign(1.0, y)


def modulo(x: float, y: float) -> float:
    # .NET's % on doubles is IEEE fmod: the result takes the dividend's sign.
    try:
        return math.fmod(x, y)
    except ValueError:
        return NAN


def query_arith(op: str):
    """A binary arithmetic operation on query values: both must be numbers, else undefined."""
    if op == "+":

        def run(a: Any, b: Any) -> Any:
            return a + b if type(a) is float and type(b) is float else UNDEF

    elif op == "-":

        def run(a: Any, b: Any) -> Any:
            return a - b if type(a) is float and type(b) is float else UNDEF

    elif op == "*":

        def run(a: Any, b: Any) -> Any:
            return number_to_query(a * b) if type(a) is float and type(b) is float else UNDEF

    elif op == "/":

        def run(a: Any, b: Any) -> Any:
            return number_to_query(divide(a, b)) if type(a) is float and type(b) is float else UNDEF

    else:  # pragma: no cover - the compiler only asks for the four above
        raise ValueError(op)
    return run


def is_defined_value(v: Any) -> bool:
    """edgeHub's Undefined.IsDefined for any runtime value."""
    if type(v) is float:
        return v == v
    return v is not UNDEF
