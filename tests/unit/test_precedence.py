"""The precedence-climbing parser gives exactly the LALR parser's tree, and answers for exactly the
token lists the LALR parser takes whole."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgehub_emu.routing import ast
from edgehub_emu.routing.errors import RouteSyntaxError
from edgehub_emu.routing.lexer import tokenize
from edgehub_emu.routing.parser import parse_prefix
from edgehub_emu.routing.precedence import parse_whole

PIECES = [
    *["a", "b", "$x", "$body.t", "{$y}", "{", "}", "1", "-2", "0x1F", "1.5e3", "'s'", '"t"'],
    *["true", "false", "null", "undefined", "(", ")", ",", "f(", "as_number("],
    *["+", "-", "*", "/", "%", "=", "!=", "<>", "<", "<=", ">", ">=", "||", "??"],
    *["AND", "or", "NOT", "not"],
]
token_soup = st.lists(st.sampled_from(PIECES), max_size=14).map(" ".join)

OPERATORS = ["+", "-", "*", "/", "%", "=", "!=", "<>", "<", "<=", ">", ">=", "||", "??", "AND", "OR"]
atoms = st.sampled_from(["a", "$x", "{$y}", "1", "2.5", "'s'", "true", "null", "undefined", "f()"])
expressions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(OPERATORS), inner).map(" ".join),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"NOT {e}"),
        inner.map(lambda e: f"-{e}"),
        st.lists(inner, min_size=1, max_size=3).map(lambda args: f"g({', '.join(args)})"),
    ),
    max_leaves=12,
)


def lalr(text: str) -> ast.Expr | None:
    try:
        parsed = parse_prefix(text, "condition.lark", condition=True)
    except RouteSyntaxError:
        return None
    return None if parsed.rest else ast.build(parsed.tree)


@settings(max_examples=600)
@example("a = 1 AND NOT b <> 'x' OR $body.t > -2 ?? c")
@example("f(a, (b + 1) * 2, {$y}) || 'z'")
@example("")
@example("a b")
@example("f(,)")
@given(expressions | token_soup)
def test_the_same_tree_as_the_lalr_parser_for_the_same_texts(text: str):
    assert parse_whole(tokenize(text).tokens) == lalr(text)


def test_every_pair_of_operators_groups_as_the_lalr_parser_groups_it():
    for first in OPERATORS:
        for second in OPERATORS:
            for text in (f"a {first} b {second} c", f"NOT a {first} -b {second} c"):
                assert parse_whole(tokenize(text).tokens) == lalr(text), text
