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


def tokenize(source: str) -> Lexed:
    """Split ``source`` into tokens exactly as edgeHub's lexer does (longest match, then rule order)."""
    tokens: list[Token] = []
    comments: list[Token] = []
    pos = 0
    n = len(source)
    while pos < n:
        best_kind = ""
        best_len = 0
        for kind, pattern in _RULES:
            m = pattern.match(source, pos)
            if m is not None and m.end() - pos > best_len:
                best_kind, best_len = kind, m.end() - pos
        text = source[pos : pos + best_len]
        if best_kind == "COMMENT":
            comments.append(_token(best_kind, text, pos, source))
        elif best_kind != "WS":
            tokens.append(_token(best_kind, text, pos, source))
        pos += best_len
    return Lexed(tokens, comments)


def describe(token: Token) -> str:
    """How a token reads in an error message."""
    return f"'{token.value}'" if token.type != "$END" else "the end of the text"


def unknown_char_problem(token: Token) -> Problem:
    return Problem(token.line or 1, token.column or 1, f"unexpected character {describe(token)}")
