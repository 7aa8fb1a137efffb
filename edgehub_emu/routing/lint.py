"""Warnings for routes that edgeHub accepts but that rarely mean what their author meant.

Each warning names the trap and the fix: operators without spaces (``a!=b`` is ``(a!) = b``), string
literals glued to a keyword, upper-case literals (``TRUE`` is a property name), ``NOT a = b``, ``$body``
queries without the content type they need, text after the sink or inside ``/* */`` that edgeHub
silently ignores, a ``FROM`` path that no message can have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import ast
from .compiler import parse_condition
from .errors import RouteError
from .lexer import tokenize
from .route import ParsedRoute

_COMPARISONS = {"=", "!=", "<>", "<", "<=", ">", ">="}
_LITERAL_WORDS = {"true", "false", "null", "undefined"}
_ARITHMETIC_IN_NAME = re.compile(r"^-?[0-9.]+[-+*%][0-9.]+$|[0-9)][+*%]|[+*%][0-9(]")
_VALID_SOURCE_ROOTS = ("/messages/", "/twinchangenotifications/")


@dataclass(frozen=True, slots=True)
class RouteWarning:
    """A trap in a route: ``code`` is a short stable name, ``message`` says what happens and the fix."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


def _token_warnings(condition: str) -> list[RouteWarning]:
    out: list[RouteWarning] = []
    tokens = tokenize(condition).tokens
    for i, token in enumerate(tokens):
        text = str(token)
        nxt = str(tokens[i + 1]) if i + 1 < len(tokens) else ""
        if token.type not in ("ID", "SYS_PROP"):
            continue
        if token.type == "ID" and text.lower() in _LITERAL_WORDS and text != text.lower():
            out.append(
                RouteWarning(
                    "uppercase-literal",
                    f"'{text}' is read as an application property name: the literals true, false, null "
                    "and undefined are lower-case only",
                )
            )
        if "'" in text:
            out.append(
                RouteWarning(
                    "glued-string",
                    f"'{text}' is a single identifier, not a string followed by a keyword: "
                    "put a space after the closing quote",
                )
            )
        if text.endswith("!") and nxt == "=":
            out.append(
                RouteWarning(
                    "operator-spacing",
                    f"'{text}{nxt}' is read as ({text}) = ...: '!' belongs to names; "
                    f"write '{text[:-1]} != ...'",
                )
            )
        elif "!" in text or "&&" in text or ("||" in text and text != "||"):
            out.append(
                RouteWarning(
                    "operator-spacing",
                    f"'{text}' is a single identifier: edgeHub needs spaces around operators "
                    "(and AND/OR/NOT instead of && || !)",
                )
            )
        elif token.type == "ID" and _ARITHMETIC_IN_NAME.search(text):
            out.append(
                RouteWarning(
                    "operator-spacing",
                    f"'{text}' is a single identifier, not arithmetic: put spaces around + - * %",
                )
            )
        if token.type == "SYS_PROP" and text.lower() == "$correlationid":
            out.append(
                RouteWarning(
                    "correlation-id",
                    "$correlationId is never set on messages from modules or devices: edgeHub keeps the "
                    "correlation id as $cid",
                )
            )
    return out


def _tree_warnings(tree: ast.Expr, condition: str) -> list[RouteWarning]:
    out: list[RouteWarning] = []
    uses_body = False
    checks_content_type = "$contenttype" in condition.lower()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Binary)
            and node.op in _COMPARISONS
            and isinstance(node.left, ast.Unary)
            and node.left.op == "not"
        ):
            op = node.op
            out.append(
                RouteWarning(
                    "not-precedence",
                    f"NOT binds tighter than '{op}': 'NOT a {op} b' means '(NOT a) {op} b'; "
                    f"write 'NOT (a {op} b)'",
                )
            )
        if isinstance(node, ast.SysProperty) and node.name.lower().startswith("$body."):
            uses_body = True
        if isinstance(node, ast.SysProperty) and node.name.lower().split(".")[0] == "$twin":
            out.append(
                RouteWarning(
                    "twin-in-condition",
                    f"{node.name}: routes cannot see module twins (IoT Hub's $twin queries are not "
                    "edgeHub's); edgeHub reads it as a system property no message has, so the condition "
                    "is undefined and the message is not routed",
                )
            )
    if uses_body and not checks_content_type:
        out.append(
            RouteWarning(
                "body-content-type",
                "$body queries read the body only when the message has contentType 'application/json' "
                "and contentEncoding utf-8, utf-16 or utf-32 (set both on the SDK message); otherwise "
                "the condition is undefined and the message is not routed",
            )
        )
    bare = tree.expr if isinstance(tree, ast.Nested) else tree
    if isinstance(bare, ast.Property) or (
        isinstance(bare, ast.Literal) and bare.kind in ("STRING", "INTEGER", "REAL", "HEX")
    ):
        out.append(
            RouteWarning(
                "never-true",
                "the condition is a string or a number, which is never true: compare it with something",
            )
        )
    return out


def lint_route(parsed: ParsedRoute) -> list[RouteWarning]:
    """Warnings for a route that parses (errors are reported by ``compile_route``)."""
    out: list[RouteWarning] = []
    source = parsed.source.lower()
    if source != "/" and not any(
        root.startswith(source) or source.startswith(root) for root in _VALID_SOURCE_ROOTS
    ):
        out.append(
            RouteWarning(
                "unknown-source",
                f"FROM {parsed.source} matches no message: sources are /messages (leaf devices), "
                "/messages/modules/<module>/outputs/<output> and /twinChangeNotifications",
            )
        )
    if parsed.ignored_tail:
        out.append(
            RouteWarning("ignored-text", f"edgeHub ignores the text after the sink: {parsed.ignored_tail!r}")
        )
    for comment in parsed.comments:
        out.append(
            RouteWarning(
                "comment",
                f"{comment!r} is a comment to edgeHub and is ignored (a '/*' in a path starts a comment)",
            )
        )
    out.extend(_token_warnings(parsed.condition))
    try:
        tree = parse_condition(parsed.condition)
    except RouteError:
        return out
    out.extend(_tree_warnings(tree, parsed.condition))
    return out
