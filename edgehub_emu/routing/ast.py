"""The typed expression tree of a condition, built once from lark's parse tree.

The compiler (``compiler.py``) type-checks it and turns it into closures; lint (``lint.py``) reads it
for traps. Nodes keep the line and column of the token that names them, for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from lark import Token, Tree


@dataclass(frozen=True, slots=True)
class Node:
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Literal(Node):
    kind: str  # TRUE FALSE NULL UNDEFINED INTEGER HEX REAL STRING
    text: str


@dataclass(frozen=True, slots=True)
class Property(Node):
    """An application property by name (an ID token)."""

    name: str


@dataclass(frozen=True, slots=True)
class SysProperty(Node):
    """``$name`` (application property ``$name`` first, then ``$body`` query, then system property),
    or ``{$name}`` when ``escaped`` (skips application properties)."""

    name: str  # with the leading '$'
    escaped: bool


@dataclass(frozen=True, slots=True)
class Call(Node):
    name: str
    args: tuple[Expr, ...]
    args_text: str  # the argument list's tokens, joined: twin_change_includes reads its path from it


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str  # '-' or 'not'
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str  # * / % + - || < <= > >= = != <> and or ??
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Nested(Node):
    """A parenthesised expression; kept so that lint can tell ``NOT (a = b)`` from ``NOT a = b``."""

    expr: Expr


@dataclass(frozen=True, slots=True)
class Empty(Node):
    """A blank condition: edgeHub compiles it to undefined."""


Expr = Literal | Property | SysProperty | Call | Unary | Binary | Nested | Empty

_BINARY_RULES = {"coalesce", "or_", "and_", "equality", "comparison", "additive", "multiplicative"}


def _pos(token: Token) -> tuple[int, int]:
    return token.line or 1, token.column or 1


def _token(node: Tree[Token] | Token) -> Token:
    """A child the grammar makes a token."""
    assert isinstance(node, Token), node
    return node


def _tokens(tree: Tree[Token] | Token) -> list[Token]:
    if isinstance(tree, Token):
        return [tree]
    return [t for t in tree.scan_values(lambda v: isinstance(v, Token))]


def build(tree: Tree[Token] | Token) -> Expr:
    """Turn a ``condition.lark`` parse tree (its ``start`` rule or any expression) into an Expr."""
    if isinstance(tree, Token):  # pragma: no cover - every token sits inside a rule
        raise TypeError(f"unexpected bare token {tree!r}")
    rule = tree.data
    kids = tree.children
    if rule == "start":
        return build(kids[0])
    if rule == "empty":
        return Empty(1, 1)
    if rule == "literal":
        token = _token(kids[0])
        return Literal(*_pos(token), kind=token.type, text=str(token))
    if rule == "property":
        return Property(*_pos(_token(kids[0])), name=str(kids[0]))
    if rule == "sys_property":
        return SysProperty(*_pos(_token(kids[0])), name=str(kids[0]), escaped=False)
    if rule == "sys_property_escaped":
        return SysProperty(*_pos(_token(kids[0])), name=str(kids[1]), escaped=True)
    if rule == "call":
        name, _lpar, arglist, _rpar = kids
        args: tuple[Expr, ...] = ()
        text = ""
        if isinstance(arglist, Tree):
            args = tuple(build(a) for a in arglist.children if isinstance(a, Tree))
            text = "".join(str(t) for t in _tokens(arglist))
        return Call(*_pos(_token(name)), name=str(name), args=args, args_text=text)
    if rule == "nested":
        return Nested(*_pos(_token(kids[0])), expr=build(kids[1]))
    if rule == "negate":
        return Unary(*_pos(_token(kids[0])), op="-", operand=build(kids[1]))
    if rule == "not_":
        return Unary(*_pos(_token(kids[0])), op="not", operand=build(kids[1]))
    if rule in _BINARY_RULES:
        left, op, right = kids
        op_token = _token(op if isinstance(op, Token) else op.children[0])
        return Binary(*_pos(op_token), op=str(op_token).lower(), left=build(left), right=build(right))
    raise ValueError(f"unknown rule {rule!r}")  # pragma: no cover - grammar and builder go together


def walk(expr: Expr):
    """Every node of ``expr``, parents before children."""
    yield expr
    if isinstance(expr, Binary):
        yield from walk(expr.left)
        yield from walk(expr.right)
    elif isinstance(expr, Unary):
        yield from walk(expr.operand)
    elif isinstance(expr, Nested):
        yield from walk(expr.expr)
    elif isinstance(expr, Call):
        for arg in expr.args:
            yield from walk(arg)
