"""The README's snippets, run as printed: each test takes the code block that follows a sentence of the
README and runs it the way a reader would (a module project's environment for the fixture example,
the SDKs' fixed ports on a loopback address of the test's own for module code)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgehub_emu.hub import EdgeHub
from edgehub_emu.settings import Settings

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SDK_PYTHON = ROOT / ".venv-sdk" / "bin" / "python"


def snippet(after: str, language: str) -> str:
    """The first ``language`` code block after the README text ``after``."""
    start = README.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


@pytest.fixture
async def sdk_hub(tmp_path: Path):
    """A hub on the SDKs' ports (8883, 5671, 443) on a loopback address of its own."""
    hubs: list[EdgeHub] = []

    async def start(address: str) -> EdgeHub:
        settings = Settings(
            data_dir=tmp_path / "hub",
            host=address,
            mqtts_port=8883,
            amqps_port=5671,
            https_port=443,
            http_port=0,
            metrics_port=0,
        )
        hub = EdgeHub(settings)
        await hub.start()
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        await hub.stop()


def test_the_fixture_example_passes_in_a_module_project(tmp_path: Path):
    """As a module developer's project: the manifest, the module, the test, in an environment with
    edgehub-emu, the SDK and paho-mqtt<2 (``.venv-sdk``, which make test builds that way)."""
    assert SDK_PYTHON.exists(), "make test creates .venv-sdk"
    shutil.copy(ROOT / "config" / "deployment.json", tmp_path / "deployment.json")
    (tmp_path / "filtermodule").mkdir()
    shutil.copy(ROOT / "examples" / "modules" / "filtermodule" / "main.py", tmp_path / "filtermodule")
    (tmp_path / "test_filter.py").write_text(snippet("and assert on what it does.", "python"))
    done = subprocess.run(
        [str(SDK_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_filter.py"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


async def test_the_python_connection_snippet_sends_a_routed_message(sdk_hub, tmp_path: Path):
    hub = await sdk_hub("127.0.0.81")
    code = snippet("or pass them yourself:", "python")
    env = {"PATH": "/usr/bin:/bin", **hub.module_environment("SimulatedTemperatureSensor")}
    done = await _run([str(SDK_PYTHON), "-c", code], env)
    assert done[0] == 0, done[1]
    (queued,) = hub.queued("filtermodule", "input1")
    assert queued.body == b"hello"


async def test_the_node_snippet_sends_a_routed_message_over_amqp(sdk_hub, tmp_path: Path):
    node = shutil.which("node")
    assert node is not None, "the Node SDK tests need node on the PATH"
    hub = await sdk_hub("127.0.0.82")
    script = tmp_path / "module.js"
    script.write_text(snippet("the transport is the only thing that changes:", "js"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NODE_PATH": str(ROOT / "tests" / "node" / "node_modules"),
        **hub.module_environment("SimulatedTemperatureSensor"),
    }
    process = await _start(node, str(script), env=env)
    try:
        deadline = time.monotonic() + 60
        while not hub.queued("filtermodule", "input1"):
            assert time.monotonic() < deadline, "the snippet's message never arrived"
            assert process.returncode is None, "the snippet exited"
            await asyncio.sleep(0.05)
        (queued,) = hub.queued("filtermodule", "input1")
        assert queued.body == b"hello"
        assert queued.system_properties["connectionModuleId"] == "SimulatedTemperatureSensor"
    finally:
        process.kill()
        await process.wait()


def test_the_from_python_snippet_runs(tmp_path: Path):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    script = tmp_path / "demo.py"
    script.write_text(snippet("### From Python", "python"))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HostName=edgehub-emu.azure-devices.net;DeviceId=edge-device;ModuleId=filtermodule" in done.stdout
    assert "'tempLimit': 30" in done.stdout
    assert "1 message waits for filtermodule" in done.stdout
    assert (tmp_path / ".edgehub-emu-demo" / "certs" / "edge-ca.pem").is_file()


def test_the_settings_table_lists_every_flag_of_run():
    """Every option `edgehub-emu run --help` shows is in the README's settings table."""
    shown = subprocess.run(
        [str(Path(sys.executable).with_name("edgehub-emu")), "run", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    flags = set(re.findall(r"(--[a-z][a-z-]+)", shown)) - {"--help", "--no-watch"}
    table = README[README.index("## Settings") : README.index("## Compatibility")]
    missing = sorted(f for f in flags if f"`{f}" not in table)
    assert not missing, f"the settings table lacks {missing}"


async def _run(command: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    process = await _start(*command, env=env)
    output, _ = await process.communicate()
    return process.returncode, output.decode()[-3000:]


async def _start(*command: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
