"""Modules over real TLS connections: routing, inputs, properties, twins, methods, C2D."""

from __future__ import annotations

import asyncio
import json
import ssl
from urllib.parse import unquote

import aiohttp
import pytest

from edgehub_emu.core import MethodError
from edgehub_emu.mqtt import codec

from .conftest import DEVICE, manifest

SENSOR_OUT = f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events"
FILTER_IN = f"devices/{DEVICE}/modules/filtermodule/#"


def to_filter(output: str, input_name: str) -> str:
    """A route from one of the sensor's outputs to one of the filter's inputs."""
    source = f"/messages/modules/SimulatedTemperatureSensor/outputs/{output}"
    return f'FROM {source} INTO BrokeredEndpoint("/modules/filtermodule/inputs/{input_name}")'


def bag(topic: str, prefix: str) -> dict[str, str]:
    rest = topic[len(prefix) :].lstrip("/")
    return {unquote(k): unquote(v) for k, _, v in (p.partition("=") for p in rest.split("&") if p)}


async def test_output_is_routed_to_another_modules_input_with_properties(start_hub):
    hub = await start_hub()
    receiver = await hub.client("filtermodule")
    await receiver.subscribe(FILTER_IN)
    sender = await hub.client("SimulatedTemperatureSensor")
    await sender.publish(
        f"{SENSOR_OUT}/%24.on=temperatureOutput&%24.ct=application%2Fjson&%24.ce=utf-8&%24.mid=m-1&%24.cid=c-1&alert=tr%C3%BCe%201",
        b'{"machine":{"temperature":21.5}}',
    )
    message = await receiver.next()
    prefix = f"devices/{DEVICE}/modules/filtermodule/inputs/input1/"
    assert message.topic.startswith(prefix)
    assert message.payload == b'{"machine":{"temperature":21.5}}'
    assert message.qos == 1
    properties = bag(message.topic, prefix)
    assert properties == {
        "alert": "trüe 1",
        "$.ct": "application/json",
        "$.ce": "utf-8",
        "$.mid": "m-1",
        "$.cid": "c-1",
        "$.cdid": DEVICE,
        "$.cmid": "SimulatedTemperatureSensor",
    }  # user properties first, no $.on
    sender.stop()
    receiver.stop()


async def test_output_routed_upstream_is_captured(start_hub):
    hub = await start_hub()
    sender = await hub.client("filtermodule")
    await sender.publish(f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1&k=v", b"hot")
    record = await hub.hub.upstream.wait_for(timeout=5)
    assert record.message.body == b"hot"
    assert record.origin == f"{DEVICE}/filtermodule"
    assert record.message.properties == {"k": "v"}
    assert record.message.system_properties["outputName"] == "output1"
    assert record.message.system_properties["edgeHubOriginInterface"] == "internal"
    sender.stop()


async def test_unrouted_and_spoofed_messages_are_acknowledged_and_dropped(start_hub):
    hub = await start_hub()
    receiver = await hub.client("filtermodule")
    await receiver.subscribe(FILTER_IN)
    sender = await hub.client("filtermodule")
    spoofer = await hub.client("SimulatedTemperatureSensor")
    # The sensor publishes as the filter (topic of another identity): PUBACK, but never routed.
    await spoofer.publish(f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1", b"x")
    await spoofer.publish("some/other/topic", b"x")
    await spoofer.publish(f"{SENSOR_OUT}/a=1&&b=2", b"bad bag")
    await spoofer.publish(f"{SENSOR_OUT}/%24.on=nowhere", b"no route")
    await asyncio.sleep(0.3)
    assert hub.hub.upstream.messages() == []
    dropped = hub.hub.snapshot().dropped
    assert dropped["spoofed_sender"] == 1
    assert dropped["bad_topic"] == 2
    assert dropped["no_route"] == 1
    for c in (receiver, sender, spoofer):
        c.stop()


async def test_messages_wait_for_the_module_and_arrive_in_priority_order(start_hub):
    routes = {
        "low": {
            "route": to_filter("low", "in"),
            "priority": 5,
        },
        "high": {
            "route": to_filter("high", "in"),
            "priority": 0,
        },
    }
    hub = await start_hub(manifest(routes))
    sender = await hub.client("SimulatedTemperatureSensor")
    for i in range(3):
        await sender.publish(f"{SENSOR_OUT}/%24.on=low", f"low{i}")
        await sender.publish(f"{SENSOR_OUT}/%24.on=high", f"high{i}")
    receiver = await hub.client("filtermodule")
    await receiver.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/#")
    got = [(await receiver.next()).payload.decode() for _ in range(6)]
    assert got == ["high0", "high1", "high2", "low0", "low1", "low2"]
    sender.stop()
    receiver.stop()


async def test_inputs_need_a_module_messages_subscription_and_a_matching_filter(start_hub):
    routes = {
        "a": to_filter("a", "in1"),
        "b": to_filter("b", "in2"),
    }
    hub = await start_hub(manifest(routes))
    receiver = await hub.client("filtermodule")
    # '.../inputs/+' does not register module messages in edgeHub: the message waits.
    await receiver.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/+")
    sender = await hub.client("SimulatedTemperatureSensor")
    await sender.publish(f"{SENSOR_OUT}/%24.on=a", b"waits")
    await receiver.nothing()
    # A '#' filter for in1 registers module messages: the waiting message for in1 arrives ...
    await receiver.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/in1/#")
    assert (await receiver.next()).payload == b"waits"
    # ... but one for in2 matches no filter of the module: edgeHub drops it.
    await sender.publish(f"{SENSOR_OUT}/%24.on=b", b"dropped")
    await receiver.nothing()
    assert hub.hub.snapshot().dropped["rejected_by_subscription"] == 1
    assert hub.hub.queued("filtermodule", "in2") == []
    sender.stop()
    receiver.stop()


async def test_delivered_qos_is_capped_by_the_subscription_and_flags_become_properties(start_hub):
    hub = await start_hub()
    receiver = await hub.client("filtermodule")
    await receiver.subscribe(FILTER_IN, qos=0)
    sender = await hub.client("SimulatedTemperatureSensor")
    await sender.publish(f"{SENSOR_OUT}/%24.on=temperatureOutput", b"r", retain=True)
    message = await receiver.next()
    assert message.qos == 0
    assert message.retain is False
    assert "mqtt-retain=true" in message.topic
    sender.stop()
    receiver.stop()


async def test_subscriptions_are_granted_at_most_qos_1(start_hub):
    hub = await start_hub()
    client = await hub.client("filtermodule")
    assert await client.subscribe(FILTER_IN, qos=2) == [1]
    assert await client.subscribe("$iothub/twin/res/#", qos=0) == [0]
    client.stop()


async def test_twin_get_patch_and_desired_notifications(start_hub):
    hub = await start_hub(manifest(twins={"filtermodule": {"tempLimit": 25}}))
    module = await hub.client("filtermodule")
    await module.subscribe("$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#")
    await module.publish("$iothub/twin/GET/?$rid=1", b" ")
    response = await module.next()
    assert response.topic == "$iothub/twin/res/200/?$rid=1"
    twin = json.loads(response.payload)
    assert twin["desired"]["tempLimit"] == 25 and twin["desired"]["$version"] == 2
    await module.publish("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"status": {"ok": true}}')
    assert (await module.next()).topic == "$iothub/twin/res/204/?$rid=2"
    assert hub.hub.twin("filtermodule")["reported"]["status"] == {"ok": True}
    await module.publish("$iothub/twin/PATCH/properties/reported/?$rid=3", b'{"bad.name": 1}')
    assert (await module.next()).topic == "$iothub/twin/res/400/?$rid=3"
    await module.publish("$iothub/twin/PATCH/properties/reported/?$rid=4", b"{not json")
    assert (await module.next()).topic == "$iothub/twin/res/500/?$rid=4"
    hub.hub.patch_desired("filtermodule", {"tempLimit": 30})
    patch = await module.next()
    assert patch.topic == "$iothub/twin/PATCH/properties/desired/?$version=3"
    assert json.loads(patch.payload) == {"tempLimit": 30, "$version": 3}
    module.stop()


async def test_a_malformed_twin_topic_closes_the_connection_without_puback(start_hub):
    hub = await start_hub()
    module = await hub.client("filtermodule")
    info = module.paho.publish("$iothub/twin/GET/", b" ", qos=1)  # GET without $rid
    await module.disconnected()
    assert not info.is_published()
    other = await hub.client("SimulatedTemperatureSensor")  # the hub keeps serving everyone else
    other.stop()


async def test_direct_methods_answered_missing_and_timed_out(start_hub):
    hub = await start_hub()
    module = await hub.client("filtermodule")
    with pytest.raises(MethodError) as not_subscribed:
        await hub.hub.invoke_method("filtermodule", "reset")
    assert not_subscribed.value.status == 404
    await module.subscribe("$iothub/methods/POST/#")

    async def answer() -> None:
        request = await module.next()
        assert request.topic.startswith("$iothub/methods/POST/reset/?$rid=")
        assert json.loads(request.payload) == {"hard": True}
        rid = request.topic.split("$rid=")[1]
        await module.publish(f"$iothub/methods/res/201/?$rid={rid}", b'{"done": 1}')

    answering = asyncio.ensure_future(answer())
    result = await hub.hub.invoke_method("filtermodule", "reset", {"hard": True}, response_timeout=5)
    await answering
    assert (result.status, result.payload) == (201, {"done": 1})
    with pytest.raises(MethodError) as timed_out:
        await hub.hub.invoke_method("filtermodule", "slow", response_timeout=5)
    assert timed_out.value.status == 504
    module.stop()


async def test_c2d_reaches_a_leaf_device_but_not_a_module(start_hub):
    hub = await start_hub(leaf_devices=("leaf1",))
    leaf = await hub.client("leaf1")
    await leaf.subscribe("devices/leaf1/messages/devicebound/#")
    hub.hub.send_c2d("leaf1", b"hello", {"p": "v"})
    message = await leaf.next()
    assert (
        message.topic
        == "devices/leaf1/messages/devicebound/p=v&%24.to=%2Fdevices%2Fleaf1%2Fmessages%2FdeviceBound"
    )
    assert message.payload == b"hello"
    with pytest.raises(MethodError):
        hub.hub.send_c2d(f"{DEVICE}/filtermodule", b"no")
    # leaf telemetry is routed with source /messages and origin downstream
    await leaf.publish("devices/leaf1/messages/events/k=v", b"from leaf")
    leaf.stop()


async def test_websocket_transport(start_hub):
    hub = await start_hub()
    receiver = await hub.client("filtermodule", transport="websockets")
    await receiver.subscribe(FILTER_IN)
    sender = await hub.client("SimulatedTemperatureSensor", transport="websockets")
    await sender.publish(f"{SENSOR_OUT}/%24.on=temperatureOutput", b"over ws")
    assert (await receiver.next()).payload == b"over ws"
    sender.stop()
    receiver.stop()


async def test_reload_applies_new_routes_and_pushes_changed_desired_properties(start_hub):
    hub = await start_hub(manifest(twins={"filtermodule": {"tempLimit": 25}}))
    module = await hub.client("filtermodule")
    await module.subscribe("$iothub/twin/PATCH/properties/desired/#", FILTER_IN)
    sensor_any = "FROM /messages/modules/SimulatedTemperatureSensor/*"
    new_routes = {"all": f'{sensor_any} INTO BrokeredEndpoint("/modules/filtermodule/inputs/any")'}
    hub.hub.reload(manifest(new_routes, twins={"filtermodule": {"tempLimit": 40, "mode": "eco"}}))
    patch = await module.next()
    assert patch.topic == "$iothub/twin/PATCH/properties/desired/?$version=3"
    assert json.loads(patch.payload) == {"tempLimit": 40, "mode": "eco", "$version": 3}
    sender = await hub.client("SimulatedTemperatureSensor")
    await sender.publish(f"{SENSOR_OUT}/%24.on=whatever", b"new route")
    delivered = await module.next()
    assert delivered.topic.startswith(f"devices/{DEVICE}/modules/filtermodule/inputs/any/")
    sender.stop()
    module.stop()


@pytest.mark.parametrize("protocol", ["MQTT", "Mqtt"])
async def test_websocket_subprotocol_names_are_matched_in_any_case(start_hub, protocol):
    """Microsoft's C SDK asks for ``MQTT``; edgeHub ignores the case, and so does the hub."""
    hub = await start_hub()
    module = f"{DEVICE}/filtermodule"
    username = f"{hub.hub.settings.iothub_hostname}/{module}/?api-version=2019-10-01"
    connect = codec.encode(codec.Connect(module, True, 60, username, hub.token(module).encode()))
    tls = ssl.create_default_context(cafile=str(hub.hub.ca_file))
    url = f"wss://127.0.0.1:{hub.hub.endpoints.https_port}/$iothub/websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(protocol,), ssl=tls) as ws:
        assert ws.protocol is not None and ws.protocol.lower() == "mqtt"
        await ws.send_bytes(connect)
        answer = await asyncio.wait_for(ws.receive(), 10)
        assert answer.type == aiohttp.WSMsgType.BINARY
        assert answer.data == b"\x20\x02\x00\x00"  # CONNACK, accepted
        assert hub.hub.is_connected("filtermodule")


async def test_amqp_over_websocket_is_chosen_by_its_subprotocol_in_any_case(start_hub):
    hub = await start_hub()
    tls = ssl.create_default_context(cafile=str(hub.hub.ca_file))
    url = f"wss://127.0.0.1:{hub.hub.endpoints.https_port}/$iothub/websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=("amqpwsb10",), ssl=tls) as ws:
        assert ws.protocol is not None and ws.protocol.upper() == "AMQPWSB10"
        await ws.send_bytes(b"AMQP\x03\x01\x00\x00")  # SASL header: the hub offers its mechanisms
        answer = await asyncio.wait_for(ws.receive(), 10)
        assert answer.type == aiohttp.WSMsgType.BINARY
        assert answer.data.startswith(b"AMQP\x03\x01\x00\x00")


async def test_desired_properties_set_from_the_cloud_side_stay_when_the_manifest_names_none(
    start_hub, tmp_path
):
    """IoT Hub leaves the twin of a module the manifest gives no desired properties alone, across restarts
    and reloads; a module the manifest does name gets exactly the manifest's."""
    named = {"SimulatedTemperatureSensor": {"SendInterval": 5}}
    hub = await start_hub(manifest(twins=named), data_dir=tmp_path / "hub")
    hub.hub.patch_desired("filtermodule", {"tempLimit": 42})
    hub.hub.patch_desired("SimulatedTemperatureSensor", {"extra": True})
    await hub.hub.stop()

    restarted = await start_hub(manifest(twins=named), data_dir=tmp_path / "hub")
    assert restarted.hub.twin("filtermodule")["desired"]["tempLimit"] == 42
    sensor = restarted.hub.twin("SimulatedTemperatureSensor")["desired"]
    assert sensor["SendInterval"] == 5 and "extra" not in sensor  # replaced by the manifest's
    restarted.hub.reload(manifest(twins=named))
    assert restarted.hub.twin("filtermodule")["desired"]["tempLimit"] == 42


@pytest.mark.parametrize(
    ("username", "password", "code"),
    [
        ("good", "wrong key", 5),  # a token signed with another module's key
        ("good", "", 5),  # an empty password
        ("good", "non-ASCII signature", 5),  # as any bad signature
        ("not a user name", "token", 3),  # unparsable user name... as over TCP and TLS
    ],
)
async def test_websocket_clients_get_the_connack_tcp_clients_get(start_hub, username, password, code):
    hub = await start_hub()
    module = f"{DEVICE}/filtermodule"
    if username == "good":
        username = f"{hub.hub.settings.iothub_hostname}/{module}/?api-version=2019-10-01"
    if password == "wrong key":
        password = hub.token(module, key=hub.hub.identity("SimulatedTemperatureSensor").primary_key)
    elif password == "token":
        password = hub.token(module)
    elif password == "non-ASCII signature":
        password = hub.token(module).replace("sig=", "sig=%C3%A9", 1)
    connect = codec.encode(codec.Connect(module, True, 60, username, password.encode()))
    tls = ssl.create_default_context(cafile=str(hub.hub.ca_file))
    url = f"wss://127.0.0.1:{hub.hub.endpoints.https_port}/$iothub/websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=("mqtt",), ssl=tls) as ws:
        await ws.send_bytes(connect)
        answer = await asyncio.wait_for(ws.receive(), 10)
        assert answer.type == aiohttp.WSMsgType.BINARY, answer
        assert answer.data == bytes([0x20, 0x02, 0x00, code])
