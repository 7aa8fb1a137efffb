"""The ``edgehub`` pytest fixture as a module author uses it: real MQTT clients (and the real SDK) against it.

The fixture is registered through the package's ``pytest11`` entry point, so these tests request it by
name without importing anything — exactly as a user's test suite does after ``pip install edgehub-emu``.
"""

from __future__ import annotations

import json
import queue
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgehub_emu.core import MethodError
from edgehub_emu.identity import make_token
from edgehub_emu.testing import EdgeHubFixture

ROOT = Path(__file__).resolve().parents[2]
SDK_PYTHON = ROOT / ".venv-sdk" / "bin" / "python"
SDK_MODULE = ROOT / "tests" / "interop" / "sdk_module.py"
NODE_MODULE = ROOT / "tests" / "node" / "module.js"

# The project's example deployment with one route instead: everything any module sends goes upstream.
EVERYTHING_UP = json.loads((ROOT / "config" / "deployment.json").read_text())
EVERYTHING_UP["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {
    "all": "FROM /messages/* INTO $upstream"
}


class ModuleClient:
    """A plain paho client logged in with the module's connection string, as any MQTT module would."""

    def __init__(self, edgehub: EdgeHubFixture, module: str) -> None:
        fields = dict(part.split("=", 1) for part in edgehub.connection_string(module).split(";"))
        identity = f"{fields['DeviceId']}/{fields['ModuleId']}"
        self.topic = f"devices/{identity.replace('/', '/modules/')}"
        self.received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=identity, protocol=mqtt.MQTTv311
        )
        resource = f"{fields['HostName']}/devices/{fields['DeviceId']}/modules/{fields['ModuleId']}"
        token = make_token(resource, fields["SharedAccessKey"], int(time.time()) + 3600)
        self.client.username_pw_set(f"{fields['HostName']}/{identity}/?api-version=2019-10-01", token)
        self.client.tls_set_context(ssl.create_default_context(cafile=str(edgehub.ca_file)))
        self.client.on_message = lambda _c, _u, message: self.received.put(message)
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect(edgehub.host, edgehub.port)
        self.client.loop_start()
        assert connected.wait(10), "the module did not connect"

    def subscribe_inputs(self) -> None:
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe(f"{self.topic}/inputs/#", qos=1)
        assert subscribed.wait(10)

    def send(self, output: str, body: bytes, **properties: str) -> None:
        bag = "&".join([f"$.on={output}", *(f"{k}={v}" for k, v in properties.items())])
        self.client.publish(f"{self.topic}/messages/events/{bag}", body, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def filtermodule(edgehub: EdgeHubFixture):
    client = ModuleClient(edgehub, "filtermodule")
    yield client
    client.close()


def test_without_a_marker_the_project_manifest_is_loaded_and_outputs_reach_upstream(edgehub, filtermodule):
    filtermodule.send("output1", b'{"temperature": 104}', MessageType="Alert")

    message = edgehub.upstream.get(timeout=10)

    assert message.body == b'{"temperature": 104}'
    assert message.properties["MessageType"] == "Alert"
    assert message.system_properties["connectionModuleId"] == "filtermodule"
    assert [m.body for m in edgehub.upstream.all()] == [b'{"temperature": 104}']


def test_get_returns_each_message_once_and_filters_with_where(edgehub, filtermodule):
    for n in range(3):
        filtermodule.send(
            "output1", json.dumps({"n": n}).encode(), MessageType="Alert" if n == 2 else "Normal"
        )

    alert = edgehub.upstream.get(where=lambda m: m.properties.get("MessageType") == "Alert")
    assert json.loads(alert.body) == {"n": 2}
    with pytest.raises(AssertionError, match="no upstream message within"):
        edgehub.upstream.get(timeout=0.3)  # the earlier two were passed over by the match above


def test_send_to_input_reaches_a_subscribed_module_with_json_properties(edgehub, filtermodule):
    filtermodule.subscribe_inputs()

    edgehub.send_to_input(
        "filtermodule", "input1", {"machine": {"temperature": 104}}, properties={"site": "A"}
    )

    message = filtermodule.received.get(timeout=10)
    assert message.topic.startswith("devices/edge-device/modules/filtermodule/inputs/input1/")
    assert "site=A" in message.topic and "%24.ct=application%2Fjson" in message.topic
    assert json.loads(message.payload) == {"machine": {"temperature": 104}}


def test_messages_wait_in_the_queue_while_the_module_is_offline(edgehub):
    edgehub.send_to_input("filtermodule", "input1", b"first")
    edgehub.send_to_input("filtermodule", "input1", "second")

    assert not edgehub.connected("filtermodule")
    assert [m.body for m in edgehub.messages_for("filtermodule", "input1")] == [b"first", b"second"]

    client = ModuleClient(edgehub, "filtermodule")
    try:
        client.subscribe_inputs()
        assert [client.received.get(timeout=10).payload for _ in range(2)] == [b"first", b"second"]
        assert edgehub.connected("filtermodule")
    finally:
        client.close()


def test_a_failed_wait_says_what_did_happen(edgehub):
    edgehub.send_to_input("filtermodule", "input1", b"nobody reads me")

    with pytest.raises(AssertionError) as failure:
        edgehub.upstream.get(timeout=0.2, where=lambda m: False)

    text = str(failure.value)
    assert "no upstream message matched within 0.2 s" in text
    assert "nothing reached $upstream" in text
    assert "edge-device/filtermodule/input1" in text and "connected: no client" in text
    assert "@pytest.mark.edgehub(sdk=True)" in text  # the likely cause, when an SDK module never came


def test_twins_and_methods_without_a_module_connected(edgehub):
    applied = edgehub.patch_desired("filtermodule", {"TemperatureThreshold": 30})

    assert applied["TemperatureThreshold"] == 30
    assert edgehub.twin("filtermodule")["desired"]["TemperatureThreshold"] == 30
    with pytest.raises(MethodError) as failure:
        edgehub.invoke_method("filtermodule", "reset", {}, timeout=5)
    assert failure.value.status == 404


@pytest.mark.edgehub(manifest=EVERYTHING_UP, store="sqlite")
async def test_an_asyncio_test_awaits_upstream_with_a_manifest_given_as_a_dict(edgehub, tmp_path):
    probe = ModuleClient(edgehub, "SimulatedTemperatureSensor")
    try:
        probe.send("temperatureOutput", b"hello")
        message = await edgehub.upstream.next(timeout=10)
    finally:
        probe.close()

    assert message.body == b"hello"
    assert message.system_properties["connectionModuleId"] == "SimulatedTemperatureSensor"
    assert list((edgehub.hub.settings.data_dir / "queue").glob("*.log"))  # the durable store's log


@pytest.mark.edgehub(sdk=True)
def test_a_real_sdk_module_runs_against_the_fixture(edgehub):
    assert SDK_PYTHON.exists(), "make test creates .venv-sdk with the SDK; run it through make"
    assert edgehub.port == 8883 and edgehub.host.startswith("127.1.")
    env = {"PATH": "/usr/bin:/bin", **edgehub.module_env("filtermodule")}
    assert env["tempLimit"] == "100"  # the module's env from the manifest, as edgeAgent passes it
    module = subprocess.Popen(
        [str(SDK_PYTHON), str(SDK_MODULE)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert module.stdin is not None and module.stdout is not None
    try:
        events = _events(module.stdout)
        assert events.get(timeout=30)["event"] == "connected"
        module.stdin.write(json.dumps({"send": {"output": "output1", "data": "from the sdk"}}) + "\n")
        module.stdin.flush()

        assert edgehub.upstream.get(timeout=30).body == b"from the sdk"
        result = edgehub.invoke_method("filtermodule", "ping", {"n": 1})
        assert (result.status, result.payload) == (200, {"echo": {"n": 1}, "method": "ping"})
    finally:
        module.stdin.write(json.dumps({"quit": True}) + "\n")
        module.stdin.flush()
        module.wait(20)


@pytest.mark.edgehub(sdk=True)
def test_a_node_module_over_amqp_runs_against_the_fixture(edgehub):
    node = shutil.which("node")
    assert node is not None, "the Node SDK tests need node on the PATH"
    assert edgehub.amqps_port == 5671
    env = {"PATH": "/usr/bin:/bin", **edgehub.module_env("filtermodule"), "TRANSPORT": "Amqp"}
    module = subprocess.Popen(
        [node, str(NODE_MODULE)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert module.stdin is not None and module.stdout is not None
    try:
        events = _events(module.stdout)
        assert events.get(timeout=30)["event"] == "connected"
        module.stdin.write(json.dumps({"op": "inputs"}) + "\n")
        module.stdin.flush()
        assert events.get(timeout=30)["event"] == "listening"
        edgehub.send_to_input("filtermodule", "input1", b"to the node module", properties={"k": "v"})
        received = events.get(timeout=30)
        assert (received["event"], received["body"], received["properties"]) == (
            "input",
            "to the node module",
            {"k": "v"},
        )
        command = {"op": "send", "output": "output1", "body": "from node", "id": 1}
        module.stdin.write(json.dumps(command) + "\n")
        module.stdin.flush()
        assert edgehub.upstream.get(timeout=30).body == b"from node"
    finally:
        module.stdin.write(json.dumps({"op": "close"}) + "\n")
        module.stdin.flush()
        module.wait(20)


def _events(stream: Any) -> queue.Queue[dict[str, Any]]:
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        for line in stream:
            if line.startswith("{"):
                events.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    return events


@pytest.mark.edgehub(manifest="config/broker.json")
def test_broker_mode_user_topics_from_a_test(edgehub: EdgeHubFixture) -> None:
    """A module that uses IoT Edge 1.2's user topics: the test publishes to it and watches what it sends."""
    module = ModuleClient(edgehub, "filtermodule")
    try:
        watch = edgehub.watch("alerts/#")
        subscribed = threading.Event()
        module.client.on_subscribe = lambda *_: subscribed.set()
        module.client.subscribe("sync/#", qos=1)
        assert subscribed.wait(10)
        edgehub.publish("sync/config", '{"mode": "eco"}')
        assert module.received.get(timeout=10).payload == b'{"mode": "eco"}'
        module.client.publish("alerts/filtermodule/hot", b"104", qos=1).wait_for_publish(10)
        assert watch.get(timeout=10) == ("alerts/filtermodule/hot", b"104")
    finally:
        module.close()


def test_broker_helpers_say_when_the_broker_mode_is_off(edgehub: EdgeHubFixture) -> None:
    with pytest.raises(RuntimeError, match="the broker mode is off"):
        edgehub.watch("alerts/#")


TRACED = json.loads((ROOT / "config" / "deployment.json").read_text())
TRACED["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {
    "hot": {
        "route": "FROM /messages/modules/SimulatedTemperatureSensor/outputs/temperatureOutput "
        "WHERE $body.machine.temperature > 30 INTO $upstream",
        "priority": 1,
        "timeToLiveSecs": 60,
    },
    "toFilter": {
        "route": "FROM /messages/modules/SimulatedTemperatureSensor/outputs/temperatureOutput "
        'INTO BrokeredEndpoint("/modules/filtermodule/inputs/input1")',
        "timeToLiveSecs": 1,
    },
}


@pytest.mark.edgehub(manifest=TRACED)
def test_the_trace_says_what_became_of_each_message_and_a_failed_wait_prints_it(edgehub):
    sensor = ModuleClient(edgehub, "SimulatedTemperatureSensor")
    try:
        sensor.send(
            "temperatureOutput",
            b'{"machine": {"temperature": 40}}',
            **{"$.ct": "application%2Fjson", "$.ce": "utf-8"},
        )
        sensor.send("temperatureOutput", b"not json")  # $body unreadable: "hot" is undefined
        sensor.send("elsewhere", b"nobody routes me")
    finally:
        sensor.close()
    hot = edgehub.upstream.get()
    routed, undefined, dropped = edgehub.trace(module="SimulatedTemperatureSensor", count=3)

    assert routed["edgeMessageId"] == hot.system_properties["edgeMessageId"]
    assert [(r["name"], r["outcome"]) for r in routed["routes"]] == [("hot", "fired"), ("toFilter", "fired")]
    copies = {c["endpoint"]: c for c in routed["queued"]}
    assert (copies["iothub"]["priority"], copies["iothub"]["timeToLiveSecs"]) == (1, 60)
    assert copies["iothub"]["state"] == "delivered"
    assert [e["event"] for e in copies["iothub"]["events"]] == ["delivered"]
    assert copies["edge-device/filtermodule/input1"]["state"] in ("waiting", "expired")  # nobody reads it

    verdict = {r["name"]: r for r in undefined["routes"]}["hot"]
    assert verdict["outcome"] == "undefined" and "$body is unreadable" in verdict["reasons"][0]
    assert dropped["dropped"] == "no_route" and dropped["queued"] == []
    assert {r["outcome"] for r in dropped["routes"]} == {"source_mismatch"}

    deadline = time.monotonic() + 10  # filtermodule never comes: its copies' 1 s time-to-live runs out
    while {c["state"] for c in edgehub.trace(routed["edgeMessageId"])[0]["queued"]} != {
        "delivered",
        "expired",
    }:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pytest.raises(AssertionError) as failure:
        edgehub.upstream.get(timeout=0.2)
    text = str(failure.value)
    assert "the latest messages that did not reach $upstream, traced:" in text
    assert "undefined       hot" in text and "$body is unreadable" in text
    assert "dropped: no_route" in text
    assert "expired: its time-to-live ran out before delivery" in text


@pytest.mark.edgehub(manifest=TRACED)
def test_the_fixture_draws_the_running_deployment(edgehub):
    mermaid = edgehub.graph()
    assert mermaid.startswith("flowchart LR") and "hot<br/>" in mermaid and "toFilter<br/>" in mermaid
    assert "WHERE $body.machine.temperature #gt; 30" in mermaid
    assert edgehub.graph("dot").startswith("digraph deployment {")
    assert 'data-route="hot"' in edgehub.graph("svg")
