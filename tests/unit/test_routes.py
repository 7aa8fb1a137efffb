"""Route strings: parsing, endpoints and source matching as edgeHub does them."""

from __future__ import annotations

import pytest

from edgehub_emu.routing import (
    DEFAULT_PRIORITY,
    ConditionCompileError,
    EndpointError,
    ModuleEndpoint,
    RouteSyntaxError,
    UpstreamEndpoint,
    compile_condition,
    compile_route,
    parse_condition,
    parse_route,
)


def test_brokered_endpoint_delivers_to_device_module_input():
    route = compile_route(
        "r",
        'FROM /messages/modules/a/outputs/o INTO BrokeredEndpoint("/modules/b/inputs/in1")',
        device_id="dev",
    )
    assert route.endpoint == ModuleEndpoint("dev", "b", "in1")
    assert route.endpoint.id == "dev/b/in1"
    assert route.priority == DEFAULT_PRIORITY
    assert route.condition.text == "true"


def test_upstream_is_case_insensitive_and_its_queue_is_iothub():
    route = compile_route("r", "from /* into $UPSTREAM", device_id="dev")
    assert route.endpoint == UpstreamEndpoint()
    assert route.endpoint.id == "iothub"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("FROM /* INTO $downstream", "only $upstream"),
        ('FROM /* INTO Endpoint("/modules/a/inputs/b")', "only BrokeredEndpoint"),
        ('FROM /* INTO BrokeredEndpoint("/modules/a/inputs")', "/modules/<module>/inputs/<input>"),
    ],
)
def test_unknown_sinks_are_endpoint_errors(text: str, needle: str):
    with pytest.raises(EndpointError, match=needle.replace("$", r"\$")):
        compile_route("r", text, device_id="dev")


def test_condition_text_is_kept_verbatim_between_where_and_into():
    parsed = parse_route("FROM /messages WHERE  a = 'x'   AND  b <> 'y'  INTO $upstream")
    assert parsed.condition == "a = 'x'   AND  b <> 'y'"


def test_text_after_the_sink_is_ignored_but_remembered_for_lint():
    parsed = parse_route("FROM /* INTO $upstream and more")
    assert parsed.ignored_tail == "and more"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "FROM INTO $upstream",
        "FROM /messages/modules/$edgeHub INTO $upstream",
        "FROM /* WHERE INTO $upstream",
        "FROM /* WHERE a = 'x' b = 'y' INTO $upstream",
        "SELECT FROM /* INTO $upstream",
        "TO /* INTO $upstream",
    ],
)
def test_malformed_routes_are_syntax_errors(text: str):
    with pytest.raises(RouteSyntaxError):
        parse_route(text)


def test_syntax_error_on_a_glued_operator_says_so():
    with pytest.raises(RouteSyntaxError, match="'&&' is one name: write AND"):
        parse_route("FROM /* WHERE a && b INTO $upstream")
    with pytest.raises(RouteSyntaxError, match="put a space after a string literal"):
        parse_route("FROM /* WHERE key1='value1'AND key2='3' INTO $upstream")


def test_syntax_errors_point_at_the_token():
    with pytest.raises(RouteSyntaxError) as exc:
        parse_route("FROM /messages WHERE a == 'x' INTO $upstream")
    problem = exc.value.problems[0]
    assert problem.column == 25
    assert "'='" in problem.message


@pytest.mark.parametrize(
    ("source", "message_source", "matches"),
    [
        ("/messages/modules/M/outputs/*", "/messages/modules/M/outputs/o", True),
        ("/messages/modules/M/outputs/*", "/messages/modules/M", False),
        ("/messages/modules/M", "/messages/modules/M2/outputs/o", False),
        ("/messages/modules/m", "/messages/modules/M/outputs/o", True),
        ("/messages/*", "/twinChangeNotifications", False),
        ("/*", "/twinChangeNotifications", True),
    ],
)
def test_source_matching(source: str, message_source: str, matches: bool):
    route = compile_route("r", f"FROM {source} INTO $upstream", device_id="d")
    assert route.matches_source(message_source) is matches


@pytest.mark.parametrize(
    "condition",
    [
        "temp = 5",
        "as_number(temp) > 5 AND\n  (machine = 'a' OR machine = 5)",
        "NOT is_defined($body.x) OR\n\n   -length(a) > 'b'",
    ],
)
def test_a_routes_condition_is_parsed_from_its_tokens_with_the_places_of_the_condition_alone(condition):
    """A plain route is lexed once and its condition parsed from those tokens; the tree and every
    error still name lines and columns counted in the condition, as when it is compiled alone."""
    for layout in (
        "FROM /messages/* WHERE {} INTO $upstream",
        "FROM /messages/*\n    WHERE   {}\nINTO $upstream",
    ):
        with pytest.raises(ConditionCompileError) as from_route:
            compile_route("r", layout.format(condition), device_id="dev")
        with pytest.raises(ConditionCompileError) as alone:
            compile_condition(condition + " ")  # a different text: nothing comes from a cache
        assert from_route.value.text == condition
        assert [(p.line, p.column, p.message) for p in from_route.value.problems] == [
            (p.line, p.column, p.message) for p in alone.value.problems
        ]


def test_a_routes_condition_tree_is_the_tree_of_the_condition_alone():
    text = "as_number(temp) > 5 AND\n  (machine = 'a' OR {$cid} <> 'x')"
    route = compile_route("r", f"FROM /messages/*\n  WHERE {text} INTO $upstream", device_id="dev")
    assert route.parsed is not None and route.parsed.condition_tree is not None
    assert route.condition.tree == parse_condition(text)
