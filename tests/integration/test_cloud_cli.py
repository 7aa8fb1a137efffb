"""The cloud-side commands against a running `edgehub-emu run`: invoke, twin, send, monitor."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import DEVICE, HubSubprocess

pytestmark = pytest.mark.timeout(90)
EXE = str(Path(sys.executable).with_name("edgehub-emu"))
ROOT = Path(__file__).resolve().parents[2]


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXE, *args, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )


def read_until(process: subprocess.Popen, needle: str, timeout: float) -> str:
    """What a process printed until ``needle`` appeared (or ``timeout`` passed). Lines are read by a
    thread: ``select`` on the pipe would miss lines already in the text wrapper's buffer."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    text = ""
    deadline = time.time() + timeout
    while needle not in text and time.time() < deadline:
        with contextlib.suppress(queue.Empty):
            text += lines.get(timeout=0.2)
    return text


def test_invoke_twin_send_and_monitor_from_the_command_line(tmp_path: Path):
    hub = HubSubprocess(tmp_path)
    received: list = []
    try:
        module = hub.client("filtermodule", on_message=lambda _c, _u, m: received.append(m))
        subscribed = threading.Event()
        module.on_subscribe = lambda *_: subscribed.set()
        module.subscribe(
            [
                ("$iothub/methods/POST/#", 1),
                ("$iothub/twin/PATCH/properties/desired/#", 1),
                (f"devices/{DEVICE}/modules/filtermodule/inputs/#", 1),
            ]
        )
        assert subscribed.wait(5)

        def answer_methods() -> None:
            deadline = time.time() + 30
            while time.time() < deadline:
                for m in list(received):
                    if m.topic.startswith("$iothub/methods/POST/"):
                        received.remove(m)
                        rid = m.topic.split("$rid=")[1]
                        module.publish(
                            f"$iothub/methods/res/200/?$rid={rid}",
                            json.dumps({"echo": json.loads(m.payload)}),
                            qos=1,
                        )
                        return
                time.sleep(0.02)

        threading.Thread(target=answer_methods, daemon=True).start()
        invoked = cli(
            tmp_path, "invoke", "filtermodule", "reset", "--payload", '{"hard": true}', "--timeout", "10"
        )
        assert invoked.returncode == 0, invoked.stderr
        assert json.loads(invoked.stdout) == {"status": 200, "payload": {"echo": {"hard": True}}}

        changed = cli(tmp_path, "twin", "set", "filtermodule", "--desired", '{"tempLimit": 33}')
        assert changed.returncode == 0, changed.stderr
        assert json.loads(changed.stdout)["tempLimit"] == 33
        shown = cli(tmp_path, "twin", "show", "filtermodule")
        assert json.loads(shown.stdout)["properties"]["desired"]["tempLimit"] == 33

        sent = cli(
            tmp_path,
            "send",
            "filtermodule/input1",
            "--body",
            "hello",
            "--prop",
            "k=v",
            "--content-type",
            "text/plain",
        )
        assert sent.returncode == 0, sent.stderr
        assert "queued for edge-device/filtermodule/input1" in sent.stdout
        deadline = time.time() + 5
        while not any("/inputs/input1/" in m.topic for m in received) and time.time() < deadline:
            time.sleep(0.05)
        delivered = next(m for m in received if "/inputs/input1/" in m.topic)
        assert delivered.payload == b"hello" and "k=v" in delivered.topic

        monitor = subprocess.Popen(
            [EXE, "monitor", "--properties", "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert monitor.stdout is not None
            assert "monitoring" in monitor.stdout.readline()
            module.publish(
                f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1&x=1",
                b'{"hot": true}',
                qos=1,
            )
            text = read_until(monitor, '"x": "1"', timeout=10)
            assert f"from {DEVICE}/filtermodule" in text and '"hot": true' in text and '"x": "1"' in text
        finally:
            monitor.terminate()
            monitor.wait(10)

        endpoints = json.loads((tmp_path / "endpoints.json").read_text())
        shown_status = cli(tmp_path, "status", "-m", str(ROOT / "config" / "deployment.json"))
        assert shown_status.returncode == 0, shown_status.stderr
        assert f"AMQP over TLS              127.0.0.1:{endpoints['amqps_port']}" in shown_status.stdout
        assert f"MQTT over TLS              127.0.0.1:{endpoints['mqtts_port']}" in shown_status.stdout
        assert f"{DEVICE}/filtermodule" in shown_status.stdout
        assert "connected over mqtt" in shown_status.stdout

        missing = cli(tmp_path, "invoke", "SimulatedTemperatureSensor", "reset")
        assert missing.returncode == 1 and "not found" in missing.stderr
        module.disconnect()
        module.loop_stop()
    finally:
        hub.stop()
    stopped = cli(tmp_path, "twin", "show", "filtermodule")
    assert stopped.returncode == 1 and "no hub is running" in stopped.stderr


def test_commands_take_the_device_and_manifest_of_the_running_hub(tmp_path: Path):
    """A hub run with --device-id child on a manifest elsewhere: creds, twin show and status, from a
    directory without any manifest, speak for that hub."""
    from edgehub_emu.testing import HubProcess
    from edgehub_emu.upstream.config import parse_connection_string

    project = tmp_path / "project"
    (project / "deploy").mkdir(parents=True)
    manifest = project / "deploy" / "deployment.json"
    manifest.write_text((ROOT / "config" / "deployment.json").read_text())
    data = tmp_path / "data"
    hub = HubProcess(data, "-m", str(manifest), "--device-id", "child")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [EXE, *args, "--data-dir", str(data)], capture_output=True, text=True, timeout=60, cwd=elsewhere
        )

    try:
        creds = run("creds", "filtermodule", "--format", "string")
        assert creds.returncode == 0, creds.stderr
        fields = parse_connection_string(creds.stdout.strip())
        assert fields["DeviceId"] == "child" and fields["ModuleId"] == "filtermodule"
        assert _connects(hub.mqtts_port, hub.ca_file, fields)  # the hub takes them
        shown = run("twin", "show", "filtermodule")
        assert shown.returncode == 0, shown.stderr
        status = run("status")
        assert status.returncode == 0, status.stderr
        assert "child/filtermodule" in status.stdout
    finally:
        hub.stop()
    without = run("creds", "filtermodule", "-m", str(manifest), "--device-id", "child")
    assert without.returncode == 0
    assert f"no hub runs on {data}: reading {manifest}" in " ".join(without.stderr.split())


def _connects(port: int, ca_file: str, fields: dict[str, str]) -> bool:
    """A TLS MQTT CONNECT with a token from the connection string's key: CONNACK 0?"""
    import paho.mqtt.client as mqtt

    from edgehub_emu.identity import make_token

    client_id = f"{fields['DeviceId']}/{fields['ModuleId']}"
    resource = f"{fields['HostName']}/devices/{fields['DeviceId']}/modules/{fields['ModuleId']}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(
        f"{fields['HostName']}/{client_id}/?api-version=2019-10-01",
        make_token(resource, fields["SharedAccessKey"], int(time.time()) + 600),
    )
    client.tls_set(ca_certs=ca_file)
    answered: queue.Queue[int] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, code, _p: answered.put(code.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        return answered.get(timeout=10) == 0
    finally:
        client.disconnect()
        client.loop_stop()


def test_sigterm_answers_a_waiting_method_call_and_stops_at_once(tmp_path: Path):
    """A method call waits for a module that never answers (30 s); SIGTERM ends the hub well before
    that, and the caller gets the hub's answer for a module that is not there."""
    import signal

    hub = HubSubprocess(tmp_path)
    module = hub.client("filtermodule")
    subscribed = threading.Event()
    module.on_subscribe = lambda *_: subscribed.set()
    module.subscribe("$iothub/methods/POST/#", 1)
    assert subscribed.wait(5)
    received = threading.Event()
    module.on_message = lambda *_: received.set()
    caller = subprocess.Popen(
        [EXE, "invoke", "filtermodule", "reset", "--timeout", "30", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert received.wait(10)  # the request reached the (silent) module: the call is waiting
    hub.process.send_signal(signal.SIGTERM)
    assert hub.process.wait(10) == 0  # not the 30 s the call would wait
    _, said = caller.communicate(timeout=10)
    assert caller.returncode == 1 and "the hub is stopping" in said
    module.loop_stop()


def test_trace_from_the_command_line_follows_a_message_by_module_and_by_id(tmp_path: Path):
    hub = HubSubprocess(tmp_path)
    try:
        sensor = hub.client("SimulatedTemperatureSensor")
        topic = (
            f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput"
        )
        sensor.publish(topic, b'{"t": 21}', qos=1).wait_for_publish(5)
        sensor.publish(topic.replace("temperatureOutput", "nowhere"), b"lost", qos=1).wait_for_publish(5)
        sensor.disconnect()
        sensor.loop_stop()

        shown = cli(tmp_path, "trace", "--module", "SimulatedTemperatureSensor", "--last", "2")
        assert shown.returncode == 0, shown.stderr
        first, second = shown.stdout.strip().split("\n\n")
        assert "from edge-device/SimulatedTemperatureSensor, output temperatureOutput" in first
        assert "matched         sensorToFilter" in first and "not this source filterToIoTHub" in first
        assert "queued for edge-device/filtermodule/input1, priority 0, time-to-live 1800 s" in first
        assert first.rstrip().endswith("(route sensorToFilter): waiting")  # filtermodule is not connected
        assert "dropped: no_route" in second

        as_json = json.loads(cli(tmp_path, "trace", "--last", "1", "--json").stdout)
        (message,) = as_json
        by_id = cli(tmp_path, "trace", "--id", message["edgeMessageId"])
        assert (
            by_id.returncode == 0 and message["edgeMessageId"] in by_id.stdout and "no_route" in by_id.stdout
        )
        unknown = cli(tmp_path, "trace", "--id", "no-such-id")
        assert unknown.returncode == 1 and "no message no-such-id in the trace" in unknown.stderr
    finally:
        hub.stop()
