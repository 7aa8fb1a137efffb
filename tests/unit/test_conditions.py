"""Condition semantics a route author relies on, beyond the conformance vectors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub_emu.routing import (
    UNDEF,
    ConditionCompileError,
    Message,
    RouteError,
    RouteSyntaxError,
    compile_condition,
    json_body,
)

JSON = {"contentType": "application/json", "contentEncoding": "utf-8"}


def evaluate(condition: str, message: Message | None = None):
    return compile_condition(condition).evaluate(message or Message())


def test_property_names_are_case_insensitive_but_values_are_not():
    m = Message(properties={"Status": "OK"})
    assert evaluate("status = 'OK'", m) is True
    assert evaluate("STATUS = 'ok'", m) is False


def test_missing_property_makes_the_condition_undefined_not_false():
    assert evaluate("status = 'ok'") is UNDEF


def test_string_property_compared_with_number_is_a_compile_error_with_a_hint():
    with pytest.raises(ConditionCompileError) as exc:
        compile_condition("temp > 30")
    message = str(exc.value.problems[0])
    assert "as_number(temp)" in message
    assert exc.value.problems[0].column == 6


def test_as_number_accepts_dotnet_number_styles():
    m = Message(properties={"a": " 1,234.5 ", "b": "(12)", "c": "12-", "d": "abc"})
    assert evaluate("as_number(a) = 1234.5", m) is True
    assert evaluate("as_number(b) = -12", m) is True
    assert evaluate("as_number(c) = -12", m) is True
    assert evaluate("is_defined(as_number(d))", m) is False


def test_body_query_reads_json_once_per_message():
    m = Message(body=json_body({"temp": 31, "deep": {"list": [1, {"x": "y"}]}}), system_properties=JSON)
    first = m.json_root()
    assert evaluate("$body.temp > 30 AND $body.deep.list[1].x = 'y'", m) is True
    assert m.json_root() is first


def test_body_query_needs_json_content_type_and_encoding():
    body = json_body({"temp": 31})
    assert evaluate("$body.temp > 30", Message(body=body)) is UNDEF
    m = Message(body=body, system_properties={"contentType": "application/json"})
    assert evaluate("$body.temp > 30", m) is UNDEF
    assert "contentEncoding" in (m.body_query_reason() or "")


def test_body_query_in_utf16():
    m = Message(
        body='{"t": 5}'.encode("utf-16-le"),
        system_properties={"contentType": "application/json", "contentEncoding": "utf-16"},
    )
    assert evaluate("$body.t = 5", m) is True


def test_application_property_shadows_body_query_and_escape_skips_it():
    m = Message(
        body=json_body({"a": "body"}),
        properties={"$body.a": "app"},
        system_properties=JSON,
    )
    assert evaluate("$body.a = 'app'", m) is True
    assert evaluate("{$body.a} = 'body'", m) is True


def test_system_property_by_dollar_name_and_correlation_id_is_cid():
    m = Message(system_properties={"cid": "c-1", "messageId": "m-1"})
    assert evaluate("$cid = 'c-1' AND $messageId = 'm-1'", m) is True
    assert evaluate("is_defined($correlationId)", m) is False


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("3 / 0 = 1 / 0", True),
        ("-3 / 0 < 0", True),
        ("is_defined(0 / 0)", False),
        ("7 % -3 = 1", True),
        ("-7 % 3 = -1", True),
        ("power(-8, 1 / 3) = 2", UNDEF),
        ("floor(1 / 0) = 1 / 0", True),
        ("exp(1000) = 1 / 0", True),
    ],
)
def test_number_semantics_follow_dotnet_doubles(condition: str, expected):
    assert evaluate(condition) is expected


def test_trailing_text_after_a_complete_condition_is_ignored():
    m = Message(properties={"k": "v"})
    assert evaluate("k = 'v' trailing words", m) is True
    # ...but a keyword continues the expression: 'and then' ANDs a string property, a type error.
    with pytest.raises(ConditionCompileError, match="'AND' needs Bool operands"):
        compile_condition("k = 'v' and then some words")


@pytest.mark.parametrize("text", ["k = ", "(k = 'v'", "k = 'v')", "k = 'v", "k ; x", "k == 'v'"])
def test_malformed_conditions_are_syntax_errors(text: str):
    with pytest.raises(RouteSyntaxError):
        compile_condition(text)


def test_errors_collect_every_problem():
    with pytest.raises(ConditionCompileError) as exc:
        compile_condition("a > 1 AND b < 2 AND nosuchfn(a)")
    assert len(exc.value.problems) == 3


def test_twin_change_includes_only_from_twin_change_notifications():
    with pytest.raises(ConditionCompileError, match="twinChangeNotifications"):
        compile_condition("twin_change_includes(properties.reported.x)", "/messages/*")
    compiled = compile_condition("twin_change_includes(properties.reported.x)", "/twinChangeNotifications")
    m = Message(
        body=json_body({"properties": {"reported": {"x": 1}}}),
        system_properties={**JSON, "messageType": "twinChangeNotification"},
    )
    assert compiled.evaluate(m) is True


_PIECES = [*"ab$.'\"()[]{}=<>!+-*/% 019_?|&,;", " AND ", " OR ", " NOT ", "$body.", "is_defined(", "true"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(_PIECES), max_size=20).map("".join))
def test_any_text_either_compiles_or_raises_a_route_error(text: str):
    try:
        compiled = compile_condition(text)
    except RouteError:
        return
    assert compiled.evaluate(Message(properties={"a": "1"}, body=b"{}", system_properties=JSON)) in (
        True,
        False,
        UNDEF,
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42.0),
        ("-1.5e3", -1500.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("12-", -12.0),
        ("+7", 7.0),
        ("1,000", 1000.0),
        (" 3 ", 3.0),
        ("(4)", -4.0),
        ("¤5", 5.0),
        ("Infinity", float("inf")),
    ],
)
def test_parse_number_matches_dotnet_number_styles_any(text: str, value: float):
    from edgehub_emu.routing.builtins import parse_number

    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "-", "1e", "e5", "1.2.3", "--5", "1_000", "nan1", "0x10", "+5-", "(5"])
def test_parse_number_rejects_what_dotnet_rejects(text: str):
    from edgehub_emu.routing.builtins import parse_number

    assert parse_number(text) != parse_number(text)  # NaN: undefined
