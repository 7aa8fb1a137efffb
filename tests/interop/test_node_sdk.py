"""Unmodified modules written with Microsoft's Node SDK (azure-iot-device 1.18) against a real hub,
over AMQP (the transport C# modules and SimulatedTemperatureSensor use by default), AMQP over
WebSocket, and MQTT beside them.

The SDK connects to port 5671 (AMQP), 443 (WebSocket) or 8883 (MQTT) of the connection string's
GatewayHostName, so each test gives its hub a loopback address of its own (127.0.0.71, …). The modules
are ``tests/node/module.js`` processes; ``make test`` installs their packages with ``npm ci``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from edgehub_emu.hub import EdgeHub
from edgehub_emu.manifest import parse_deployment
from edgehub_emu.routing import Message
from edgehub_emu.testing import HubProcess, MethodError

from ..hubs import sdk_port_settings
from .module_process import ModuleProcess

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "node" / "module.js"
DEVICE = "edge-device"
SENSOR, FILTER = "SimulatedTemperatureSensor", "filtermodule"

pytestmark = pytest.mark.timeout(150)


def deployment():
    doc = json.loads((ROOT / "config" / "deployment.json").read_text())
    doc["modulesContent"][FILTER] = {"properties.desired": {"tempLimit": 25}}
    return parse_deployment(doc, env={})


class NodeModule(ModuleProcess):
    """A module process on the Node SDK; its events are the JSON lines it prints."""

    QUIT: ClassVar[dict[str, Any]] = {"op": "close"}
    FAIL_ON = "error"

    def __init__(self, process: asyncio.subprocess.Process, name: str, transport: str) -> None:
        super().__init__(process, f"{name} ({transport})")
        self._next_id = 0

    @classmethod
    async def start(cls, hub: EdgeHub, module: str, transport: str) -> NodeModule:
        return await cls.launch(module, transport, hub.module_environment(module))

    @classmethod
    async def launch(cls, module: str, transport: str, credentials: dict[str, str]) -> NodeModule:
        node = shutil.which("node")
        assert node is not None, "the Node SDK tests need node (Node 20) on the PATH"
        assert (SCRIPT.parent / "node_modules").is_dir(), "make test installs tests/node with npm ci"
        env = {**os.environ, **credentials, "TRANSPORT": transport}
        process = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(process, module, transport)

    async def send(self, output: str, body: str, **fields: Any) -> None:
        self._next_id += 1
        await self.command(op="send", output=output, body=body, id=self._next_id, **fields)
        sent = await self.event("sent")
        assert sent["id"] == self._next_id


@pytest.fixture
async def node_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    hubs: list[EdgeHub] = []
    modules: list[NodeModule] = []

    async def start(address: str) -> tuple[EdgeHub, Callable[..., Any]]:
        hub = EdgeHub(sdk_port_settings(tmp_path, address), deployment=deployment())
        await hub.start()
        hubs.append(hub)

        async def module(name: str, transport: str) -> NodeModule:
            m = await NodeModule.start(hub, name, transport)
            modules.append(m)
            await m.event("connected")
            return m

        return hub, module

    yield start
    for m in modules:
        await m.stop()
    for hub in hubs:
        await hub.stop()


ROUTED = {
    "properties": {"alert": "true", "spaced key": "a value/with?specials&="},
    "messageId": "m-1",
    "correlationId": "c-1",
    "contentType": "application/json",
    "contentEncoding": "utf-8",
}


def assert_routed_intact(event: dict[str, Any], body: str) -> None:
    assert event["inputName"] == "input1"
    assert event["body"] == body
    assert event["messageId"] == "m-1"
    assert event["correlationId"] == "c-1"
    assert event["contentType"] == "application/json"
    assert event["contentEncoding"] == "utf-8"
    assert event["properties"]["alert"] == "true"
    assert event["properties"]["spaced key"] == "a value/with?specials&="


@pytest.mark.parametrize(("transport", "address"), [("Amqp", "127.0.0.71"), ("AmqpWs", "127.0.0.72")])
async def test_node_modules_route_twin_and_methods_over_amqp(node_hub, transport, address, tmp_path):
    hub, module = await node_hub(address)
    receiver = await module(FILTER, transport)
    sender = await module(SENSOR, transport)

    # an output routed to another module's input, everything a module can see intact
    await receiver.command(op="inputs")
    await receiver.event("listening")
    # (as in edgeHub, an AMQP client counts as connected from its first link, not from its CBS token)
    await _until(lambda: hub.is_connected(FILTER), "the receiver's first link")
    (info,) = [i for i in hub.snapshot().identities if i.id == f"{DEVICE}/{FILTER}"]
    assert info.transport is not None and info.transport.startswith("amqp")
    await sender.send("temperatureOutput", '{"machine": {"temperature": 101.5}}', **ROUTED)
    assert_routed_intact(await receiver.event("input"), '{"machine": {"temperature": 101.5}}')
    # the input was accepted: nothing waits in the queue for it
    await _until(lambda: not hub.queued(FILTER, "input1"), "the input's acknowledgement")

    # twin: get, reported patch, desired patches pushed
    await receiver.command(op="twin")
    twin = await receiver.event("twin")
    assert twin["desired"]["tempLimit"] == 25
    await receiver.command(op="report", patch={"status": "running", "limit": {"value": 25}})
    await receiver.event("reported")
    assert hub.twin(FILTER)["reported"]["limit"] == {"value": 25}
    await receiver.command(op="desired")
    await receiver.event("listening")
    hub.patch_desired(FILTER, {"tempLimit": 30})
    while (await receiver.event("desired"))["patch"].get("tempLimit") != 30:
        pass  # the SDK reports the whole twin's desired section once when it subscribes

    # direct methods: from the hub's API, from the CLI, and one nobody answers
    await receiver.command(op="method", name="reset", status=200, payload={"done": True})
    await receiver.event("listening")
    result = await hub.invoke_method(FILTER, "reset", {"hard": True}, response_timeout=20, connect_timeout=10)
    assert (result.status, result.payload) == (200, {"done": True})
    assert (await receiver.event("method"))["payload"] == {"hard": True}
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("edgehub-emu")),
        "invoke",
        FILTER,
        "reset",
        "--payload",
        '{"from": "cli"}',
        "--data-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await cli.communicate()
    assert cli.returncode == 0
    assert json.loads(output) == {"status": 200, "payload": {"done": True}}
    with pytest.raises(MethodError) as unanswered:
        await hub.invoke_method(FILTER, "nobody-handles-this", response_timeout=5)
    assert unanswered.value.status == 504

    # the receiver's own output goes upstream
    await receiver.send("output1", "alert!", properties={"MessageType": "Alert"})
    record = await hub.upstream.wait_for(timeout=20)
    assert record.message.body == b"alert!"
    assert record.origin == f"{DEVICE}/{FILTER}"
    assert record.message.properties["MessageType"] == "Alert"


@pytest.mark.parametrize(
    ("sending", "receiving", "address"),
    [("Amqp", "Mqtt", "127.0.0.73"), ("Mqtt", "Amqp", "127.0.0.74")],
)
async def test_a_message_crosses_between_amqp_and_mqtt_intact(node_hub, sending, receiving, address):
    hub, module = await node_hub(address)
    receiver = await module(FILTER, receiving)
    sender = await module(SENSOR, sending)
    await receiver.command(op="inputs")
    await receiver.event("listening")
    await sender.send("temperatureOutput", "across the heads", **ROUTED)
    assert_routed_intact(await receiver.event("input"), "across the heads")
    # what a route can see of it, at the hub: the same whichever head it came in on
    await receiver.send("output1", "upstream too", **ROUTED)
    record = await hub.upstream.wait_for(timeout=20)
    assert record.message.properties == ROUTED["properties"]
    system = record.message.system_properties
    assert (system["messageId"], system["cid"]) == ("m-1", "c-1")
    assert (system["contentType"], system["contentEncoding"]) == ("application/json", "utf-8")
    assert (system["outputName"], system["connectionModuleId"]) == ("output1", FILTER)


async def test_a_module_rejecting_an_input_drops_it_as_edgehub_does(node_hub):
    hub, module = await node_hub("127.0.0.75")
    receiver = await module(FILTER, "Amqp")
    await receiver.command(op="inputs", settle="reject")
    await receiver.event("listening")
    await hub.send_to_input(FILTER, "input1", Message(body=b"refused"))
    assert (await receiver.event("input"))["body"] == "refused"
    await hub.send_to_input(FILTER, "input1", Message(body=b"sentinel"))
    assert (await receiver.event("input"))["body"] == "sentinel"  # the refused one is not sent again
    await _until(lambda: not hub.queued(FILTER, "input1"), "the queue to empty")


async def test_after_a_hub_restart_amqp_modules_reconnect_and_nothing_acknowledged_is_lost(node_hub):
    hub, module = await node_hub("127.0.0.76")
    sender = await module(SENSOR, "Amqp")
    for i in range(10):  # acknowledged by the hub while the receiver is away: queued durably
        await sender.send("temperatureOutput", f"before {i}")
    await hub.stop()
    restarted, module = await node_hub("127.0.0.76")
    receiver = await module(FILTER, "Amqp")
    await receiver.command(op="inputs")
    await receiver.event("listening")
    await sender.send("temperatureOutput", "after")
    assert restarted.is_connected(SENSOR)
    bodies = [(await receiver.event("input"))["body"] for _ in range(11)]
    assert bodies == [f"before {i}" for i in range(10)] + ["after"]


async def _until(condition: Callable[[], Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_run_and_creds_from_the_command_line_serve_node_modules_over_amqp(tmp_path: Path):
    """The README's path with an AMQP module: `edgehub-emu run`, then `edgehub-emu creds MODULE`."""
    exe = Path(sys.executable).with_name("edgehub-emu")
    manifest = str(ROOT / "config" / "deployment.json")
    hub = await asyncio.to_thread(
        HubProcess,
        tmp_path,
        "-m",
        manifest,
        "--host",
        "127.0.0.77",  # 5671 and 8883, as the SDKs require, on an address of its own
        "--https-port",
        "0",
        "--http-port",
        "0",
        "--metrics-port",
        "0",
        free_ports=False,
    )
    modules: list[NodeModule] = []
    try:

        async def start(module: str, transport: str) -> NodeModule:
            done = await asyncio.create_subprocess_exec(
                str(exe),
                "creds",
                module,
                "--format",
                "json",
                "-m",
                manifest,
                "--data-dir",
                str(tmp_path),
                stdout=asyncio.subprocess.PIPE,
            )
            output, _ = await done.communicate()
            assert done.returncode == 0
            node = await NodeModule.launch(module, transport, json.loads(output))
            modules.append(node)
            await node.event("connected")
            return node

        receiver = await start(FILTER, "Amqp")
        sender = await start(SENSOR, "Mqtt")
        await receiver.command(op="inputs")
        await receiver.event("listening")
        await sender.send("temperatureOutput", "from the README")
        assert (await receiver.event("input"))["body"] == "from the README"
    finally:
        for m in modules:
            await m.stop()
        assert await asyncio.to_thread(hub.stop) == 0


async def test_iotedgehubdev_single_module_instructions_work_as_written(tmp_path: Path):
    """iotedgehubdev's way: `start -i input1,input2` (here `run --inputs`), the credentials of module
    `target`, then `POST /api/v1/messages {"inputName": "input1", "data": "hello world"}`."""
    import urllib.error
    import urllib.request

    exe = Path(sys.executable).with_name("edgehub-emu")
    hub = await asyncio.to_thread(
        HubProcess,
        tmp_path,
        "--inputs",
        "input1,input2",
        "--host",
        "127.0.0.78",  # 5671, as the SDK requires, on an address of its own
        "--https-port",
        "0",
        "--metrics-port",
        "0",
        "--http-port",
        "0",
        free_ports=False,
    )
    module: NodeModule | None = None
    try:
        assert "single-module mode: 'target' with inputs input1, input2" in "".join(hub.banner)
        done = await asyncio.create_subprocess_exec(
            str(exe),
            "creds",
            "target",
            "--format",
            "json",
            "--data-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await done.communicate()
        assert done.returncode == 0
        module = await NodeModule.launch("target", "Amqp", json.loads(output))
        await module.event("connected")
        await module.command(op="inputs")
        await module.event("listening")

        api = f"http://{hub.endpoints['http_host']}:{hub.endpoints['http_port']}"

        def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            request = urllib.request.Request(
                f"{api}/api/v1/messages",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, json.load(response)
            except urllib.error.HTTPError as refused:
                return refused.code, json.load(refused)

        status, answer = await asyncio.to_thread(post, {"inputName": "input1", "data": "hello world"})
        assert status == 200 and answer["queued"] == f"{DEVICE}/target/input1"
        received = await module.event("input")
        assert (received["inputName"], received["body"]) == ("input1", "hello world")
        status, answer = await asyncio.to_thread(post, {"inputName": "input3", "data": "x"})
        assert status == 400 and "input1, input2" in answer["error"]["message"]

        await module.send("output1", "processed")  # the target's outputs go to $upstream

        def upstream() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"{api}/upstream/messages?since=0", timeout=10) as response:
                return json.load(response)["messages"]

        deadline = time.monotonic() + 20
        while not (messages := await asyncio.to_thread(upstream)):
            assert time.monotonic() < deadline, "the target's output never reached $upstream"
            await asyncio.sleep(0.1)
        assert (messages[0]["origin"], messages[0]["body"]) == (f"{DEVICE}/target", "processed")
    finally:
        if module is not None:
            await module.stop()
        assert await asyncio.to_thread(hub.stop) == 0
