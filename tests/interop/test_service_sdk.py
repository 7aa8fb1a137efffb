"""Cloud-side code written with Microsoft's azure-iot-hub package (IoTHubRegistryManager), unmodified,
against a running hub: only the connection string from `edgehub-emu creds --service` and the CA in
REQUESTS_CA_BUNDLE. It runs in .venv-service (make test builds it) as tests/interop/service_client.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from edgehub_emu.testing import HubProcess

from .test_node_sdk import NodeModule

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PYTHON = ROOT / ".venv-service" / "bin" / "python"
CLIENT = Path(__file__).with_name("service_client.py")
EXE = Path(sys.executable).with_name("edgehub-emu")
DEVICE = "edge-device"


async def cli(*args: str) -> str:
    done = await asyncio.create_subprocess_exec(str(EXE), *args, stdout=asyncio.subprocess.PIPE)
    output, _ = await done.communicate()
    assert done.returncode == 0, args
    return output.decode()


async def calls(env: dict[str, str], *steps: dict[str, Any]) -> list[dict[str, Any]]:
    assert SERVICE_PYTHON.exists(), "make test creates .venv-service with azure-iot-hub"
    done = await asyncio.create_subprocess_exec(
        str(SERVICE_PYTHON),
        str(CLIENT),
        *(json.dumps(s) for s in steps),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONWARNINGS": "ignore", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await done.communicate()
    assert done.returncode == 0, errors.decode()[-3000:]
    return [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]


async def test_the_service_sdk_reads_and_changes_twins_lists_modules_and_calls_methods(tmp_path: Path):
    hub = await asyncio.to_thread(
        HubProcess,
        tmp_path,
        "--host",
        "127.0.0.79",  # the module's SDK dials 8883: an address of its own
        "--https-port",
        "0",
        "--http-port",
        "0",
        "--metrics-port",
        "0",
        "--amqps-port",
        "0",
        free_ports=False,
    )
    module: NodeModule | None = None
    try:
        data = ["--format", "json", "--data-dir", str(tmp_path)]
        service = json.loads(await cli("creds", "--service", *data))
        assert service["IOTHUB_CONNECTION_STRING"].startswith("HostName=127.0.0.79:")
        credentials = json.loads(await cli("creds", "filtermodule", *data))
        module = await NodeModule.launch("filtermodule", "Mqtt", credentials)
        await module.event("connected")
        await module.command(op="method", name="reset", status=200, payload={"done": True})
        await module.event("listening")

        results = await calls(
            service,
            {"call": "get_module_twin", "args": [DEVICE, "filtermodule"]},
            {"call": "update_module_twin", "args": [DEVICE, "filtermodule", {"tempLimit": 55}]},
            {
                "call": "invoke_device_module_method",
                "args": [DEVICE, "filtermodule", "reset", {"hard": True}],
            },
            {"call": "get_modules", "args": [DEVICE]},
            {"call": "get_module", "args": [DEVICE, "filtermodule"]},
            {"call": "replace_module_twin", "args": [DEVICE, "filtermodule", {"only": "this"}]},
            {"call": "get_twin", "args": [DEVICE]},
            {"call": "get_module_twin", "args": [DEVICE, "nobody"]},
        )
        assert [r["call"] for r in results][:2] == ["get_module_twin", "update_module_twin"]
        first, updated, invoked, listed, one, replaced, device_twin, missing = results
        assert first["result"]["module_id"] == "filtermodule"
        assert first["result"]["connection_state"] == "Connected"
        assert updated["result"]["properties"]["desired"]["tempLimit"] == 55
        assert invoked["result"] == {"status": 200, "payload": {"done": True}}
        assert (await module.event("method"))["payload"] == {"hard": True}
        assert {m["module_id"] for m in listed["result"]} == {"SimulatedTemperatureSensor", "filtermodule"}
        key = credentials["EdgeHubConnectionString"].split("SharedAccessKey=")[1].split(";")[0]
        assert one["result"]["authentication"]["symmetric_key"]["primary_key"] == key
        desired = replaced["result"]["properties"]["desired"]
        assert desired["only"] == "this" and "tempLimit" not in desired
        assert device_twin["result"]["device_id"] == DEVICE
        assert missing["status"] == 404

        # a wrong key is refused as IoT Hub refuses it
        host = service["IOTHUB_CONNECTION_STRING"].split(";")[0]
        wrong = {
            **service,
            "IOTHUB_CONNECTION_STRING": f"{host};SharedAccessKeyName=iothubowner;"
            "SharedAccessKey=d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgIQ==",
        }
        (refused,) = await calls(wrong, {"call": "get_module_twin", "args": [DEVICE, "filtermodule"]})
        assert refused["status"] == 401
    finally:
        if module is not None:
            await module.stop()
        assert await asyncio.to_thread(hub.stop) == 0
