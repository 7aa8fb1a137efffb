"""The broker mode with IoT identities (SAS over TLS): the policy decides connect, publish and subscribe
on user topics, while each client's own IoT Hub topics keep working and telemetry is still routed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgehub_emu.manifest import parse_deployment
from edgehub_emu.routing import Message as HubMessage

from .conftest import EXAMPLE, IOTHUB, Hub


def connect_by_hand(port: int, client_id: str, clean: bool = True) -> tuple[mqtt.Client, int, bool]:
    """A paho client on the plain MQTT port, its loop run here until the CONNACK: (the client, the
    CONNACK's code as paho reports it, whether a session was present)."""
    paho = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311
    )
    answers: list[tuple[int, bool]] = []
    paho.on_connect = lambda _c, _u, flags, rc, _p: answers.append((rc.value, flags.session_present))
    paho.connect("127.0.0.1", port)
    for _ in range(50):
        paho.loop(0.1)
        if answers:
            break
    assert answers, f"no CONNACK for {client_id}"
    return paho, *answers[0]


def broker_manifest(authorizations: list[dict[str, Any]]) -> Any:
    doc = json.loads(json.dumps(EXAMPLE))
    hub = doc["modulesContent"]["$edgeHub"]["properties.desired"]
    hub["schemaVersion"] = "1.2"
    hub["routes"] = {
        "toFilter": "FROM /messages/modules/SimulatedTemperatureSensor/* "
        'INTO BrokeredEndpoint("/modules/filtermodule/inputs/input1")'
    }
    hub["mqttBroker"] = {"authorizations": authorizations}
    return parse_deployment(doc, env={})


POLICY = [
    {
        "identities": [f"{IOTHUB}/edge-device/SimulatedTemperatureSensor", "edge-device/filtermodule"],
        "allow": [{"operations": ["mqtt:connect"]}],
    },
    {
        "identities": ["{{iot:identity}}"],
        "allow": [
            {"operations": ["mqtt:publish"], "resources": ["alerts/{{iot:module_id}}"]},
            {"operations": ["mqtt:subscribe"], "resources": ["alerts/#"]},
        ],
    },
    {
        "identities": ["edge-device/filtermodule"],
        "deny": [{"operations": ["mqtt:publish"], "resources": ["alerts/#"]}],
    },
]


@pytest.fixture
async def hub(start_hub: Callable[..., Any]) -> Hub:
    return await start_hub(broker_manifest(POLICY), leaf_devices=("leaf1",))


async def test_connect_needs_an_allow(hub: Hub) -> None:
    await hub.client("leaf1", expect=5)  # authenticated, but no statement allows it to connect
    assert hub.hub.snapshot().broker["counters"]["refused_connect"] == 1  # type: ignore[index]
    await hub.client("filtermodule")


async def test_user_topics_follow_the_policy(hub: Hub) -> None:
    sensor = await hub.client("SimulatedTemperatureSensor")
    listener = await hub.client("filtermodule")
    assert await listener.subscribe("alerts/#", "secrets/#") == [1, 0x80]
    await sensor.publish("alerts/SimulatedTemperatureSensor", b"too hot")
    message = await listener.next()
    assert (message.topic, message.payload) == ("alerts/SimulatedTemperatureSensor", b"too hot")
    await sensor.publish("alerts/someone-else", b"spoofed")  # acknowledged, then dropped
    await listener.publish("alerts/filtermodule", b"denied")  # a deny wins over the allow
    await listener.nothing()
    counters = hub.hub.snapshot().broker["counters"]  # type: ignore[index]
    assert counters["denied_publish"] == 2 and counters["denied_subscribe"] == 1


async def test_a_subscription_to_another_modules_telemetry_is_refused_and_says_why(hub: Hub, caplog) -> None:
    listener = await hub.client("filtermodule")
    telemetry = "devices/edge-device/modules/SimulatedTemperatureSensor/messages/events/#"
    own_inputs = "devices/edge-device/modules/filtermodule/#"
    assert await listener.subscribe(telemetry, own_inputs) == [0x80, 1]
    assert "telemetry goes through the routes, not to subscribers" in caplog.text
    sensor = await hub.client("SimulatedTemperatureSensor")  # routed to filtermodule's input as ever
    await sensor.publish(
        "devices/edge-device/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput",
        b"t",
    )
    message = await listener.next()
    assert "/inputs/input1/" in message.topic and message.payload == b"t"


async def test_iothub_topics_still_work_beside_user_topics(hub: Hub) -> None:
    sensor = await hub.client("SimulatedTemperatureSensor")
    listener = await hub.client("filtermodule")
    assert await listener.subscribe(
        "devices/edge-device/modules/filtermodule/#", "$iothub/methods/POST/#", "alerts/#"
    ) == [1, 1, 1]
    await sensor.publish("devices/edge-device/modules/SimulatedTemperatureSensor/messages/events/", b"{}")
    routed = await listener.next()
    assert routed.topic.startswith("devices/edge-device/modules/filtermodule/inputs/input1/")

    async def answer() -> None:
        request = await listener.next()
        rid = request.topic.rsplit("=", 1)[1]
        await listener.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"ok": true}')

    task = asyncio.ensure_future(answer())
    result = await hub.hub.invoke_method("filtermodule", "ping", {})
    await task
    assert result.status == 200 and result.payload == {"ok": True}


async def test_anonymous_clients_need_dev(start_hub: Callable[..., Any]) -> None:
    plain = await start_hub(broker_manifest(POLICY), mqtt_port=0)
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tool", protocol=mqtt.MQTTv311)
    codes: list[int] = []
    paho.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc.value)
    await asyncio.to_thread(paho.connect, "127.0.0.1", plain.hub.endpoints.mqtt_port)
    for _ in range(50):
        await asyncio.to_thread(paho.loop, 0.1)
        if codes:
            break
    assert codes == [135]  # CONNACK 5: not authorized (anonymous without --dev)


async def test_an_anonymous_dev_tool_cannot_take_a_modules_client_id(start_hub: Callable[..., Any]) -> None:
    """With --dev, a tool without credentials that claims `edge-device/filtermodule` would take over
    the module's session and its messages: it gets CONNACK 2 instead, and the module keeps its queue."""
    hub = await start_hub(broker_manifest(POLICY), mqtt_port=0, dev=True)
    module = await hub.client("filtermodule", clean=False)
    await module.subscribe("devices/edge-device/modules/filtermodule/#")
    module.stop()
    await hub.hub.send_to_input("filtermodule", "input1", HubMessage(body=b"for the module"))

    def connack(client_id: str) -> int:
        paho, code, _ = connect_by_hand(hub.hub.endpoints.mqtt_port, client_id)
        paho.disconnect()
        return code

    assert await asyncio.to_thread(connack, "edge-device/filtermodule") == 133  # CONNACK 2
    assert await asyncio.to_thread(connack, "my-tool") == 0  # any other id is fine
    assert [m.body for m in hub.hub.queued("filtermodule", "input1")] == [b"for the module"]


async def test_persistent_sessions_of_tools_expire_and_the_modules_stay(start_hub, caplog) -> None:
    """Client ids a tool makes up would add up for ever: their persistent sessions are forgotten after
    the expiry. A module's (an identity of the deployment) is kept: its SDK counts on it."""
    caplog.set_level("INFO")
    hub = await start_hub(
        broker_manifest(POLICY), mqtt_port=0, dev=True, session_expiry=0.5, purge_interval=0.2
    )

    def connect(client_id: str) -> tuple[mqtt.Client, list[bool]]:
        paho, _, present = connect_by_hand(hub.hub.endpoints.mqtt_port, client_id, clean=False)
        return paho, [present]

    module = await hub.client("filtermodule", clean=False)  # away first: longer than the tool
    await module.subscribe("devices/edge-device/modules/filtermodule/#")
    module.stop()
    tool, present = await asyncio.to_thread(connect, "tool-1234")
    tool.subscribe("test/#", 1)
    await asyncio.to_thread(tool.loop, 0.5)
    tool.disconnect()
    async with asyncio.timeout(10):  # the hub's own word that it forgot the tool's session
        while "forgot 1 persistent session(s)" not in caplog.text:
            await asyncio.sleep(0.05)
    again, present = await asyncio.to_thread(connect, "tool-1234")
    assert present == [False]  # a fresh session: its subscriptions went with the old one
    again.disconnect()
    await hub.hub.send_to_input("filtermodule", "input1", HubMessage(body=b"kept"))
    back = await hub.client("filtermodule", clean=False)  # the module's session is still there
    assert (await back.next()).payload == b"kept"
    back.stop()
