"""The built-in functions of edgeHub's condition language and how a call picks its overload.

Each function has a list of overloads ("executors" in edgeHub), tried in order; the first whose
parameter types match the call's static argument types wins, and no match is a compile error. When an
overload "supports query values", a ``$body`` result may stand in for any parameter and every argument
is converted to a query value before the call, so one runtime function serves all argument types.
Names are case-insensitive. ``twin_change_includes`` is handled by the compiler (it reads its argument
as a path, not as a value).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .values import (
    INF,
    NAN,
    NULL_STRING,
    QUERY_COMPATIBLE,
    UNDEF,
    Type,
    is_defined_value,
)

N, S, B, NU, U, Q = Type.NUMBER, Type.STRING, Type.BOOL, Type.NULL, Type.UNDEFINED, Type.QUERY


@dataclass(frozen=True, slots=True)
class Overload:
    params: tuple[Type, ...]
    result: Type
    run: Callable[..., Any] | None  # None: the result is the constant ``constant``
    query_values: bool = False  # arguments are converted to query values
    varargs: bool = False  # the last parameter repeats (edgeHub's VarArgs)
    any_types: bool = False  # only the arity counts (edgeHub's AnyArgs)
    constant: Any = None

    def matches(self, given: tuple[Type, ...]) -> bool:
        if self.any_types:
            return len(given) == len(self.params)
        if self.varargs:
            fixed = len(self.params) - 1
            if len(given) < fixed:
                return False
            return all(
                g == self.params[min(i, fixed)] or (self.query_values and g == Q) for i, g in enumerate(given)
            )
        if len(given) != len(self.params):
            return False
        return all(_arg_matches(t, g, self.query_values) for t, g in zip(self.params, given, strict=True))

    def describe(self) -> str:
        if self.any_types:
            return "(" + ", ".join("any" for _ in self.params) + ")"
        names = [str(t) for t in self.params]
        if self.varargs:
            names.append(f"{names[-1]}...")
        return "(" + ", ".join(names) + ")"


def _arg_matches(expected: Type, given: Type, query_values: bool) -> bool:
    if expected == given:
        return True
    if not query_values:
        return False
    return (given == Q and expected in QUERY_COMPATIBLE) or (expected == Q and given in QUERY_COMPATIBLE)


# --- runtime helpers: arguments arrive as query values where query_values is set --------------


def _num(f: Callable[[float], float]) -> Callable[[Any], float]:
    def run(x: Any) -> float:
        if type(x) is not float:
            return NAN
        try:
            return f(x)
        except (OverflowError, ValueError):
            return NAN

    return run


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return INF


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0 else NAN


def _ceiling(x: float) -> float:
    return float(math.ceil(x)) if math.isfinite(x) else x


def _floor(x: float) -> float:
    return float(math.floor(x)) if math.isfinite(x) else x


def _sign(x: float) -> float:
    return float((x > 0) - (x < 0))


def _power(x: Any, y: Any) -> float:
    if type(x) is not float or type(y) is not float:
        return NAN
    try:
        return math.pow(x, y)
    except OverflowError:
        negative = x < 0 and y.is_integer() and int(y) % 2 == 1
        return -INF if negative else INF
    except ValueError:
        return INF if x == 0 and y < 0 else NAN


# .NET double.TryParse(s, NumberStyles.Any, InvariantCulture): white space, a leading or trailing sign,
# parentheses for negatives, thousands separators, a decimal point, an exponent, the currency sign ¤.
_NUMBER_ANY = re.compile(
    r"\s*(?P<open>\()?\s*(?:¤\s*)?(?P<lead>[+-])?\s*(?:¤\s*)?"
    r"(?P<digits>(?:[0-9][0-9,]*)?(?:\.[0-9]*)?)(?P<exp>[eE][+-]?[0-9]+)?"
    r"\s*(?:¤\s*)?(?P<trail>[+-])?\s*(?:¤\s*)?(?P<close>\))?\s*"
)
_SPECIAL = {"infinity": INF, "+infinity": INF, "-infinity": -INF, "nan": NAN, "∞": INF, "-∞": -INF}
_PLAIN_NUMERAL = frozenset("0123456789.+-eE")


def parse_number(text: str) -> float:
    """edgeHub's ``as_number`` on a string: NaN (undefined) where .NET's parser fails."""
    if text and _PLAIN_NUMERAL.issuperset(text):
        # Over these characters every text Python's float() accepts, .NET accepts with the same value.
        try:
            return float(text)
        except ValueError:
            pass  # e.g. '12-' (a trailing sign): .NET's rules below
    special = _SPECIAL.get(text.strip().lower())
    if special is not None:
        return special
    m = _NUMBER_ANY.fullmatch(text)
    if m is None:
        return NAN
    digits = m.group("digits").replace(",", "")
    if not any(c.isdigit() for c in digits):
        return NAN
    if m.group("lead") and m.group("trail"):
        return NAN
    if bool(m.group("open")) != bool(m.group("close")):
        return NAN
    value = float(digits + (m.group("exp") or ""))
    negative = "-" in (m.group("lead") or "", m.group("trail") or "") or bool(m.group("open"))
    if m.group("open") and (m.group("lead") or m.group("trail")):
        return NAN
    return -value if negative else value


def _as_number(x: Any) -> float:
    if type(x) is str:
        return parse_number(x)
    if type(x) is float:
        return x
    return NAN


def _str(x: Any) -> bool:
    return type(x) is str


def _utf16_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-16-le")) // 2


def _length(x: Any) -> float:
    return float(_utf16_len(x)) if _str(x) else NAN


def _lower(x: Any) -> Any:
    return x.lower() if _str(x) else UNDEF


def _upper(x: Any) -> Any:
    return x.upper() if _str(x) else UNDEF


def _substring_start(s: Any, start: Any) -> Any:
    if not _str(s) or type(start) is not float or not math.isfinite(start):
        return UNDEF
    i = int(start)
    return s[i:] if 0 <= i <= len(s) else UNDEF


def _substring_length(s: Any, start: Any, length: Any) -> Any:
    if not _str(s) or type(start) is not float or type(length) is not float:
        return UNDEF
    if not (math.isfinite(start) and math.isfinite(length)):
        return UNDEF
    i, n = int(start), int(length)
    if not 0 <= i < len(s) or not 0 <= n <= len(s) - i:
        return UNDEF
    return s[i : i + n]


def _index_of(s: Any, frag: Any) -> float:
    return float(s.find(frag)) if _str(s) and _str(frag) else NAN


def _starts_with(s: Any, frag: Any) -> Any:
    return s.startswith(frag) if _str(s) and _str(frag) else UNDEF


def _ends_with(s: Any, frag: Any) -> Any:
    return s.endswith(frag) if _str(s) and _str(frag) else UNDEF


def _contains(s: Any, frag: Any) -> Any:
    return (frag in s) if _str(s) and _str(frag) else UNDEF


def _concat(*parts: Any) -> Any:
    out = []
    for p in parts:
        if p is NULL_STRING:
            continue  # a null string concatenates as ""
        if type(p) is not str:
            return UNDEF
        out.append(p)
    return "".join(out)


def _is_number_value(x: Any) -> bool:
    return type(x) is float and math.isfinite(x)


def _is_null_query(x: Any) -> Any:
    # edgeHub compares against the static QueryValue.Null *by reference*: any present value, even
    # 30 or a JSON null, is "null" here, and only a path that matched nothing is not.
    from .values import MISSING

    return UNDEF if x is UNDEF else x is not MISSING


def _ov(params: tuple[Type, ...], result: Type, run: Callable[..., Any] | None, **kw: Any) -> Overload:
    return Overload(params, result, run, **kw)


def _math(f: Callable[[float], float]) -> list[Overload]:
    return [_ov((N,), N, _num(f), query_values=True)]


def _always(value: Any, arity: int = 1) -> Overload:
    return Overload(tuple(U for _ in range(arity)), B, None, any_types=True, constant=value)


BUILTINS: dict[str, list[Overload]] = {
    "abs": _math(abs),
    "exp": _math(_exp),
    "power": [_ov((N, N), N, _power, query_values=True)],
    "square": _math(lambda x: x * x),
    "ceiling": _math(_ceiling),
    "floor": _math(_floor),
    "sign": _math(_sign),
    "sqrt": _math(_sqrt),
    "as_number": [
        _ov((S,), N, _as_number, query_values=True),
        _ov((N,), N, lambda x: x),
    ],
    "is_bool": [
        _ov((B,), B, lambda x: x is not UNDEF),
        _ov((Q,), B, lambda x: type(x) is bool),
        _always(False),
    ],
    "is_defined": [
        _ov((S,), B, lambda x: x is not UNDEF),
        _ov((N,), B, lambda x: x == x),
        _ov((B,), B, lambda x: x is not UNDEF),
        _ov((U,), B, None, constant=False),
        _ov((NU,), B, None, constant=True),
        _ov((Q,), B, is_defined_value),
    ],
    "is_null": [
        _ov((S,), B, lambda x: x is None),
        _ov((Q,), B, _is_null_query),
        _ov((NU,), B, None, constant=True),
        _always(False),
    ],
    "is_number": [
        _ov((N,), B, _is_number_value, query_values=True),
        _always(False),
    ],
    "is_string": [
        _ov((S,), B, _str, query_values=True),
        _always(False),
    ],
    "concat": [_ov((S, S, S), S, _concat, query_values=True, varargs=True)],
    "length": [_ov((S,), N, _length, query_values=True)],
    "lower": [_ov((S,), S, _lower, query_values=True)],
    "upper": [_ov((S,), S, _upper, query_values=True)],
    "substring": [
        _ov((S, N), S, _substring_start, query_values=True),
        _ov((S, N, N), S, _substring_length, query_values=True),
    ],
    "index_of": [_ov((S, S), N, _index_of, query_values=True)],
    "starts_with": [_ov((S, S), B, _starts_with, query_values=True)],
    "ends_with": [_ov((S, S), B, _ends_with, query_values=True)],
    "contains": [_ov((S, S), B, _contains, query_values=True)],
}

TWIN_CHANGE_INCLUDES = "twin_change_includes"
TWIN_CHANGE_PREFIXES = ("properties.reported.", "properties.desired.", "tags.")


def find_overload(name: str, given: tuple[Type, ...]) -> Overload | None:
    for overload in BUILTINS.get(name.lower(), ()):
        if overload.matches(given):
            return overload
    return None


def signatures(name: str) -> str:
    """The accepted parameter lists of a function, for error messages."""
    return " or ".join(f"{name.lower()}{o.describe()}" for o in BUILTINS.get(name.lower(), ()))


def is_builtin(name: str) -> bool:
    return name.lower() in BUILTINS or name.lower() == TWIN_CHANGE_INCLUDES
