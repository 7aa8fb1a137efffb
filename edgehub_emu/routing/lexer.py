"""The lexer of edgeHub's route and condition languages, rule for rule.

edgeHub's ANTLR lexer (``GrammarLexer.g4``) decides many of the surprises users meet: identifiers may
contain ``- + * % ! & | . ' $ #``, so ``a-b``, ``x!`` and ``'value1'AND`` are single identifiers and
operators other than ``/ = < > <> ( )`` need spaces around them. ANTLR picks the longest match at each
position and, on a tie, the rule listed first. This module does exactly that, with the rules in
edgeHub's order, and hands the tokens to the lark LALR parser (``parser.py``).

It must not know about the parse: it only turns text into tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lark import Token

from .errors import Problem

# (token type, pattern), in edgeHub's rule order; the order breaks ties between equal-length matches.
_I = re.IGNORECASE
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("SELECT", re.compile(r"select", _I)),
    ("FROM", re.compile(r"from", _I)),
    ("WHERE", re.compile(r"where", _I)),
    ("INTO", re.compile(r"into", _I)),
    (
        "STRING",
        re.compile(
            r'"(?:\\(?:["\'\\]|u[0-9a-fA-F]{4})|[^"\\])*"|\'(?:\\(?:["\'\\]|u[0-9a-fA-F]{4})|[^\'\\])*\''
        ),
    ),
    (
        "UNTERMINATED_STRING",
        re.compile(
            r'"(?:\\(?:["\'\\]|u[0-9a-fA-F]{4})|[^"\\])*|\'(?:\\(?:["\'\\]|u[0-9a-fA-F]{4})|[^\'\\])*'
        ),
    ),
    ("INTEGER", re.compile(r"-?[0-9]+")),
    ("HEX", re.compile(r"0[xX][0-9a-fA-F]+")),
    ("REAL", re.compile(r"-?[0-9]*\.[0-9]+(?:[eE][+\-]?[0-9]+)?|-?[0-9]*[eE][+\-]?[0-9]+")),
    ("TRUE", re.compile(r"true")),
    ("FALSE", re.compile(r"false")),
    ("NULL", re.compile(r"null")),
    ("UNDEFINED", re.compile(r"undefined")),
    ("LPAR", re.compile(r"\(")),
    ("RPAR", re.compile(r"\)")),
    ("COMMA", re.compile(r",")),
    ("PLUS", re.compile(r"\+")),
    ("MINUS", re.compile(r"-")),
    ("OP_MUL", re.compile(r"\*")),
    ("OP_DIV", re.compile(r"/")),
    ("OP_MOD", re.compile(r"%")),
    ("AND", re.compile(r"and", _I)),
    ("OR", re.compile(r"or", _I)),
    ("NOT", re.compile(r"not", _I)),
    ("OP_EQ", re.compile(r"=")),
    ("OP_NE1", re.compile(r"!=")),
    ("OP_NE2", re.compile(r"<>")),
    ("OP_LE", re.compile(r"<=")),
    ("OP_GE", re.compile(r">=")),
    ("OP_GT", re.compile(r">")),
    ("OP_LT", re.compile(r"<")),
    ("OP_CONCAT", re.compile(r"\|\|")),
    ("OP_COALESCE", re.compile(r"\?\?")),
    ("SYS_PROP", re.compile(r"\$[^()<>@,;:\\\"/?={} \t\n\r]+")),
    ("ID", re.compile(r"[^()<>@,;:\\\"/\[\]?={} \t\n\r]+")),
    ("QUERY_PATH", re.compile(r"[^()<>@,;:\\\"/?={} \t\n\r]+")),
    ("WS", re.compile(r"[ \t\r\n]+")),
    ("COMMENT", re.compile(r"/\*.*?\*/", re.DOTALL)),
    # Literal tokens of the parser rules ({$prop}); nothing else can match these characters.
    ("LBRACE", re.compile(r"\{")),
    ("RBRACE", re.compile(r"\}")),
    ("UNKNOWN_CHAR", re.compile(r".", re.DOTALL)),
]

# What each rule's match can start with (a superset is fine, a subset is a bug; a test compares the
# lexer with one that tries every rule everywhere). Most positions need three or four rules, not 40.
_ANY = re.compile(r".", re.DOTALL)
_FIRST: dict[str, re.Pattern[str]] = {
    "SELECT": re.compile(r"[sS]"),
    "FROM": re.compile(r"[fF]"),
    "WHERE": re.compile(r"[wW]"),
    "INTO": re.compile(r"[iI]"),
    "STRING": re.compile(r"[\"']"),
    "UNTERMINATED_STRING": re.compile(r"[\"']"),
    "INTEGER": re.compile(r"[-0-9]"),
    "HEX": re.compile(r"0"),
    "REAL": re.compile(r"[-0-9.eE]"),
    "TRUE": re.compile(r"t"),
    "FALSE": re.compile(r"f"),
    "NULL": re.compile(r"n"),
    "UNDEFINED": re.compile(r"u"),
    "AND": re.compile(r"[aA]"),
    "OR": re.compile(r"[oO]"),
    "NOT": re.compile(r"[nN]"),
    "OP_NE1": re.compile(r"!"),
    "OP_NE2": re.compile(r"<"),
    "OP_LE": re.compile(r"<"),
    "OP_GE": re.compile(r">"),
    "OP_CONCAT": re.compile(r"\|"),
    "OP_COALESCE": re.compile(r"\?"),
    "SYS_PROP": re.compile(r"\$"),
    "ID": _ANY,
    "QUERY_PATH": _ANY,
    "WS": re.compile(r"[ \t\r\n]"),
    "COMMENT": re.compile(r"/"),
    "UNKNOWN_CHAR": _ANY,
}
_BY_FIRST: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

# Words: where only keywords, ID, QUERY_PATH and UNKNOWN_CHAR can start, the outcome follows from two
# matches. QUERY_PATH's characters include all of ID's, so it is never shorter; on equal length ID wins,
# and a keyword wins only when the whole ID is that keyword (keywords are made of ID characters).
_KEYWORDS_ANY_CASE = {"select": "SELECT", "from": "FROM", "where": "WHERE", "into": "INTO"}
_KEYWORDS_ANY_CASE |= {"and": "AND", "or": "OR", "not": "NOT"}
_KEYWORDS_LOWER = {"true": "TRUE", "false": "FALSE", "null": "NULL", "undefined": "UNDEFINED"}
_WORD_RULES = {*_KEYWORDS_ANY_CASE.values(), *_KEYWORDS_LOWER.values(), "ID", "QUERY_PATH", "UNKNOWN_CHAR"}
_RULE = dict(_RULES)
_ID, _QUERY_PATH = _RULE["ID"], _RULE["QUERY_PATH"]
_WORD: list[tuple[str, re.Pattern[str]]] = []  # the marker a word-start character gets in _BY_FIRST


def _rules_for(char: str) -> list[tuple[str, re.Pattern[str]]]:
    rules = _BY_FIRST.get(char)
    if rules is None:
        rules = [
            (kind, pattern)
            for kind, pattern in _RULES
            if (_FIRST[kind].match(char) if kind in _FIRST else pattern.match(char)) is not None
        ]
        kinds = {kind for kind, _ in rules}
        if kinds <= _WORD_RULES and _ID.match(char) is not None:
            rules = _WORD
        else:  # UNKNOWN_CHAR, one character, last in order: it wins only where nothing else matches
            rules = [(kind, pattern) for kind, pattern in rules if kind != "UNKNOWN_CHAR"]
        if len(_BY_FIRST) < 4096:
            _BY_FIRST[char] = rules
    return rules


def _word(source: str, pos: int) -> tuple[str, int]:
    id_end = _ID.match(source, pos).end()  # type: ignore[union-attr]  # a word start is an ID start
    if source[id_end : id_end + 1] in _PATH_ONLY:  # QUERY_PATH differs from ID only by '[' and ']'
        path_end = _QUERY_PATH.match(source, pos).end()  # type: ignore[union-attr]
        if path_end > id_end:
            return "QUERY_PATH", path_end - pos
    if id_end - pos <= 9:
        text = source[pos:id_end]
        kind = _KEYWORDS_LOWER.get(text) or _KEYWORDS_ANY_CASE.get(text.lower())
        if kind is not None:
            return kind, id_end - pos
    return "ID", id_end - pos


_PATH_ONLY = ("[", "]")


SKIPPED = frozenset({"WS", "COMMENT"})
"""Token types the parser never sees (ANTLR: ``-> skip`` and the hidden channel)."""


@dataclass(frozen=True, slots=True)
class Lexed:
    """The tokens of a text, plus the hidden ones (comments), which lint wants to see."""

    tokens: list[Token]
    comments: list[Token]


def _token(kind: str, text: str, start: int, source: str) -> Token:
    line = source.count("\n", 0, start) + 1
    column = start - (source.rfind("\n", 0, start) + 1) + 1
    end = start + len(text)
    return Token(kind, text, start_pos=start, line=line, column=column, end_pos=end)


_new_token = Token._future_new  # Token() without its keyword-argument shim: a route has dozens of tokens


def tokenize(source: str) -> Lexed:
    """Split ``source`` into tokens exactly as edgeHub's lexer does (longest match, then rule order)."""
    tokens: list[Token] = []
    comments: list[Token] = []
    pos = 0
    n = len(source)
    multiline = "\n" in source
    line, line_start = 1, 0  # kept as we go: a line and column for each token without rescanning
    by_first = _BY_FIRST
    while pos < n:
        best_kind = ""
        best_len = 0
        char = source[pos]
        rules = by_first.get(char)
        if rules is None:
            rules = _rules_for(char)
        if rules is _WORD:
            best_kind, best_len = _word(source, pos)
        else:
            for kind, pattern in rules:
                m = pattern.match(source, pos)
                if m is not None:
                    length = m.end() - pos
                    if length > best_len:
                        best_kind, best_len = kind, length
            if not best_len:
                best_kind, best_len = "UNKNOWN_CHAR", 1

        end = pos + best_len
        if best_kind != "WS":
            token = _new_token(best_kind, source[pos:end], pos, line, pos - line_start + 1, None, None, end)
            (comments if best_kind == "COMMENT" else tokens).append(token)
        if multiline:
            newlines = source.count("\n", pos, end)
            if newlines:
                line += newlines
                line_start = source.rfind("\n", pos, end) + 1
        pos = end
    return Lexed(tokens, comments)


def describe(token: Token) -> str:
    """How a token reads in an error message."""
    return f"'{token.value}'" if token.type != "$END" else "the end of the text"


def unknown_char_problem(token: Token) -> Problem:
    return Problem(token.line or 1, token.column or 1, f"unexpected character {describe(token)}")
