"""Unmodified modules written with the real azure-iot-device 2.14 SDK, against a real hub.

The SDK always connects to port 8883 (443 with websockets) of the connection string's
GatewayHostName, so each test gives its hub its own loopback address (127.0.0.2, …) with those ports.
The modules run in .venv-sdk (the SDK needs paho-mqtt<2) as subprocesses: tests/interop/sdk_module.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgehub_emu.hub import EdgeHub
from edgehub_emu.manifest import parse_deployment
from edgehub_emu.testing import HubProcess

from ..hubs import sdk_port_settings
from .module_process import ModuleProcess

ROOT = Path(__file__).resolve().parents[2]
SDK_PYTHON = ROOT / ".venv-sdk" / "bin" / "python"
SCRIPT = Path(__file__).with_name("sdk_module.py")
DEVICE = "edge-device"

pytestmark = pytest.mark.timeout(120)


def deployment():
    doc = json.loads((ROOT / "config" / "deployment.json").read_text())
    doc["modulesContent"]["filtermodule"] = {"properties.desired": {"tempLimit": 25}}
    return parse_deployment(doc, env={})


class SdkModule(ModuleProcess):
    """A module process using the SDK; events are the JSON lines it prints."""

    @classmethod
    async def start(cls, hub: EdgeHub, module: str, websockets: bool = False) -> SdkModule:
        credentials = {
            "EdgeHubConnectionString": hub.connection_string(module),
            "EdgeModuleCACertificateFile": str(hub.ca_file),
        }
        return await cls.launch(module, credentials, websockets)

    @classmethod
    async def launch(cls, module: str, credentials: dict[str, str], websockets: bool = False) -> SdkModule:
        assert SDK_PYTHON.exists(), "make test creates .venv-sdk with the SDK; run it through make"
        env = {
            **os.environ,
            **credentials,
            "SDK_WEBSOCKETS": "1" if websockets else "0",
            "PYTHONWARNINGS": "ignore",
        }
        process = await asyncio.create_subprocess_exec(
            str(SDK_PYTHON),
            str(SCRIPT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(process, module)


@pytest.fixture
async def sdk_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    hubs: list[EdgeHub] = []
    modules: list[SdkModule] = []

    async def start(address: str) -> tuple[EdgeHub, Callable[..., Any]]:
        hub = EdgeHub(sdk_port_settings(tmp_path, address, amqp=False), deployment=deployment())
        await hub.start()
        hubs.append(hub)

        async def module(name: str, websockets: bool = False) -> SdkModule:
            m = await SdkModule.start(hub, name, websockets)
            modules.append(m)
            await m.event("connected")
            return m

        return hub, module

    yield start
    for m in modules:
        await m.stop()
    for hub in hubs:
        await hub.stop()


async def exercise(hub: EdgeHub, module: Callable[..., Any], websockets: bool) -> None:
    receiver = await module("filtermodule", websockets)
    sender = await module("SimulatedTemperatureSensor", websockets)

    # an output routed to another module's input, properties intact
    await sender.command(
        send={
            "output": "temperatureOutput",
            "data": '{"machine": {"temperature": 101.5}}',
            "properties": {"alert": "true", "spaced key": "a value/with?specials&="},
            "content_type": "application/json",
            "content_encoding": "utf-8",
            "message_id": "m-1",
            "correlation_id": "c-1",
        }
    )
    message = await receiver.event("message")
    assert message["input"] == "input1"
    assert message["data"] == '{"machine": {"temperature": 101.5}}'
    assert message["content_type"] == "application/json"
    assert message["content_encoding"] == "utf-8"
    assert message["message_id"] == "m-1"
    assert message["correlation_id"] == "c-1"
    assert message["properties"]["alert"] == "true"
    assert message["properties"]["spaced key"] == "a value/with?specials&="
    assert message["properties"]["$.cmid"] == "SimulatedTemperatureSensor"

    # twin: get, reported patch, desired patch
    await receiver.command(get_twin=True)
    twin = (await receiver.event("twin"))["twin"]
    assert twin["desired"]["tempLimit"] == 25
    await receiver.command(report={"status": "running", "limit": {"value": 25}})
    await receiver.event("reported")
    assert hub.twin("filtermodule")["reported"]["limit"] == {"value": 25}
    hub.patch_desired("filtermodule", {"tempLimit": 30})
    patch = (await receiver.event("desired"))["patch"]
    assert patch["tempLimit"] == 30

    # a direct method handled and answered
    result = await hub.invoke_method("filtermodule", "reset", {"hard": True}, response_timeout=20)
    assert result.status == 200
    assert result.payload == {"echo": {"hard": True}, "method": "reset"}

    # the receiver's own output goes upstream
    await receiver.command(
        send={"output": "output1", "data": "alert!", "properties": {"MessageType": "Alert"}}
    )
    record = await hub.upstream.wait_for(timeout=20)
    assert record.message.body == b"alert!"
    assert record.origin == f"{DEVICE}/filtermodule"
    assert record.message.properties["MessageType"] == "Alert"


async def test_sdk_modules_route_twin_and_methods_over_mqtt(sdk_hub):
    hub, module = await sdk_hub("127.0.0.2")
    await exercise(hub, module, websockets=False)


async def test_sdk_modules_over_websockets(sdk_hub):
    hub, module = await sdk_hub("127.0.0.3")
    await exercise(hub, module, websockets=True)


async def test_sdk_module_reconnects_after_the_hub_restarts_and_keeps_its_subscriptions(sdk_hub):
    hub, module = await sdk_hub("127.0.0.4")
    receiver = await module("filtermodule")
    sender = await module("SimulatedTemperatureSensor")
    await hub.stop()
    restarted, _ = await sdk_hub("127.0.0.4")
    deadline = time.monotonic() + 60
    while not {f"{DEVICE}/filtermodule", f"{DEVICE}/SimulatedTemperatureSensor"} <= set(
        restarted.snapshot().connected
    ):
        assert time.monotonic() < deadline, "the SDK modules did not reconnect"
        await asyncio.sleep(0.2)
    # The SDK does not subscribe again after a reconnect: the persistent session must still deliver.
    await sender.command(send={"output": "temperatureOutput", "data": "after restart"})
    message = await receiver.event("message", timeout=30)
    assert message["data"] == "after restart"
    result = await restarted.invoke_method("filtermodule", "ping", response_timeout=20)
    assert result.status == 200


async def test_run_and_creds_from_the_command_line_serve_sdk_modules(tmp_path: Path):
    """The README's path: `edgehub-emu run`, then `edgehub-emu creds MODULE` for each module."""
    exe = Path(sys.executable).with_name("edgehub-emu")
    common = ["-m", str(ROOT / "config" / "deployment.json"), "--data-dir", str(tmp_path)]
    # the SDK connects to port 8883: on an address of its own
    hub = await asyncio.to_thread(
        HubProcess,
        tmp_path,
        "-m",
        str(ROOT / "config" / "deployment.json"),
        "--host",
        "127.0.0.5",
        "--https-port",
        "0",
        "--http-port",
        "0",
        "--metrics-port",
        "0",
        free_ports=False,
    )
    modules: list[SdkModule] = []
    try:

        async def creds(module: str) -> dict[str, str]:
            done = await asyncio.create_subprocess_exec(
                str(exe), "creds", module, "--format", "json", *common, stdout=asyncio.subprocess.PIPE
            )
            output, _ = await done.communicate()
            assert done.returncode == 0
            return json.loads(output)

        receiver = await SdkModule.launch("filtermodule", await creds("filtermodule"))
        modules.append(receiver)
        sender = await SdkModule.launch(
            "SimulatedTemperatureSensor", await creds("SimulatedTemperatureSensor")
        )
        modules.append(sender)
        await receiver.event("connected")
        await sender.event("connected")
        await sender.command(send={"output": "temperatureOutput", "data": "from the README"})
        assert (await receiver.event("message"))["data"] == "from the README"
    finally:
        for m in modules:
            await m.stop()
        assert await asyncio.to_thread(hub.stop) == 0


async def test_edge_environment_modules_connect_and_call_each_others_methods(sdk_hub, tmp_path: Path):
    """create_from_edge_environment() through the workload API, and ModuleClient.invoke_method."""
    await sdk_hub("127.0.0.7")
    modules: list[SdkModule] = []

    async def edge_module(name: str) -> SdkModule:
        done = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("edgehub-emu")),
            "creds",
            name,
            "--edge",
            "--format",
            "json",
            "-m",
            str(ROOT / "config" / "deployment.json"),
            "--data-dir",
            str(tmp_path),
            "--hostname",
            "127.0.0.7",
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await done.communicate()
        module = await SdkModule.launch(name, json.loads(output))
        modules.append(module)
        await module.event("connected")
        return module

    try:
        caller = await edge_module("SimulatedTemperatureSensor")
        callee = await edge_module("filtermodule")
        await caller.command(send={"output": "temperatureOutput", "data": "via the edge environment"})
        assert (await callee.event("message"))["data"] == "via the edge environment"
        await caller.command(
            invoke={"device": DEVICE, "module": "filtermodule", "method": "ping", "payload": {"n": 1}}
        )
        invoked = await caller.event("invoked")
        assert invoked["result"]["status"] == 200
        assert invoked["result"]["payload"] == {"echo": {"n": 1}, "method": "ping"}
    finally:
        for m in modules:
            await m.stop()


async def test_an_sdk_module_driven_only_through_the_http_api(sdk_hub):
    import aiohttp

    hub, module = await sdk_hub("127.0.0.8")
    receiver = await module("filtermodule")
    api = f"http://{hub.endpoints.http_host}:{hub.endpoints.http_port}"
    twin_url = f"{api}/twins/{DEVICE}/modules/filtermodule"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{twin_url}/methods", json={"methodName": "reset", "payload": {"a": 1}}
        ) as response:
            assert await response.json() == {"status": 200, "payload": {"echo": {"a": 1}, "method": "reset"}}
        async with http.patch(twin_url, json={"properties": {"desired": {"tempLimit": 77}}}) as response:
            assert response.status == 200
        assert (await receiver.event("desired"))["patch"]["tempLimit"] == 77
        headers = {"edgehub-properties": json.dumps({"Kind": "injected"}), "content-type": "application/json"}
        async with http.post(
            f"{api}/modules/filtermodule/inputs/input1/messages", data=b'{"x": 1}', headers=headers
        ):
            pass
        message = await receiver.event("message")
        assert message["data"] == '{"x": 1}' and message["properties"]["Kind"] == "injected"
        assert message["content_type"] == "application/json"
        await receiver.command(send={"output": "output1", "data": "to the cloud"})
        async with asyncio.timeout(20):
            while True:
                async with http.get(f"{api}/upstream/messages") as response:
                    bodies = [m["body"] for m in (await response.json())["messages"]]
                if "to the cloud" in bodies:
                    break
                await asyncio.sleep(0.2)
