"""`validate` warns about edgeHub's traps: each warning names the trap and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgehub_emu.manifest import compile_routes, lint_deployment, parse_deployment
from edgehub_emu.routing import lint_route, parse_route

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "deployment.json"


def codes(route: str) -> list[str]:
    return [w.code for w in lint_route(parse_route(route))]


@pytest.mark.parametrize(
    ("route", "code"),
    [
        ("FROM /* WHERE a!=b INTO $upstream", "operator-spacing"),
        ("FROM /* WHERE x = a&&b INTO $upstream", "operator-spacing"),
        ("FROM /* WHERE as_number(x) = 3-4 INTO $upstream", "operator-spacing"),
        ("FROM /* WHERE flag = TRUE INTO $upstream", "uppercase-literal"),
        ("FROM /* WHERE NOT a = 'b' INTO $upstream", "not-precedence"),
        ("FROM /* WHERE $body.temp > 30 INTO $upstream", "body-content-type"),
        ("FROM /* WHERE $correlationId = 'x' INTO $upstream", "correlation-id"),
        ("FROM /* INTO $upstream then more", "ignored-text"),
        ("FROM /messages/* /* all */ INTO $upstream", "comment"),
        ("FROM /message/* INTO $upstream", "unknown-source"),
        ("FROM /* WHERE status INTO $upstream", "never-true"),
        ("FROM /messages/* WHERE $twin.properties.desired.x = 1 INTO $upstream", "twin-in-condition"),
        ("FROM /* WHERE $twin.tags.site = 'a' INTO $upstream", "twin-in-condition"),
    ],
)
def test_each_trap_is_named(route: str, code: str):
    assert code in codes(route)


@pytest.mark.parametrize(
    "route",
    [
        "FROM /messages/modules/a/outputs/* WHERE level = 'alert' INTO $upstream",
        "FROM /* WHERE NOT (a = 'b') INTO $upstream",
        "FROM /* WHERE $contentType = 'application/json' AND $body.t > 1 INTO $upstream",
        "FROM /twinChangeNotifications INTO $upstream",
        "FROM /* WHERE $iothub-connection-device-id = 'x' INTO $upstream",
    ],
)
def test_ordinary_routes_have_no_warnings(route: str):
    assert codes(route) == []


def test_glued_string_keyword_is_explained_even_though_it_fails_to_parse_as_route():
    # In a standalone condition it parses (no end anchor) and lint explains it.
    from edgehub_emu.routing.lint import _token_warnings

    assert [w.code for w in _token_warnings("key1='value1'AND key2='3'")] == ["glued-string"]


def deployment_warnings(routes: dict[str, str]) -> list[tuple[str, str]]:
    doc = json.loads(EXAMPLE.read_text())
    doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = routes
    deployment = parse_deployment(doc, env={})
    return [
        (w.code, w.path.rsplit(".", 1)[-1])
        for w in lint_deployment(deployment, compile_routes(deployment, "d"))
    ]


SENSOR = "FROM /messages/modules/SimulatedTemperatureSensor/*"


def test_routes_to_and_from_modules_not_deployed():
    found = deployment_warnings(
        {
            "a": "FROM /messages/modules/ghost/outputs/* INTO $upstream",
            "b": f'{SENSOR} INTO BrokeredEndpoint("/modules/nobody/inputs/i")',
            "c": f'{SENSOR} INTO BrokeredEndpoint("/modules/FilterModule/inputs/i")',
        }
    )
    assert ("unknown-module", "a") in found
    assert ("unknown-module", "b") in found
    assert ("module-case", "c") in found
    assert ("unrouted-module", "filtermodule") in found


def test_route_loop_is_flagged():
    found = deployment_warnings(
        {"loop": 'FROM /messages/* INTO BrokeredEndpoint("/modules/filtermodule/inputs/in")'}
    )
    assert ("route-loop", "loop") in found


def test_the_documentation_example_has_no_warnings():
    found = deployment_warnings(
        json.loads(EXAMPLE.read_text())["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    )
    assert [code for code, _ in found] == ["no-inputs"]  # the sensor only sends: a note, not a warning
