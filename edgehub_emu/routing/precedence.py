"""A whole condition, parsed straight into its typed tree by precedence climbing.

Most conditions in a manifest are well formed, and for those the LALR parser (``parser.py``) does more
work than the answer needs: a reduction for every precedence level an operand passes through, a lark
tree, then the tree turned into ``ast`` nodes. This parser builds the same ``ast`` nodes in one pass. It
answers only for token lists that are exactly one expression of ``condition.lark``; for anything else
it returns None and the LALR parser decides (it finds the prefix edgeHub accepts, or edgeHub's error).
A property test holds the two to the same trees.
"""

from __future__ import annotations

from lark import Token

from .ast import Binary, Call, Empty, Expr, Literal, Nested, Property, SysProperty, Unary

_POWER = {  # binding power of each binary operator, lowest first (condition.lark's levels); all left-assoc
    "OP_COALESCE": 1,
    "OR": 2,
    "AND": 3,
    "OP_EQ": 4,
    "OP_NE1": 4,
    "OP_NE2": 4,
    "OP_LT": 5,
    "OP_LE": 5,
    "OP_GT": 5,
    "OP_GE": 5,
    "PLUS": 6,
    "MINUS": 6,
    "OP_CONCAT": 6,
    "OP_MUL": 7,
    "OP_DIV": 7,
    "OP_MOD": 7,
}
_LITERALS = frozenset({"TRUE", "FALSE", "NULL", "UNDEFINED", "INTEGER", "HEX", "REAL", "STRING"})
_END = Token("$END", "")


class _NotWhole(Exception):
    """The tokens are not exactly one expression."""


class _Parser:
    __slots__ = ("first_column", "first_line", "position", "tokens")

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.position = 0
        self.first_line = tokens[0].line or 1
        self.first_column = tokens[0].column or 1

    def at(self, token: Token) -> tuple[int, int]:
        """Line and column of ``token`` counted from the first token, where the condition's text starts:
        the tokens may be a slice of a whole route's, and messages name places in the condition."""
        line = token.line or 1
        if line == self.first_line:
            return 1, (token.column or 1) - self.first_column + 1
        return line - self.first_line + 1, token.column or 1

    def peek(self) -> Token:
        tokens, position = self.tokens, self.position
        return tokens[position] if position < len(tokens) else _END

    def take(self, kind: str) -> Token:
        token = self.peek()
        if token.type != kind:
            raise _NotWhole
        self.position += 1
        return token

    def expression(self, min_power: int) -> Expr:
        left = self.unary()
        power_of = _POWER.get
        while True:
            op = self.peek()
            power = power_of(op.type)
            if power is None or power < min_power:
                return left
            self.position += 1
            right = self.expression(power + 1)
            line, column = self.at(op)
            left = Binary(line, column, op=str(op).lower(), left=left, right=right)

    def unary(self) -> Expr:
        token = self.peek()
        if token.type == "MINUS" or token.type == "NOT":
            self.position += 1
            operand = self.unary()
            line, column = self.at(token)
            return Unary(line, column, op="-" if token.type == "MINUS" else "not", operand=operand)
        return self.primary()

    def primary(self) -> Expr:
        token = self.peek()
        kind = token.type
        self.position += 1
        line, column = self.at(token)
        if kind in _LITERALS:
            return Literal(line, column, kind=kind, text=str(token))
        if kind == "ID":
            if self.peek().type != "LPAR":
                return Property(line, column, name=str(token))
            self.position += 1
            start = self.position
            args: list[Expr] = []
            if self.peek().type != "RPAR":
                args.append(self.expression(0))
                while self.peek().type == "COMMA":
                    self.position += 1
                    args.append(self.expression(0))
            text = "".join(str(t) for t in self.tokens[start : self.position])
            self.take("RPAR")
            return Call(line, column, name=str(token), args=tuple(args), args_text=text)
        if kind == "SYS_PROP":
            return SysProperty(line, column, name=str(token), escaped=False)
        if kind == "LBRACE":
            name = self.take("SYS_PROP")
            self.take("RBRACE")
            return SysProperty(line, column, name=str(name), escaped=True)
        if kind == "LPAR":
            inner = self.expression(0)
            self.take("RPAR")
            return Nested(line, column, expr=inner)
        raise _NotWhole


def parse_whole(tokens: list[Token]) -> Expr | None:
    """The tree of ``tokens`` (comments and white space already left out) when they are exactly one
    condition; None otherwise. The tokens may come from a longer text (a route's ``WHERE`` clause):
    the tree's lines and columns count from the first token, as if the condition had been lexed alone."""
    if not tokens:
        return Empty(1, 1)
    parser = _Parser(tokens)
    try:
        expr = parser.expression(0)
    except (_NotWhole, RecursionError):
        return None
    return expr if parser.position == len(tokens) else None
