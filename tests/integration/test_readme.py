"""The README's snippets, run as printed: each test takes the code block that follows a sentence of the
README and runs it the way a reader would (a module project's environment for the fixture example,
the SDKs' fixed ports on a loopback address of the test's own for module code)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgehub_emu.hub import EdgeHub

from ..hubs import sdk_port_settings

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
        hub = EdgeHub(sdk_port_settings(tmp_path / "hub", address))
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


def test_the_nested_edge_walkthrough_runs_as_printed(tmp_path: Path):
    """The two commands of "Two hubs on one laptop", in a shell from the repository root, on a loopback
    address of their own (``EDGEHUB_EMU_HOST``) and with the parent's directory under tmp_path: the
    child's sample modules send, the alerts reach the parent as child/filtermodule, and a method called
    on the parent reaches the module connected to the child."""
    block = (
        snippet("Two hubs on one laptop:", "sh").replace("\\\n", " ").replace(".parent", str(tmp_path / "p"))
    )
    parent_command, child_command = [line for line in block.splitlines() if line.startswith(".venv/bin/")]
    env = {
        **os.environ,
        "EDGEHUB_EMU_HOST": "127.0.0.83",
        "EDGEHUB_EMU_DATA_DIR": str(tmp_path / "child"),  # the child's default directory
    }
    parent_log = tmp_path / "parent.log"
    logs = [parent_log.open("w"), (tmp_path / "child.log").open("w")]

    def start(command: str, log: Any) -> subprocess.Popen:
        """The README's command line as a shell runs it, in a session of its own (stopped whole)."""
        return subprocess.Popen(
            command,
            shell=True,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    parent = start(parent_command, logs[0])
    child = None
    try:
        deadline = time.monotonic() + 30
        while "\nready" not in parent_log.read_text():
            assert parent.poll() is None, f"the parent did not start:\n{parent_log.read_text()}"
            assert time.monotonic() < deadline, f"the parent did not start:\n{parent_log.read_text()}"
            time.sleep(0.1)
        child = start(child_command, logs[1])
        exe = str(ROOT / ".venv" / "bin" / "edgehub-emu")
        about = json.loads((tmp_path / "p" / "endpoints.json").read_text())
        upstream = f"http://{about['http_host']}:{about['http_port']}/upstream/messages?since=0"
        deadline = time.monotonic() + 90
        while True:
            with urllib.request.urlopen(upstream, timeout=10) as response:
                origins = {m["origin"] for m in json.load(response)["messages"]}
            if "child/filtermodule" in origins:
                break
            assert child.poll() is None, "the child stopped:\n" + (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no alert reached the parent from the child's filter"
            time.sleep(0.5)
        called = subprocess.run(
            [exe, "invoke", "child/SimulatedTemperatureSensor", "reset", "--data-dir", str(tmp_path / "p")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert called.returncode == 0, called.stderr
        assert '"status": 200' in called.stdout
    finally:
        for process in (child, parent):
            if process is not None:  # Ctrl-C, as in a terminal: to the shell and the hub it started
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT)
                process.wait(30)
        for log in logs:
            log.close()


def test_the_bridge_walkthrough_runs_as_printed(tmp_path: Path):
    """The broker, the hub with config/bridge.json and the two clients of the bridge walk-through, as
    printed but on free ports (1883 and 1884 may be taken where the tests run); the mosquitto_sub and
    mosquitto_pub lines are played by paho with the same port, topic and message."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert Path(mosquitto).exists(), "the bridge tests need mosquitto (.ci/run installs it)"
    remote, local = _free_port(), _free_port()
    lines = [  # without the comments (a space, then #) and the trailing &
        re.sub(r"\s#\s.*$", "", line).strip().rstrip("&").strip()
        for line in snippet("is recognised and dropped.", "sh").splitlines()
    ]
    lines = [line.replace("1884", str(remote)).replace("1883", str(local)) for line in lines]
    broker_command, hub_command, sub_command, pub_command = lines
    sub, pub = _options(sub_command), _options(pub_command)
    env = {**os.environ, "EDGEHUB_EMU_DATA_DIR": str(tmp_path / "hub"), "EDGEHUB_EMU_MQTT_PORT": str(local)}
    for port in ("MQTTS", "AMQPS", "HTTPS", "HTTP", "METRICS"):
        env[f"EDGEHUB_EMU_{port}_PORT"] = "0"
    started: list[subprocess.Popen] = []
    hub_log = tmp_path / "hub.log"
    try:
        started.append(
            subprocess.Popen(
                broker_command.replace("mosquitto", mosquitto, 1).split(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        with hub_log.open("w") as log:
            started.append(
                subprocess.Popen(hub_command.split(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        deadline = time.monotonic() + 30
        while "\nready" not in hub_log.read_text():
            assert time.monotonic() < deadline, hub_log.read_text()
            time.sleep(0.1)
        received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        subscriber = _paho("sub")
        subscriber.on_message = lambda _c, _u, m: received.put(m)
        subscriber.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(sub["-t"].strip("'"))
        subscriber.connect("127.0.0.1", int(sub["-p"]))
        subscriber.loop_start()
        publisher = _paho("pub")
        publisher.connect("127.0.0.1", int(pub["-p"]))
        publisher.loop_start()
        deadline = time.monotonic() + 30
        while received.empty():  # until the subscriber, which may still be subscribing, has one
            publisher.publish(pub["-t"], pub["-m"], qos=1).wait_for_publish(10)
            assert time.monotonic() < deadline, "nothing crossed the bridge:\n" + hub_log.read_text()[-3000:]
            time.sleep(0.2)
        message = received.get()
        assert (message.topic, message.payload) == ("edge-device/alerts/fire", b"hot")
        for client in (subscriber, publisher):
            client.disconnect()
            client.loop_stop()
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(30)


def _options(command: str) -> dict[str, str]:
    words = command.split()
    return {word: words[i + 1] for i, word in enumerate(words) if word.startswith("-") and i + 1 < len(words)}


def _paho(name: str) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"readme-{name}", protocol=mqtt.MQTTv311)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_service_sdk_snippet_runs_as_printed(tmp_path: Path):
    """`creds --service --format shell`, evaluated by a shell, then the Python snippet in the service
    SDK's own environment (.venv-service), against a running hub."""
    from edgehub_emu.testing import HubProcess

    service_python = ROOT / ".venv-service" / "bin" / "python"
    assert service_python.exists(), "make test creates .venv-service with azure-iot-hub"
    hub = HubProcess(tmp_path / "hub", "--https-port", "0")
    try:
        (tmp_path / "snippet.py").write_text(snippet("trust the hub's CA the way `requests` does:", "python"))
        shell = snippet("trust the hub's CA the way `requests` does:", "sh").split("#")[0].strip()
        shell = shell.replace("creds --service", f"creds --service --data-dir {tmp_path / 'hub'}")
        done = subprocess.run(
            f"{shell} && {service_python} {tmp_path / 'snippet.py'}",
            shell=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "'$version': 1" in done.stdout
        assert hub_twin(tmp_path / "hub")["tempLimit"] == 60
    finally:
        hub.stop()


def hub_twin(data_dir: Path) -> dict:
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("edgehub-emu")),
            "twin",
            "show",
            "filtermodule",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout)["properties"]["desired"]


def test_the_readme_route_graph_is_what_the_graph_command_prints():
    command = snippet("### The route graph as a picture", "sh").strip()
    printed = subprocess.run(command.split(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == snippet("prints the example deployment as a Mermaid flowchart", "mermaid")
