"""Compile a condition once into a Python callable, with edgeHub's static type rules.

edgeHub compiles a route's condition into a .NET expression tree when the configuration arrives: every
operator and function checks its operand types then, so ``prop = 5`` (a string against a number) is a
configuration error, not a runtime false. This module reproduces that checking on the typed tree from
``ast.py`` and produces nested closures over ``Message``; evaluating a condition does no parsing and
no type dispatch beyond what the static types leave open (``$body`` values).

The result of a compiled condition is ``True``, ``False`` or ``UNDEF``; only ``True`` routes.
"""

from __future__ import annotations

import operator
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from . import ast
from .body_query import BodyPathError, parse_path, query, twin_change_query
from .builtins import (
    TWIN_CHANGE_INCLUDES,
    TWIN_CHANGE_PREFIXES,
    find_overload,
    is_builtin,
    signatures,
)
from .errors import ConditionCompileError, Problem
from .lexer import tokenize
from .message import Message
from .parser import parse_prefix
from .precedence import parse_whole
from .values import (
    NULL,
    QUERY_COMPATIBLE,
    TO_QUERY,
    UNDEF,
    Type,
    bool_not,
    divide,
    is_defined_value,
    modulo,
    query_and,
    query_arith,
    query_compare,
    query_not,
    query_or,
    query_to_bool,
    string_to_query,
)

N, S, B, NU, U, Q = Type.NUMBER, Type.STRING, Type.BOOL, Type.NULL, Type.UNDEFINED, Type.QUERY

Fn = Callable[[Message], Any]
_NO_CONST: Any = object()

_COMPARE = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# null compared with null (edgeHub's Null operators): equal, and ordered as equal.
_NULL_COMPARE = {"=": True, "!=": False, "<>": False, "<": False, ">": False, "<=": True, ">=": True}


@dataclass(frozen=True, slots=True)
class Typed:
    """A compiled sub-expression: its static type, its evaluator, and its value if it is a literal."""

    type: Type
    fn: Fn
    const: Any = _NO_CONST


def _constant(type_: Type, value: Any) -> Typed:
    return Typed(type_, lambda m: value, value)


UNDEFINED_EXPR = _constant(U, UNDEF)


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A compiled condition: call ``evaluate(message)`` for ``True``, ``False`` or ``UNDEF``."""

    text: str
    tree: ast.Expr
    evaluate: Fn
    uses_body: bool
    references: tuple[str, ...] = field(default=())


def _unescape(body: str) -> str:
    # edgeHub unescapes in two passes: \uXXXX first, then \" \' \\.
    body = re.sub(r"\\[Uu]([0-9A-Fa-f]{4})", lambda m: chr(int(m.group(1), 16)), body)
    return re.sub(r"\\([\"'\\])", lambda m: m.group(1), body)


def _hex(text: str) -> float | None:
    digits = text[2:].lstrip("0") or "0"
    if len(digits) > 16:
        return None  # long.TryParse fails: the literal is undefined
    value = int(digits, 16)
    return float(value - (1 << 64) if value >= 1 << 63 else value)


class _Compiler:
    def __init__(self, route_source: str | None) -> None:
        self.problems: list[Problem] = []
        self.route_source = route_source
        self.uses_body = False
        self.references: list[str] = []

    def error(self, node: ast.Node, message: str) -> Typed:
        self.problems.append(Problem(node.line, node.column, message))
        return UNDEFINED_EXPR

    # --- dispatch ------------------------------------------------------------------------------

    def compile(self, node: ast.Expr) -> Typed:
        if isinstance(node, ast.Literal):
            return self.literal(node)
        if isinstance(node, ast.Property):
            self.references.append(node.name)
            key = node.name.lower()
            return Typed(S, lambda m: m.app_properties_ci().get(key, UNDEF))
        if isinstance(node, ast.SysProperty):
            self.references.append(node.name if not node.escaped else "{" + node.name + "}")
            return self.sys_property(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Unary):
            return self.unary(node)
        if isinstance(node, ast.Binary):
            return self.binary(node)
        if isinstance(node, ast.Nested):
            return self.compile(node.expr)
        return UNDEFINED_EXPR  # ast.Empty: a blank condition is undefined

    # --- leaves --------------------------------------------------------------------------------

    def literal(self, node: ast.Literal) -> Typed:
        kind, text = node.kind, node.text
        if kind == "TRUE":
            return _constant(B, True)
        if kind == "FALSE":
            return _constant(B, False)
        if kind == "NULL":
            return _constant(NU, NULL)
        if kind == "UNDEFINED":
            return UNDEFINED_EXPR
        if kind == "STRING":
            return _constant(S, _unescape(text[1:-1]))
        value = _hex(text) if kind == "HEX" else float(text)
        return UNDEFINED_EXPR if value is None else _constant(N, value)

    def sysprop_lookup(self, name: str) -> Typed:
        if "[" in name or "]" in name:
            return UNDEFINED_EXPR
        key = name.lower()
        return Typed(S, lambda m: m.system_properties_ci().get(key, UNDEF))

    def body_query(self, node: ast.SysProperty, path: str) -> Typed | None:
        try:
            steps = parse_path(path)
        except BodyPathError as exc:
            self.error(node, str(exc))
            return None
        self.uses_body = True
        return Typed(Q, lambda m: query(m.json_root(), steps))

    def sys_property(self, node: ast.SysProperty) -> Typed:
        name = node.name
        is_body = name[:6].lower() == "$body."
        body = self.body_query(node, name[6:]) if is_body else None
        if node.escaped:  # {$name}: no application property lookup
            return (
                body if body is not None else (UNDEFINED_EXPR if is_body else self.sysprop_lookup(name[1:]))
            )
        if "[" in name or "]" in name:
            return body if body is not None else UNDEFINED_EXPR
        app_key = name.lower()
        if body is not None:
            query_fn = body.fn

            def app_or_body(m: Message) -> Any:
                props = m.app_properties_ci()
                if app_key in props:
                    return string_to_query(props[app_key])
                return query_fn(m)

            return Typed(Q, app_or_body)
        alternative = self.sysprop_lookup(name[1:]).fn

        def app_or_system(m: Message) -> Any:
            props = m.app_properties_ci()
            if app_key in props:
                return props[app_key]
            return alternative(m)

        return Typed(S, app_or_system)

    # --- functions -----------------------------------------------------------------------------

    def call(self, node: ast.Call) -> Typed:
        name = node.name
        if name.lower() == TWIN_CHANGE_INCLUDES:
            return self.twin_change_includes(node)
        if not is_builtin(name):
            return self.error(node, f"unknown function '{name}'")
        args = [self.compile(a) for a in node.args]
        given = tuple(a.type for a in args)
        overload = find_overload(name, given)
        if overload is None:
            got = ", ".join(str(t) for t in given)
            return self.error(node, f"{name.lower()}({got}) does not match {signatures(name)}")
        if overload.run is None:
            return _constant(overload.result, overload.constant)
        run = overload.run
        fns = [_as_query(a) if overload.query_values else a.fn for a in args]
        if len(fns) == 1:
            (f0,) = fns
            return Typed(overload.result, lambda m: run(f0(m)))
        if len(fns) == 2:
            f0, f1 = fns
            return Typed(overload.result, lambda m: run(f0(m), f1(m)))
        return Typed(overload.result, lambda m: run(*[f(m) for f in fns]))

    def twin_change_includes(self, node: ast.Call) -> Typed:
        source = (self.route_source or "").strip().rstrip("*").rstrip("/").lower()
        if source != "/twinchangenotifications":
            return self.error(
                node, "twin_change_includes is only allowed in routes FROM /twinChangeNotifications"
            )
        path = node.args_text
        if not path:
            return self.error(node, "twin_change_includes argument cannot be empty")
        if not path.startswith(TWIN_CHANGE_PREFIXES):
            return self.error(
                node,
                f"twin_change_includes path {path!r} must start with properties.reported., "
                "properties.desired. or tags.",
            )
        try:
            steps = parse_path(path)
        except BodyPathError as exc:
            return self.error(node, str(exc))
        self.uses_body = True
        return Typed(B, lambda m: twin_change_query(m.json_root(), steps))

    # --- operators -----------------------------------------------------------------------------

    def unary(self, node: ast.Unary) -> Typed:
        operand = self.compile(node.operand)
        f = operand.fn
        if node.op == "-":
            if operand.type == N:
                if operand.const is not _NO_CONST:
                    return _constant(N, -operand.const)
                return Typed(N, lambda m: -f(m))
            if operand.type == Q:
                return self.error(node, "unary '-' cannot be applied to a $body value; write 0 - $body.x")
            return self.error(node, f"unary '-' needs a number, got {operand.type}")
        # NOT
        if operand.type == NU:
            return _constant(B, True)
        if operand.type == B:
            return Typed(B, lambda m: bool_not(f(m)))
        if operand.type == Q:
            return Typed(B, lambda m: query_to_bool(query_not(f(m))))
        hint = ""
        if isinstance(node.operand, ast.Property | ast.SysProperty):
            hint = "; NOT binds tighter than comparisons: write NOT (a = b)"
        return self.error(node, f"NOT needs a Bool, got {operand.type}{hint}")

    def binary(self, node: ast.Binary) -> Typed:
        left = self.compile(node.left)
        right = self.compile(node.right)
        op = node.op
        if op in ("*", "/", "%", "+", "-"):
            return self.arithmetic(node, op, left, right)
        if op == "||":
            return self.concat(node, left, right)
        if op in _COMPARE:
            return self.compare(node, op, left, right)
        if op in ("and", "or"):
            return self.logical(node, op, left, right)
        return self.coalesce(node, left, right)

    def _operands_ok(self, expected: Type, left: Typed, right: Typed) -> bool:
        def ok(given: Type) -> bool:
            return (
                given == expected
                or (given == Q and expected in QUERY_COMPATIBLE)
                or (expected == Q and given in QUERY_COMPATIBLE)
            )

        return ok(left.type) and ok(right.type)

    def _operand_error(self, node: ast.Binary, left: Typed, right: Typed, wanted: str) -> Typed:
        op = node.op.upper() if node.op.isalpha() else node.op
        message = f"operator '{op}' needs {wanted}, got {left.type} and {right.type}"
        if {left.type, right.type} == {S, N} and node.op in _COMPARE:
            prop = node.left if left.type == S else node.right
            name = getattr(prop, "name", "prop")
            message += f" (application properties are strings: write as_number({name}) instead)"
        return self.error(node, message)

    def arithmetic(self, node: ast.Binary, op: str, left: Typed, right: Typed) -> Typed:
        if not self._operands_ok(N, left, right):
            return self._operand_error(node, left, right, "numbers")
        if Q in (left.type, right.type):
            if op == "%":
                return self.error(node, "operator '%' cannot be applied to $body values")
            fl, fr, run = _as_query(left), _as_query(right), query_arith(op)
            return Typed(Q, lambda m: run(fl(m), fr(m)))
        fl, fr = left.fn, right.fn
        if left.const is not _NO_CONST and right.const is not _NO_CONST:
            value = _number_op(op, left.const, right.const)
            return _constant(N, value)
        if op == "+":
            return Typed(N, lambda m: fl(m) + fr(m))
        if op == "-":
            return Typed(N, lambda m: fl(m) - fr(m))
        if op == "*":
            return Typed(N, lambda m: fl(m) * fr(m))
        if op == "/":
            return Typed(N, lambda m: divide(fl(m), fr(m)))
        return Typed(N, lambda m: modulo(fl(m), fr(m)))

    def concat(self, node: ast.Binary, left: Typed, right: Typed) -> Typed:
        if not self._operands_ok(S, left, right):
            return self._operand_error(node, left, right, "strings")
        overload = find_overload("concat", (left.type, right.type))
        assert overload is not None and overload.run is not None
        run = overload.run
        fl, fr = _as_query(left), _as_query(right)
        return Typed(S, lambda m: run(fl(m), fr(m)))

    def compare(self, node: ast.Binary, op: str, left: Typed, right: Typed) -> Typed:
        if not self._operands_ok(left.type, left, right):
            return self._operand_error(node, left, right, "operands of the same type")
        cmp = _COMPARE[op]
        if Q in (left.type, right.type):
            return Typed(B, _query_comparison(cmp, left, right))
        fl, fr = left.fn, right.fn
        kind = left.type
        if kind == NU:
            return _constant(B, _NULL_COMPARE[op])
        if kind == U:
            return _constant(B, UNDEF)
        if kind == N:
            if right.const is not _NO_CONST:
                c = right.const

                def number_vs_const(m: Message) -> Any:
                    a = fl(m)
                    return UNDEF if a != a or c != c else cmp(a, c)

                return Typed(B, number_vs_const)

            def numbers(m: Message) -> Any:
                a, b = fl(m), fr(m)
                return UNDEF if a != a or b != b else cmp(a, b)

            return Typed(B, numbers)
        if kind == S:
            if right.const is not _NO_CONST:
                c = right.const

                def string_vs_const(m: Message) -> Any:
                    a = fl(m)
                    return UNDEF if a is UNDEF or a is None else cmp(a, c)

                return Typed(B, string_vs_const)

            def strings(m: Message) -> Any:
                a, b = fl(m), fr(m)
                if a is UNDEF or b is UNDEF or a is None or b is None:
                    return UNDEF
                return cmp(a, b)

            return Typed(B, strings)

        # Bool: equality by value, order False < True, undefined stays undefined.
        def bools(m: Message) -> Any:
            a, b = fl(m), fr(m)
            if a is UNDEF or b is UNDEF:
                return UNDEF
            return cmp(a, b)

        return Typed(B, bools)

    def logical(self, node: ast.Binary, op: str, left: Typed, right: Typed) -> Typed:
        boolish = {NU, B, U, Q}
        left_ok = left.type in boolish
        # edgeHub checks the right operand against the *left* operand's query-value type (a bug we
        # keep): `$body.flag AND 'x'` compiles.
        right_ok = right.type in {NU, B, U} or left.type == Q
        if not (left_ok and right_ok):
            return self._operand_error(node, left, right, "Bool operands")
        is_and = op == "and"
        if is_and:
            result_type = NU if NU in (left.type, right.type) else B
        else:
            result_type = NU if left.type == NU and right.type == NU else B
        if Q in (left.type, right.type):
            if result_type == NU:
                return self.error(node, f"operator '{op.upper()}' cannot combine a $body value with null")
            fl, fr = _as_query(left), _as_query(right)
            combine = query_and if is_and else query_or
            return Typed(B, lambda m: query_to_bool(combine(fl(m), fr(m))))
        if result_type == NU:
            return _constant(NU, NULL)
        fl, fr = left.fn, right.fn
        if not is_and and NU in (left.type, right.type):
            return Typed(B, fr if left.type == NU else fl)  # null OR x is x
        # Kleene logic, short-circuited (conditions have no side effects, so this only saves work).
        if is_and:

            def and_(m: Message) -> Any:
                a = fl(m)
                if a is False:
                    return False
                b = fr(m)
                if b is False:
                    return False
                return True if a is True and b is True else UNDEF

            return Typed(B, and_)

        def or_(m: Message) -> Any:
            a = fl(m)
            if a is True:
                return True
            b = fr(m)
            if b is True:
                return True
            return False if a is False and b is False else UNDEF

        return Typed(B, or_)

    def coalesce(self, node: ast.Binary, left: Typed, right: Typed) -> Typed:
        if not self._operands_ok(left.type, left, right):
            return self._operand_error(node, left, right, "operands of the same type")
        if left.type == U:
            return right
        if Q in (left.type, right.type):
            fl, fr = _as_query(left), _as_query(right)
            return Typed(Q, lambda m: v if (v := fl(m)) is not UNDEF else fr(m))
        fl, fr = left.fn, right.fn
        return Typed(left.type, lambda m: v if is_defined_value(v := fl(m)) else fr(m))


def _as_query(typed: Typed) -> Fn:
    convert = TO_QUERY[typed.type]
    f = typed.fn
    if typed.type == Q:
        return f
    if typed.const is not _NO_CONST:
        value = convert(typed.const)
        return lambda m: value
    return lambda m: convert(f(m))


def _query_comparison(cmp: Callable[[Any, Any], bool], left: Typed, right: Typed) -> Fn:
    fl, fr = _as_query(left), _as_query(right)
    if right.const is not _NO_CONST and type(rc := TO_QUERY[right.type](right.const)) is float:
        # The common `$body.x > 30`: a number on the right needs no type ranking when x is a number.
        def query_vs_number(m: Message) -> Any:
            a = fl(m)
            if type(a) is float:
                return cmp(a, rc)
            c = query_compare(a, rc)
            return UNDEF if c is None else cmp(c, 0)

        return query_vs_number

    def queries(m: Message) -> Any:
        c = query_compare(fl(m), fr(m))
        return UNDEF if c is None else cmp(c, 0)

    return queries


def _number_op(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return divide(a, b)
    return modulo(a, b)


def _to_bool(typed: Typed) -> Fn:
    f = typed.fn
    if typed.type == B:
        return f
    if typed.type == Q:
        return lambda m: query_to_bool(f(m))
    if typed.type == NU:
        return lambda m: False
    return lambda m: UNDEF  # numbers, strings and undefined are not conditions


@lru_cache(maxsize=4096)
def whole_condition(text: str) -> ast.Expr | None:
    """The tree of a condition that is one whole expression, by the quick parser; None otherwise."""
    return parse_whole(tokenize(text).tokens)


def parse_condition(text: str) -> ast.Expr:
    """Parse a condition into its typed tree; raise RouteSyntaxError if it does not parse. What follows
    the longest expression at the start is ignored, as edgeHub ignores it."""
    expr = whole_condition(text)
    if expr is not None:
        return expr
    return ast.build(parse_prefix(text, "condition.lark", condition=True).tree)


_COMPILED: dict[tuple[str, str | None], CompiledCondition] = {}
_COMPILED_KEPT = 4096
_COMPILED_LOCK = threading.Lock()  # the manifest watcher compiles on a thread of its own


def compile_condition(
    text: str, route_source: str | None = None, *, tree: ast.Expr | None = None
) -> CompiledCondition:
    """Parse, type-check and compile a condition.

    ``route_source`` is the route's ``FROM`` path; it matters for ``twin_change_includes``, which
    edgeHub allows only in routes from ``/twinChangeNotifications``. ``tree`` is the condition's parse
    when the caller has it already (a route's tokens hold its condition's). Raises ``RouteSyntaxError``
    or ``ConditionCompileError`` with every problem found.

    Remembered: a manifest is validated and then compiled, and a reload repeats most of its routes.
    """
    key = (text, route_source)
    compiled = _COMPILED.get(key)
    if compiled is not None:
        return compiled
    if tree is None:
        tree = parse_condition(text)
    compiler = _Compiler(route_source)
    typed = compiler.compile(tree)
    if compiler.problems:
        raise ConditionCompileError(text, compiler.problems)
    compiled = CompiledCondition(
        text=text,
        tree=tree,
        evaluate=_to_bool(typed),
        uses_body=compiler.uses_body,
        references=tuple(dict.fromkeys(compiler.references)),
    )
    with _COMPILED_LOCK:
        if len(_COMPILED) >= _COMPILED_KEPT:
            del _COMPILED[next(iter(_COMPILED))]  # the oldest: a reload's routes were compiled last
        _COMPILED[key] = compiled
    return compiled
