"""The lexer reproduces edgeHub's token boundaries, which decide many routing surprises."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgehub_emu.routing import lexer
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


ROUTE_ALPHABET = st.sampled_from(list("aAeEfFnNoOsStTuUwWxX019.-+*/%=!<>|?$()[]{},;:@\\\"' \t\n_#&é\x00"))
KEYWORDS = ["select", "FROM", "Where", "INTO", "and", "Or", "NOT", "true", "TRUE", "false", "null"]
KEYWORDS += ["undefined"]
PIECES = ["fromage", "a[0]", "x]", "é", "e5", "E", "_", "'", "$x", "-", "1", " ", "/", "(", "=", "#"]
WORDS = st.sampled_from([*KEYWORDS, *PIECES])

route_like_text = (
    st.lists(ROUTE_ALPHABET, max_size=60).map("".join)
    | st.lists(WORDS, max_size=20).map("".join)
    | st.text(max_size=60)
)


def every_rule_everywhere(source: str) -> list[tuple[str, str]]:
    """The lexer without its first-character table: each rule tried at each position."""
    out, pos = [], 0
    while pos < len(source):
        best_kind, best_len = "", 0
        for kind, pattern in lexer._RULES:
            m = pattern.match(source, pos)
            if m is not None and m.end() - pos > best_len:
                best_kind, best_len = kind, m.end() - pos
        if best_kind not in lexer.SKIPPED:
            out.append((best_kind, source[pos : pos + best_len]))
        pos += best_len
    return out


@given(route_like_text)
def test_the_lexer_covers_every_character_once_with_only_white_space_between(text: str):
    lexed = tokenize(text)
    position = 0
    for token in sorted([*lexed.tokens, *lexed.comments], key=lambda t: t.start_pos):
        assert text[position : token.start_pos].strip(" \t\r\n") == ""
        assert text[token.start_pos : token.end_pos] == str(token)
        position = token.end_pos
    assert text[position:].strip(" \t\r\n") == ""


@settings(max_examples=400)
@example("a != b <> c <= d >= e || f ?? g /* x */ $h {$i} 'j'AND -1.5e3 0x1F undefined")
@example("SELECT * FROM /messages/* WHERE a[0]=true AND nullx = null INTO $upstream")
@given(route_like_text)
def test_the_first_character_table_changes_no_token(text: str):

    assert [(t.type, str(t)) for t in tokenize(text).tokens] == every_rule_everywhere(text)


@pytest.mark.parametrize("keyword", ["select", "FROM", "Where", "into", "AnD", "oR", "NoT"])
def test_keywords_are_case_insensitive(keyword: str):
    assert kinds(keyword)[0][0] != "ID"
