"""The core without sockets: the connection manager, direct methods, twin requests and telemetry, driven
through a recording device proxy."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from edgehub_emu.core import (
    AuthenticationError,
    Authenticator,
    ConnectionManager,
    HubCore,
    MethodCalls,
    MethodError,
    SendOutcome,
)
from edgehub_emu.identity import IdentityRegistry, make_token
from edgehub_emu.iothub import C2D, DESIRED_PROPERTY_UPDATES, METHODS, MODULE_MESSAGES
from edgehub_emu.iothub.twins import TwinStore
from edgehub_emu.routing import Message, RouteTable, compile_route
from edgehub_emu.store import MemoryStore

HUB = "hub.azure-devices.net"


class RecordingProxy:
    """A client's outbound side that records what the core asked of it."""

    def __init__(self, transport: str = "test", answers_methods: bool = True) -> None:
        self.transport = transport
        self.answers_methods = answers_methods
        self.sent: list[tuple[str, Any]] = []
        self.closed: list[str] = []

    def send_to_input(self, input_name, message, token, settle) -> SendOutcome:
        self.sent.append(("input", (input_name, message.body)))
        return SendOutcome.SENT

    def abandon(self, tokens) -> None:
        self.sent.append(("abandon", list(tokens)))

    def push_desired(self, version: int, patch: bytes) -> None:
        self.sent.append(("desired", (version, json.loads(patch))))

    def send_method_request(self, method_name: str, request_id: str, payload: bytes) -> bool:
        self.sent.append(("method", (method_name, request_id, payload)))
        return self.answers_methods

    def send_c2d(self, message: Message) -> bool:
        self.sent.append(("c2d", (message.body, dict(message.system_properties))))
        return True

    def close(self, reason: str) -> None:
        self.closed.append(reason)

    def subscriptions(self) -> list[str]:
        return []


@pytest.fixture
def registry() -> IdentityRegistry:
    return IdentityRegistry("edge", ["sensor", "filter"], ["leaf"])


def core(registry: IdentityRegistry, routes: list[str] = ()) -> HubCore:
    table = RouteTable(compile_route(f"r{i}", text, device_id="edge") for i, text in enumerate(routes))
    return HubCore("edge", registry, [HUB], TwinStore(), MemoryStore(), table)


# --- connections -----------------------------------------------------------------------------------


def test_a_second_connection_of_an_identity_closes_the_first(registry: IdentityRegistry) -> None:
    manager = ConnectionManager()
    changes: list[str] = []
    manager.observe(changes.append)
    first, second = RecordingProxy("mqtt"), RecordingProxy("amqp")
    identity = registry.get("edge/filter")
    manager.connect(identity, first, 10**10)
    manager.connect(identity, second, 10**10, [METHODS])
    assert first.closed == ["another connection of the same identity took over"]
    assert manager.get("edge/filter").proxy is second
    assert not manager.disconnect("edge/filter", first)  # the old one's goodbye changes nothing
    assert manager.get("edge/filter", METHODS).proxy is second
    assert manager.disconnect("edge/filter", second)
    assert "edge/filter" not in manager
    assert changes == ["edge/filter"] * 3


def test_clients_taking_one_identity_from_each_other_are_warned_about_once(
    registry: IdentityRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    manager = ConnectionManager()
    identity = registry.get("edge/filter")
    manager.connect(identity, RecordingProxy(), 10**10)
    manager.connect(identity, RecordingProxy(), 10**10)  # one takeover: a module restarting, fine
    assert "two clients are using this identity" not in caplog.text
    for _ in range(100):  # two processes fighting over it
        manager.connect(identity, RecordingProxy(), 10**10)
    warnings = [r for r in caplog.records if "two clients are using this identity" in r.getMessage()]
    assert len(warnings) == 1  # once per ten seconds, not once per takeover
    assert warnings[0].getMessage().startswith("edge/filter: 3 connections took over")
    assert "make run LOCAL_MODULES=" in warnings[0].getMessage()


def test_features_decide_what_a_client_can_be_sent(registry: IdentityRegistry) -> None:
    manager = ConnectionManager()
    proxy = RecordingProxy()
    manager.connect(registry.get("edge/filter"), proxy, 10**10)
    assert manager.get("edge/filter", MODULE_MESSAGES) is None
    manager.set_features("edge/filter", proxy, [MODULE_MESSAGES])
    assert manager.get("edge/filter", MODULE_MESSAGES) is not None
    manager.set_features("edge/filter", RecordingProxy(), [METHODS])  # not the registered connection
    assert manager.get("edge/filter", METHODS) is None


async def test_waiting_for_a_client_ends_when_it_subscribes_or_the_time_is_up(
    registry: IdentityRegistry,
) -> None:
    manager = ConnectionManager()
    waiting = asyncio.ensure_future(manager.wait_for("edge/filter", METHODS, 5))
    await asyncio.sleep(0)
    proxy = RecordingProxy()
    manager.connect(registry.get("edge/filter"), proxy, 10**10)
    await asyncio.sleep(0)
    assert not waiting.done()  # connected, but not yet listening for methods
    manager.set_features("edge/filter", proxy, [METHODS])
    assert (await waiting).proxy is proxy
    assert await manager.wait_for("edge/sensor", METHODS, 0.05) is None


def test_expired_tokens_are_found_with_five_minutes_of_skew(registry: IdentityRegistry) -> None:
    manager = ConnectionManager()
    manager.connect(registry.get("edge/filter"), RecordingProxy(), 1000)
    assert manager.expired(now=1299) == []
    assert [c.identity.id for c in manager.expired(now=1301)] == ["edge/filter"]


def test_the_authenticator_names_what_is_wrong(registry: IdentityRegistry) -> None:
    authenticator = Authenticator(registry, [HUB])
    filter_ = registry.get("edge/filter")
    token = make_token(f"{HUB}/devices/edge/modules/filter", filter_.primary_key, 4_000_000_000)
    assert authenticator.authenticate("edge/filter", token).identity is filter_
    with pytest.raises(AuthenticationError, match="unknown identity"):
        authenticator.authenticate("edge/nobody", token)
    with pytest.raises(AuthenticationError, match="signature"):
        authenticator.authenticate("edge/filter", token.replace("sig=", "sig=x"))
    with pytest.raises(AuthenticationError, match="signature"):
        authenticator.authenticate("edge/filter", token.replace("sig=", "sig=\u00e9"))  # non-ASCII: no crash


# --- direct methods ----------------------------------------------------------------------------------


async def test_a_method_call_goes_through_the_proxy_and_its_response_comes_back(registry) -> None:
    manager = ConnectionManager()
    calls = MethodCalls(manager, Counter())
    proxy = RecordingProxy()
    manager.connect(registry.get("edge/filter"), proxy, 10**10, [METHODS])
    call = asyncio.ensure_future(calls.invoke("edge/filter", "reset", {"hard": True}, 5))
    await asyncio.sleep(0)
    (kind, (name, request_id, payload)), *_ = proxy.sent
    assert (kind, name, json.loads(payload)) == ("method", "reset", {"hard": True})
    calls.respond(request_id.upper(), 200, b'{"done": true}')  # ids match in any case
    result = await call
    assert (result.status, result.payload) == (200, {"done": True})
    calls.respond(request_id, 200, b"")  # a second answer is ignored


async def test_method_errors_are_edgehubs(registry) -> None:
    manager = ConnectionManager()
    calls = MethodCalls(manager, Counter())
    with pytest.raises(MethodError) as bad:
        await calls.invoke("edge/filter", "", None, 5)
    assert bad.value.status == 400
    with pytest.raises(MethodError) as bad:
        await calls.invoke("edge/filter", 123, None, 5)  # type: ignore[arg-type]
    assert bad.value.status == 400
    with pytest.raises(MethodError) as missing:
        await calls.invoke("edge/filter", "reset", None, 5)
    assert (missing.value.status, str(missing.value)) == (404, "Client edge/filter not found")
    manager.connect(registry.get("edge/filter"), RecordingProxy(), 10**10)  # not listening for methods
    with pytest.raises(MethodError) as missing:
        await calls.invoke("edge/filter", "reset", None, 5)
    assert missing.value.status == 404 and "connected, but not subscribed to methods" in str(missing.value)


async def test_calls_still_waiting_are_answered_when_the_hub_stops(registry) -> None:
    manager = ConnectionManager()
    calls = MethodCalls(manager, Counter())
    manager.connect(registry.get("edge/filter"), RecordingProxy(), 10**10, [METHODS])
    call = asyncio.ensure_future(calls.invoke("edge/filter", "slow", None, 300))
    await asyncio.sleep(0)
    assert calls.fail_all(404, "Client {identity_id} not found: the hub is stopping") == 1
    with pytest.raises(MethodError, match="edge/filter not found: the hub is stopping"):
        await call


# --- twins and telemetry -------------------------------------------------------------------------------


def test_a_reported_patch_is_validated_stored_and_routed_as_a_twin_change(registry) -> None:
    hub = core(
        registry, ['FROM /twinChangeNotifications INTO BrokeredEndpoint("/modules/sensor/inputs/twin")']
    )
    listener = hub.connect(registry.get("edge/filter"), RecordingProxy(), 10**10)
    assert listener.patch_reported(b'{"status": "ok"}') == 204
    assert json.loads(listener.get_twin())["reported"]["status"] == "ok"
    assert listener.patch_reported(b'{"bad.name": 1}') == 400
    assert listener.patch_reported(b"not json") == 500
    (entry,) = hub.ingest.store.peek("edge/sensor/twin")
    assert entry.message.body == b'{"status": "ok"}'
    assert entry.message.system_properties["rpSenderModuleId"] == "filter"
    assert entry.message.system_properties["connectionModuleId"] == "$edgeHub"


def test_desired_patches_go_only_to_clients_that_listen(registry) -> None:
    hub = core(registry)
    proxy = RecordingProxy()
    hub.connect(registry.get("edge/filter"), proxy, 10**10)
    applied = hub.twins.patch_desired("edge/filter", {"limit": 30})
    assert proxy.sent == []  # connected, not listening: not queued either
    hub.connections.set_features("edge/filter", proxy, [DESIRED_PROPERTY_UPDATES])
    hub.twins.patch_desired("edge/filter", {"limit": 40})
    assert proxy.sent == [
        ("desired", (applied["$version"] + 1, {"limit": 40, "$version": applied["$version"] + 1}))
    ]


def test_telemetry_is_stamped_checked_for_size_and_routed(registry) -> None:
    hub = core(
        registry, ['FROM /messages/modules/sensor/* INTO BrokeredEndpoint("/modules/filter/inputs/in")']
    )
    listener = hub.connect(registry.get("edge/sensor"), RecordingProxy(), 10**10)
    stored: list[Any] = []
    assert listener.telemetry(Message(body=b"21", system_properties={"outputName": "out"}), stored.append)
    (entry,) = hub.ingest.store.peek("edge/filter/in")
    system = entry.message.system_properties
    assert (system["connectionDeviceId"], system["connectionModuleId"]) == ("edge", "sensor")
    assert system["edgeHubOriginInterface"] == "internal" and len(system["edgeMessageId"]) == 36
    assert listener.telemetry(Message(body=b"x" * 262_144), stored.append)  # too large: dropped
    assert hub.counters["dropped_too_large"] == 1
    other = hub.connect(registry.get("edge/filter"), RecordingProxy(), 10**10)
    assert other.telemetry(Message(body=b"nowhere"), stored.append)
    assert hub.counters["dropped_no_route"] == 1 and stored == []


def test_the_size_limit_counts_properties_as_edgehub_does(registry) -> None:
    """262,144 characters and bytes of every property's name and value plus the body: at the limit a
    message is queued, one character over it is dropped (an application property's included)."""
    hub = core(
        registry, ['FROM /messages/modules/sensor/* INTO BrokeredEndpoint("/modules/filter/inputs/in")']
    )
    listener = hub.connect(registry.get("edge/sensor"), RecordingProxy(), 10**10)
    stamped = {  # what the hub adds, with the output's own property
        "connectionDeviceId": "edge",
        "connectionModuleId": "sensor",
        "edgeMessageId": "x" * 36,
        "edgeHubOriginInterface": "internal",
        "outputName": "out",
    }
    room = 262_144 - sum(len(k) + len(v) for k, v in stamped.items()) - len("key") - 1000
    for extra, dropped in ((0, 0), (1, 1)):
        message = Message(b"b" * room, {"key": "v" * (1000 + extra)}, {"outputName": "out"})
        listener.telemetry(message, [].append)
        assert hub.counters["dropped_too_large"] == dropped
    assert len(hub.ingest.store.peek("edge/filter/in")) == 1


def test_c2d_goes_to_a_listening_leaf_device_only(registry) -> None:
    hub = core(registry)
    with pytest.raises(MethodError, match="not a device"):
        hub.send_c2d("edge/filter", Message(body=b"x"))
    with pytest.raises(MethodError, match="not connected"):
        hub.send_c2d("leaf", Message(body=b"x"))
    proxy = RecordingProxy()
    hub.connect(registry.get("leaf"), proxy, 10**10, [C2D])
    hub.send_c2d("leaf", Message(body=b"hello"))
    assert proxy.sent == [("c2d", (b"hello", {"to": "/devices/leaf/messages/deviceBound"}))]


def test_expired_clients_are_closed(registry) -> None:
    hub = core(registry)
    proxy = RecordingProxy()
    hub.connect(registry.get("edge/filter"), proxy, 1000)
    assert hub.check_tokens(now=5000) == ["edge/filter"]
    assert proxy.closed == ["SAS token expired"]
