"""The route table: one copy per endpoint at the best priority, TTLs, drops and explanations."""

from __future__ import annotations

from edgehub_emu.routing import Message, ModuleEndpoint, RouteTable, compile_route


def route(name: str, text: str, priority: int | None = None, ttl: int = 0):
    return compile_route(name, text, device_id="dev", priority=priority, time_to_live_secs=ttl)


def from_module(module: str, output: str | None = None, **props: str) -> Message:
    system = {"connectionDeviceId": "dev", "connectionModuleId": module}
    if output:
        system["outputName"] = output
    return Message(properties=dict(props), system_properties=system)


def test_one_copy_per_endpoint_at_the_lowest_priority_number_with_that_routes_ttl():
    table = RouteTable(
        [
            route("low", "FROM /messages/* INTO $upstream", priority=5, ttl=60),
            route("high", "FROM /messages/modules/a/* INTO $upstream", priority=1, ttl=10),
            route("none", "FROM /messages/* INTO $upstream"),
        ],
        global_ttl_secs=7200,
    )
    [copy] = table.route(from_module("a", "o"))
    assert (copy.priority, copy.time_to_live_secs, copy.route) == (1, 10, "high")


def test_different_inputs_are_different_endpoints():
    table = RouteTable(
        [
            route("x", 'FROM /* INTO BrokeredEndpoint("/modules/b/inputs/x")'),
            route("y", 'FROM /* INTO BrokeredEndpoint("/modules/b/inputs/y")'),
        ]
    )
    endpoints = {c.endpoint for c in table.route(from_module("a", "o"))}
    assert endpoints == {ModuleEndpoint("dev", "b", "x"), ModuleEndpoint("dev", "b", "y")}


def test_ttl_zero_means_the_global_ttl():
    table = RouteTable([route("r", "FROM /* INTO $upstream", ttl=0)], global_ttl_secs=100)
    assert table.route(from_module("a"))[0].time_to_live_secs == 100


def test_only_true_routes_and_unrouted_messages_are_counted():
    table = RouteTable([route("r", "FROM /* WHERE level = 'alert' INTO $upstream")])
    assert table.route(from_module("a", level="info")) == []
    assert table.route(from_module("a")) == []  # undefined does not route either
    assert len(table.route(from_module("a", level="alert"))) == 1
    assert table.hits == {"r": 1}
    assert table.unrouted == 2


def test_leaf_device_telemetry_has_source_messages():
    table = RouteTable(
        [
            route("modules", "FROM /messages/modules/* INTO $upstream"),
            route("all", 'FROM /messages/* INTO BrokeredEndpoint("/modules/b/inputs/leaf")'),
        ]
    )
    leaf = Message(system_properties={"connectionDeviceId": "sensor-1"})
    assert [c.route for c in table.route(leaf)] == ["all"]


def test_explain_says_why_each_route_did_not_fire():
    table = RouteTable(
        [
            route("other", "FROM /messages/modules/zzz/* INTO $upstream"),
            route("no_prop", "FROM /* WHERE level = 'alert' INTO $upstream"),
            route("no_json", "FROM /* WHERE $body.t > 1 INTO $upstream"),
            route("false", "FROM /* WHERE false INTO $upstream"),
        ]
    )
    verdicts = {v.route.name: v for v in table.explain(from_module("a", "o")).verdicts}
    assert verdicts["other"].outcome == "source_mismatch"
    assert verdicts["no_prop"].outcome == "undefined"
    assert "'level' is not set" in verdicts["no_prop"].reasons[0]
    assert "contentType" in verdicts["no_json"].reasons[0]
    assert verdicts["false"].outcome == "false"
