"""One route: ``[SELECT *] FROM source [WHERE condition] INTO sink``, parsed and compiled.

Parsing follows edgeHub's ``Route.g4`` (see ``grammar/route.lark``); the condition is then compiled
from its own text, as edgeHub does, and the sink becomes an endpoint. A route whose condition or sink
fails is an error for the whole configuration (``manifest/`` collects them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from lark import Token

from . import ast
from .compiler import CompiledCondition, compile_condition
from .endpoints import Endpoint, ModuleEndpoint, UpstreamEndpoint, parse_brokered_address
from .errors import EndpointError, Problem
from .lexer import tokenize
from .parser import parse_prefix
from .precedence import parse_whole

DEFAULT_PRIORITY = 2_000_000_000
"""edgeHub's priority for a route that gives none: lower than 0–9, the lowest."""


@dataclass(frozen=True, slots=True)
class Sink:
    """The sink as written: ``$name``, or ``function("address")``."""

    system: str | None = None
    function: str | None = None
    address: str | None = None
    line: int = 1
    column: int = 1


@dataclass(frozen=True, slots=True)
class ParsedRoute:
    """The parts of a route string, before compilation. ``source`` is normalised as edgeHub stores it."""

    text: str
    source: str
    condition: str
    sink: Sink
    ignored_tail: str = ""
    comments: tuple[str, ...] = ()
    condition_tree: ast.Expr | None = field(default=None, compare=False, repr=False)
    """The condition's tree when the route's own tokens gave it (the plain shape); else compiled from
    ``condition``."""


def normalize_source(path: str) -> str:
    """edgeHub's stored form of a ``FROM`` path: trailing ``*`` and ``/`` dropped, one ``/`` added."""
    text = path.strip().rstrip("*")
    if len(text) > 1:
        text = text.rstrip("/") + "/"
    return text


def source_matches(route_source: str, message_source: str) -> bool:
    """Whether a normalised route source matches a message source (prefix match, any case)."""
    return (message_source + "/").lower().startswith(route_source.lower())


def _span(text: str, tokens: list[Token]) -> str:
    if not tokens:
        return ""
    return text[tokens[0].start_pos : tokens[-1].end_pos]


@dataclass(frozen=True, slots=True)
class _Plain:
    tokens: list[Token]
    rest: list[Token]
    comments: list[Token]
    condition: ast.Expr | None  # None: no WHERE


def _plain_route(text: str) -> _Plain | None:
    """The tokens of ``text`` when it has the plain shape, ``[SELECT *] FROM /a/b [WHERE condition] INTO
    sink``, with its condition's tree parsed from those same tokens (the text is lexed once); None when
    it needs ``route.lark`` (which then also gives edgeHub's error)."""
    lexed = tokenize(text)
    tokens = lexed.tokens
    kinds = [t.type for t in tokens]
    i = 2 if kinds[:2] == ["SELECT", "OP_MUL"] else 0
    if i >= len(kinds) or kinds[i] != "FROM":
        return None
    i += 1
    source_start = i
    while i + 1 < len(kinds) and kinds[i] == "OP_DIV" and kinds[i + 1] in ("OP_MUL", "ID"):
        i += 2
    if i == source_start or i >= len(kinds):
        return None
    tree = None
    if kinds[i] == "WHERE":
        if "INTO" not in kinds[i + 2 :]:
            return None
        into = kinds.index("INTO", i + 2)
        tree = parse_whole(tokens[i + 1 : into])
        if tree is None:
            return None
        i = into
    if kinds[i] != "INTO":
        return None
    i += 1
    if kinds[i : i + 1] == ["SYS_PROP"]:
        end = i + 1
    elif kinds[i : i + 4] == ["ID", "LPAR", "STRING", "RPAR"]:
        end = i + 4
    else:
        return None
    return _Plain(tokens[:end], tokens[end:], lexed.comments, tree)


@lru_cache(maxsize=4096)
def parse_route(text: str) -> ParsedRoute:
    """Split a route string into source, condition text and sink; raise RouteSyntaxError if invalid.
    Remembered: a manifest is validated and then compiled, and reloads repeat most of its routes."""
    plain = _plain_route(text)
    tree = None
    if plain is None:
        parsed = parse_prefix(text, "route.lark", condition=False)
        tokens, rest, comments = parsed.consumed, parsed.rest, parsed.comments
    else:
        tokens, rest, comments, tree = plain.tokens, plain.rest, plain.comments, plain.condition

    kinds = [t.type for t in tokens]
    start = kinds.index("FROM") + 1
    into = kinds.index("INTO")
    where = kinds.index("WHERE") if "WHERE" in kinds else into
    source = "".join(str(t) for t in tokens[start:where])
    condition = _span(text, tokens[where + 1 : into]) if where != into else "true"
    sink_tokens = tokens[into + 1 :]
    first = sink_tokens[0]
    if first.type == "SYS_PROP":
        sink = Sink(system=str(first), line=first.line or 1, column=first.column or 1)
    else:
        sink = Sink(
            function=str(first),
            address=str(sink_tokens[2])[1:-1],
            line=first.line or 1,
            column=first.column or 1,
        )
    tail = text[rest[0].start_pos :].strip() if rest else ""
    return ParsedRoute(
        text=text,
        source=normalize_source(source),
        condition=condition,
        sink=sink,
        ignored_tail=tail,
        comments=tuple(str(c) for c in comments),
        condition_tree=tree,
    )


def make_endpoint(sink: Sink, text: str, device_id: str) -> Endpoint:
    """The endpoint for a sink; raise EndpointError as edgeHub refuses to create it."""
    if sink.system is not None:
        if sink.system.lower() == "$upstream":
            return UpstreamEndpoint()
        problem = f"unknown system endpoint '{sink.system}': only $upstream is supported"
        raise EndpointError(text, [Problem(sink.line, sink.column, problem)])
    assert sink.function is not None and sink.address is not None
    if sink.function.lower() != "brokeredendpoint":
        problem = (
            f"unknown endpoint '{sink.function}': only BrokeredEndpoint(\"/modules/<module>/inputs/<input>\")"
        )
        raise EndpointError(text, [Problem(sink.line, sink.column, problem)])
    parts = parse_brokered_address(sink.address)
    if parts is None:
        problem = (
            f'BrokeredEndpoint address "{sink.address}" must have the form /modules/<module>/inputs/<input>'
        )
        raise EndpointError(text, [Problem(sink.line, sink.column, problem)])
    module, input_name = parts
    return ModuleEndpoint(device_id, module, input_name)


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled route, ready for the router."""

    name: str
    text: str
    source: str
    condition: CompiledCondition
    endpoint: Endpoint
    priority: int = DEFAULT_PRIORITY
    time_to_live_secs: int = 0  # 0: the global time-to-live
    parsed: ParsedRoute | None = field(default=None, compare=False, repr=False)

    def matches_source(self, message_source: str) -> bool:
        return source_matches(self.source, message_source)

    @property
    def module_endpoint(self) -> ModuleEndpoint | None:
        return self.endpoint if isinstance(self.endpoint, ModuleEndpoint) else None


def compile_route(
    name: str,
    text: str,
    *,
    device_id: str,
    priority: int | None = None,
    time_to_live_secs: int = 0,
) -> Route:
    """Parse and compile a route string; raise a RouteError subclass listing what is wrong."""
    parsed = parse_route(text)
    condition = compile_condition(parsed.condition, parsed.source, tree=parsed.condition_tree)
    endpoint = make_endpoint(parsed.sink, text, device_id)
    return Route(
        name=name,
        text=text,
        source=parsed.source,
        condition=condition,
        endpoint=endpoint,
        priority=DEFAULT_PRIORITY if priority is None else priority,
        time_to_live_secs=time_to_live_secs,
        parsed=parsed,
    )
