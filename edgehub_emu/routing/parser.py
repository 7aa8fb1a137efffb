"""Parsing of route strings and conditions with the lark grammars in ``grammar/``.

edgeHub's grammars have no end anchor: ANTLR parses the longest prefix that forms a route (or a
condition) and ignores what follows. We reproduce that with lark's interactive LALR parser: feed
tokens while the parser accepts them, then end the input. A few tokens are errors even where they
would merely end the prefix, because edgeHub's condition grammar has explicit error alternatives for
them: an unmatched ``)``, an unknown character, an unterminated string.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput
from lark.lexer import Lexer

from .errors import Problem, RouteSyntaxError
from .lexer import describe, tokenize

_ALWAYS_ERRORS = {
    "RPAR": "unmatched closing ')'",
    "UNKNOWN_CHAR": "unexpected character {tok}",
    "UNTERMINATED_STRING": "unterminated string {tok}",
}


class _TokenStream(Lexer):
    """A lark 'lexer' that passes through tokens we made already (lexer.py does the lexing)."""

    def __init__(self, conf: object) -> None:  # lark passes its lexer configuration
        pass

    def lex(self, data):  # type: ignore[override]
        yield from data


@cache
def _parser(grammar: str) -> Lark:
    text = resources.files(__package__).joinpath("grammar", grammar).read_text(encoding="utf-8")
    return Lark(text, parser="lalr", lexer=_TokenStream, maybe_placeholders=True)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parse tree and the tokens the parser consumed; ``rest`` holds the ignored trailing tokens."""

    tree: Tree
    consumed: list[Token]
    rest: list[Token]
    comments: list[Token]


def _problem(token: Token, message: str) -> Problem:
    return Problem(token.line or 1, token.column or 1, message)


def _end_token(text: str, last: Token | None) -> Token:
    line = text.count("\n") + 1
    column = len(text) - (text.rfind("\n") + 1) + 1
    return Token("$END", "", start_pos=len(text), line=line, column=column)


def _glued_operator_hint(token: Token) -> str:
    text = str(token)
    if token.type != "ID":
        return ""
    if "&&" in text or "||" in text or "!" in text:
        return f" ({text!r} is one name: write AND, OR, NOT and put spaces around operators)"
    if "'" in text:
        return f" ({text!r} is one name: put a space after a string literal)"
    return ""


@lru_cache(maxsize=4096)
def parse_prefix(text: str, grammar: str, *, condition: bool) -> Parsed:
    """Parse the longest accepted prefix of ``text``; raise RouteSyntaxError if it does not form one.

    ``condition`` turns on the error alternatives of edgeHub's condition grammar for the token where
    the prefix stops (the route grammar has none: anything after the sink is ignored).
    """
    lexed = tokenize(text)
    tokens = lexed.tokens
    parser = _parser(grammar)
    try:  # most texts are one whole route or condition: one plain parse, no token-by-token probing
        return Parsed(parser.parse(tokens), list(tokens), [], lexed.comments)
    except UnexpectedInput:
        pass
    interactive = parser.parse_interactive([])

    consumed: list[Token] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        accepted = interactive.accepts()
        if token.type not in accepted:
            template = _ALWAYS_ERRORS.get(token.type) if condition else None
            if template is None and not consumed:
                template = "unexpected {tok}"
            if template is not None:
                raise RouteSyntaxError(text, [_problem(token, template.format(tok=describe(token)))])
            break
        interactive.feed_token(token)
        consumed.append(token)
        index += 1
    rest = tokens[index:]
    try:
        tree = interactive.feed_eof(consumed[-1] if consumed else None)
    except UnexpectedInput:
        stop = rest[0] if rest else _end_token(text, consumed[-1] if consumed else None)
        expected = sorted(t for t in interactive.accepts() if t != "$END")
        hint = f"; expected one of {', '.join(expected)}" if expected and len(expected) <= 8 else ""
        hint += _glued_operator_hint(stop) or (_glued_operator_hint(consumed[-1]) if consumed else "")
        raise RouteSyntaxError(text, [_problem(stop, f"unexpected {describe(stop)}{hint}")]) from None
    return Parsed(tree, consumed, rest, lexed.comments)
