"""The lexer reproduces edgeHub's token boundaries, which decide many routing surprises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub_emu.routing.lexer import tokenize


def kinds(text: str) -> list[tuple[str, str]]:
    return [(t.type, str(t)) for t in tokenize(text).tokens]


def test_operator_characters_belong_to_identifiers():
    assert kinds("a-b x+1 5. a||b") == [("ID", "a-b"), ("ID", "x+1"), ("ID", "5."), ("ID", "a||b")]


def test_bang_equals_without_spaces_is_identifier_then_equals():
    assert kinds("x!=y") == [("ID", "x!"), ("OP_EQ", "="), ("ID", "y")]


def test_string_glued_to_keyword_is_one_identifier():
    assert kinds("key1='value1'AND key2") == [
        ("ID", "key1"),
        ("OP_EQ", "="),
        ("ID", "'value1'AND"),
        ("ID", "key2"),
    ]


def test_ties_go_to_the_earlier_rule():
    # '-7' is both an integer and an identifier of the same length: the integer rule comes first.
    assert kinds("-7 true and 1e-6 0x1F") == [
        ("INTEGER", "-7"),
        ("TRUE", "true"),
        ("AND", "and"),
        ("REAL", "1e-6"),
        ("HEX", "0x1F"),
    ]


def test_longer_identifier_beats_keyword():
    assert kinds("notes TRUE trueish null_value") == [
        ("ID", "notes"),
        ("ID", "TRUE"),
        ("ID", "trueish"),
        ("ID", "null_value"),
    ]


def test_system_property_may_contain_brackets_and_dashes():
    assert kinds("$body.a[0] $absolute-expiry-time") == [
        ("SYS_PROP", "$body.a[0]"),
        ("SYS_PROP", "$absolute-expiry-time"),
    ]


def test_comment_is_hidden_and_slash_star_without_end_is_division():
    lexed = tokenize("a /* note */ b")
    assert [str(t) for t in lexed.tokens] == ["a", "b"]
    assert [str(c) for c in lexed.comments] == ["/* note */"]
    assert kinds("FROM /* INTO") == [("FROM", "FROM"), ("OP_DIV", "/"), ("OP_MUL", "*"), ("INTO", "INTO")]


def test_unterminated_string_and_unknown_characters():
    assert kinds("'abc") == [("UNTERMINATED_STRING", "'abc")]
    assert kinds("a ; b")[1] == ("UNKNOWN_CHAR", ";")


def test_positions_are_one_based_lines_and_columns():
    token = tokenize("a =\n  b").tokens[2]
    assert (token.line, token.column) == (2, 3)


@given(st.text(max_size=80))
def test_lexer_consumes_any_text(text: str):
    lexed = tokenize(text)
    covered = sum(len(str(t)) for t in [*lexed.tokens, *lexed.comments])
    assert covered == len("".join(text.split())) or covered <= len(text)


@pytest.mark.parametrize("keyword", ["select", "FROM", "Where", "into", "AnD", "oR", "NoT"])
def test_keywords_are_case_insensitive(keyword: str):
    assert kinds(keyword)[0][0] != "ID"
