"""At-least-once through a crash: every PUBACKed message survives `kill -9` of the hub process."""

from __future__ import annotations

import json
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edgehub_emu.identity import IdentityRegistry, make_token

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "edge-device"
IOTHUB = "edgehub-emu.azure-devices.net"
MODULES = ["SimulatedTemperatureSensor", "filtermodule"]

pytestmark = pytest.mark.timeout(120)


class HubProcess:
    def __init__(self, data: Path) -> None:
        exe = Path(sys.executable).with_name("edgehub-emu")
        self.data = data
        (data / "endpoints.json").unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                str(exe),
                "run",
                "-m",
                str(ROOT / "config" / "deployment.json"),
                "--data-dir",
                str(data),
                "--mqtts-port",
                "0",
                "--https-port",
                "0",
                "--http-port",
                "0",
                "--metrics-port",
                "0",
                "--no-watch",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "ready" in line:
                break
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        self.port = json.loads((data / "endpoints.json").read_text())["mqtts_port"]
        self.ca = json.loads((data / "endpoints.json").read_text())["ca_file"]

    def client(self, module: str, on_message=None) -> mqtt.Client:
        registry = IdentityRegistry(DEVICE, MODULES, path=self.data / "identities.json")
        ident = registry.module(module)
        assert ident is not None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ident.id, protocol=mqtt.MQTTv311)
        token = make_token(
            f"{IOTHUB}/devices/{DEVICE}/modules/{module}", ident.primary_key, int(time.time()) + 3600
        )
        client.username_pw_set(f"{IOTHUB}/{ident.id}/?api-version=2019-10-01", token)
        client.tls_set_context(ssl.create_default_context(cafile=self.ca))
        client.max_inflight_messages_set(50)
        client.reconnect_delay_set(30, 60)
        if on_message is not None:
            client.on_message = on_message
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        assert connected.wait(10)
        return client

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(20)


def test_every_acknowledged_message_survives_kill_9_in_order(tmp_path: Path):
    hub = HubProcess(tmp_path)
    acked: list[int] = []
    sent: dict[int, int] = {}
    lock = threading.Lock()

    def on_publish(_c, _u, mid, _rc, _p) -> None:
        with lock:
            if mid in sent:
                acked.append(sent[mid])

    publisher = hub.client("SimulatedTemperatureSensor")
    publisher.on_publish = on_publish
    stop = threading.Event()

    def publish_forever() -> None:
        i = 0
        while not stop.is_set() and i < 100_000:
            info = publisher.publish(
                f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput",
                str(i).encode(),
                qos=1,
            )
            with lock:
                sent[info.mid] = i
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)

    thread = threading.Thread(target=publish_forever, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while len(acked) < 300 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.3))  # a random moment in the middle of the stream
    hub.kill()
    stop.set()
    thread.join(5)
    publisher.loop_stop()
    with lock:
        acknowledged = sorted(set(acked))
    assert len(acknowledged) >= 300

    restarted = HubProcess(tmp_path)
    received: list[int] = []
    last = [time.time()]

    def on_message(_c, _u, message) -> None:
        received.append(int(message.payload))
        last[0] = time.time()

    receiver = restarted.client("filtermodule", on_message)
    receiver.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/#", 1)
    while time.time() - last[0] < 2.0:
        time.sleep(0.1)
    receiver.disconnect()
    receiver.loop_stop()
    restarted.stop()

    missing = set(acknowledged) - set(received)
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:10]}"
    first_seen = list(dict.fromkeys(received))
    assert first_seen == sorted(first_seen), "messages of one priority must arrive in publish order"
    duplicates = len(received) - len(first_seen)
    print(f"acknowledged {len(acknowledged)}, delivered {len(first_seen)} (+{duplicates} duplicates)")
