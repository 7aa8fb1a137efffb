"""The broker mode's authorization policy and bridge settings, as functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgehub_emu.broker import (
    CONNECT,
    PUBLISH,
    SUBSCRIBE,
    AuthorizationPolicy,
    Client,
    PolicyError,
    parse_authorizations,
    parse_bridges,
)
from edgehub_emu.manifest import ManifestError, parse_deployment

HUB = "myhub.azure-devices.net"
ROOT = Path(__file__).resolve().parents[2]

# The documentation's example policy.
DOCS_POLICY = [
    {"identities": [f"{HUB}/rogue_client"], "deny": [{"operations": ["mqtt:connect"]}]},
    {"identities": ["{{iot:identity}}"], "allow": [{"operations": ["mqtt:connect"]}]},
    {
        "identities": [f"{HUB}/pub_client"],
        "allow": [{"operations": ["mqtt:publish"], "resources": ["test_topic"]}],
    },
    {
        "identities": [f"{HUB}/sub_client"],
        "allow": [{"operations": ["mqtt:subscribe"], "resources": ["test_topic", "alerts/#"]}],
    },
    {
        "identities": ["{{iot:identity}}"],
        "allow": [
            {
                "operations": ["mqtt:publish", "mqtt:subscribe"],
                "resources": ["devices/{{iot:device_id}}/custom/#"],
            }
        ],
    },
]


def policy(statements: list[dict] = DOCS_POLICY) -> AuthorizationPolicy:
    return AuthorizationPolicy(parse_authorizations(statements), "edge", HUB)


def device(name: str) -> Client:
    return Client(name, name)


def test_docs_policy() -> None:
    p = policy()
    assert not p.allows(device("rogue_client"), CONNECT)
    assert p.allows(device("pub_client"), CONNECT)
    assert p.allows(device("pub_client"), PUBLISH, "test_topic")
    assert not p.allows(device("pub_client"), SUBSCRIBE, "test_topic")
    assert p.allows(device("sub_client"), SUBSCRIBE, "alerts/+/fire")
    assert p.allows(device("sub_client"), SUBSCRIBE, "alerts/#")
    assert not p.allows(device("sub_client"), SUBSCRIBE, "#")  # broader than any resource
    assert p.allows(device("d1"), PUBLISH, "devices/d1/custom/x")
    assert not p.allows(device("d1"), PUBLISH, "devices/d2/custom/x")


def test_deny_wins_whatever_the_order() -> None:
    allow = {
        "identities": ["{{iot:identity}}"],
        "allow": [{"operations": ["mqtt:publish"], "resources": ["a/#"]}],
    }
    deny = {"identities": ["edge/m1"], "deny": [{"operations": ["mqtt:publish"], "resources": ["a/secret"]}]}
    for statements in ([allow, deny], [deny, allow]):
        p = policy(statements)
        decision = p.decide(Client("edge/m1", "edge", "m1"), PUBLISH, "a/secret")
        assert not decision.allowed and "authorizations[" in decision.reason
        assert p.allows(Client("edge/m1", "edge", "m1"), PUBLISH, "a/open")
        assert p.allows(Client("edge/m2", "edge", "m2"), PUBLISH, "a/secret")


def test_variables_and_identity_forms() -> None:
    p = policy(
        [
            {
                "identities": ["{{iot:this_device_id}}/{{iot:module_id}}"],
                "allow": [
                    {"operations": ["mqtt:publish"], "resources": ["m/{{iot:module_id}}/{{mqtt:client_id}}"]}
                ],
            },
            {
                "identities": ["otherhub.azure-devices.net/edge/m9"],
                "allow": [{"operations": ["mqtt:connect"]}],
            },
        ]
    )
    module = Client("edge/m1", "edge", "m1")
    assert p.allows(module, PUBLISH, "m/m1/edge/m1")
    assert not p.allows(module, PUBLISH, "m/m2/edge/m1")
    assert not p.allows(Client("leaf/m1", "leaf", "m1"), PUBLISH, "m/m1/leaf/m1")  # not this device
    assert not p.allows(Client("edge/m9", "edge", "m9"), CONNECT)  # another hub's name


def test_nothing_is_allowed_by_default_except_for_anonymous_local_tools() -> None:
    p = policy([])
    assert not p.allows(device("d1"), CONNECT)
    tool = Client("tool", "tool", anonymous=True)
    assert p.allows(tool, SUBSCRIBE, "#")
    deny = {
        "identities": ["{{iot:identity}}"],
        "deny": [{"operations": ["mqtt:subscribe"], "resources": ["x"]}],
    }
    assert not policy([deny]).allows(tool, SUBSCRIBE, "x")


@pytest.mark.parametrize(
    ("statement", "path", "words"),
    [
        ({"allow": [{"operations": ["mqtt:connect"]}]}, "authorizations[0].identities", "non-empty list"),
        ({"identities": ["a"]}, "authorizations[0]", "needs allow or deny"),
        (
            {"identities": ["a"], "allow": [{"operations": ["mqtt:read"]}]},
            "authorizations[0].allow[0].operations[0]",
            "unknown operation",
        ),
        (
            {"identities": ["a"], "allow": [{"operations": ["mqtt:publish"]}]},
            "authorizations[0].allow[0].resources",
            "required",
        ),
        (
            {"identities": ["a"], "deny": [{"operations": ["mqtt:publish"], "resources": ["a/#/b"]}]},
            "authorizations[0].deny[0].resources[0]",
            "not a valid topic filter",
        ),
        (
            {"identities": ["{{iot:colour}}"], "allow": [{"operations": ["mqtt:connect"]}]},
            "authorizations[0].identities[0]",
            "unknown variable",
        ),
        (
            {"identities": ["a"], "allow": [{"operations": ["mqtt:connect"]}], "effect": "x"},
            "authorizations[0]",
            "unknown field",
        ),
    ],
)
def test_policy_errors_name_the_field(statement: dict, path: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_authorizations([statement])
    assert any(p == path and words in m for p, m in caught.value.problems), caught.value.problems


def test_bridge_topic_mapping() -> None:
    [bridge] = parse_bridges(
        [
            {
                "endpoint": "$upstream",
                "settings": [
                    {"direction": "in", "topic": "alerts/#"},
                    {
                        "direction": "out",
                        "topic": "#",
                        "inPrefix": "local/telemetry/",
                        "outPrefix": "remote/messages/",
                    },
                    {"direction": "both", "topic": "sync/#"},
                ],
            }
        ]
    )
    assert bridge.to_remote("local/telemetry/t1") == "remote/messages/t1"
    assert bridge.to_remote("alerts/fire") is None  # an "in" setting
    assert bridge.to_remote("sync/a") == "sync/a"
    assert bridge.to_local("alerts/fire") == "alerts/fire"
    assert bridge.to_local("remote/messages/t1") is None  # an "out" setting
    assert bridge.to_local("sync/b") == "sync/b"
    assert bridge.remote_subscriptions == ["alerts/#", "sync/#"]


def test_bridge_errors() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_bridges(
            [
                {
                    "endpoint": "somewhere",
                    "settings": [{"direction": "sideways", "topic": "a/#", "inPrefix": "x/#"}],
                },
                {"endpoint": "$upstream", "settings": []},
            ]
        )
    paths = {p for p, _ in caught.value.problems}
    assert paths == {
        "bridges[0].endpoint",
        "bridges[0].settings[0].direction",
        "bridges[0].settings[0].inPrefix",
        "bridges[1].settings",
    }


def _with_broker(schema: str, broker: object) -> dict:
    doc = json.loads((ROOT / "config" / "deployment.json").read_text())
    hub = doc["modulesContent"]["$edgeHub"]["properties.desired"]
    hub["schemaVersion"] = schema
    hub["mqttBroker"] = broker
    return doc


def test_manifest_reports_broker_problems_at_their_paths() -> None:
    base = "modulesContent.$edgeHub.properties.desired.mqttBroker"
    assert parse_deployment(_with_broker("1.1", {"authorizations": "ignored"}), env={}).broker is None
    bad = {"authorizations": [{"identities": [], "allow": []}], "bridges": "no"}
    with pytest.raises(ManifestError) as caught:
        parse_deployment(_with_broker("1.2", bad), env={})
    assert [p.path for p in caught.value.problems] == [
        f"{base}.authorizations[0].identities",
        f"{base}.bridges",
    ]


def test_example_broker_manifest_is_valid() -> None:
    deployment = parse_deployment(json.loads((ROOT / "config" / "broker.json").read_text()), env={})
    assert deployment.broker is not None and len(deployment.broker.authorizations) == 3


def test_lint_warns_when_no_statement_allows_connect() -> None:
    from edgehub_emu.manifest import compile_routes, lint_deployment

    policy = {
        "authorizations": [
            {
                "identities": ["{{iot:identity}}"],
                "allow": [{"operations": ["mqtt:publish"], "resources": ["a"]}],
            }
        ]
    }
    deployment = parse_deployment(_with_broker("1.2", policy), env={})
    codes = [w.code for w in lint_deployment(deployment, compile_routes(deployment, "edge"))]
    assert "broker-no-connect" in codes
    for example in ("broker.json", "bridge.json"):
        deployment = parse_deployment(json.loads((ROOT / "config" / example).read_text()), env={})
        warnings = lint_deployment(deployment, compile_routes(deployment, "edge"))
        assert [w for w in warnings if w.severity == "warning"] == []
