"""``--upstream mqtt://`` and ``mqttBroker.bridges`` against a real mosquitto (the Debian package, which
``.ci/run`` installs), started here on a free loopback port and stopped and restarted mid-stream."""

from __future__ import annotations

import asyncio
import getpass
import json
import queue
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgehub_emu.identity import CertificatePaths, ensure_certificates
from edgehub_emu.manifest import parse_deployment

from .conftest import ROOT, Hub

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SENSOR_EVENTS = "devices/edge-device/modules/SimulatedTemperatureSensor/messages/events/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mosquitto:
    """A mosquitto process with persistence (so that a restart keeps sessions and queued messages)."""

    def __init__(self, directory: Path, tls: CertificatePaths | None = None, user: str | None = None) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail("these tests need mosquitto (Debian package 'mosquitto'; .ci/run installs it)")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = self.dir / "mosquitto.conf"
        config = (
            f"listener {self.port} 127.0.0.1\n"
            f"persistence true\npersistence_location {self.dir}/\n"
            f"user {getpass.getuser()}\n"  # as root it would switch to 'mosquitto', who cannot write here
        )
        if tls is not None:
            config += f"cafile {tls.ca_cert}\ncertfile {tls.server_chain}\nkeyfile {tls.server_key}\n"
        if user is not None:
            name, password = user.split(":")
            subprocess.run(
                ["mosquitto_passwd", "-b", "-c", str(self.dir / "passwords"), name, password], check=True
            )
            config += f"allow_anonymous false\npassword_file {self.dir / 'passwords'}\n"
        else:
            config += "allow_anonymous true\n"
        self.config.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.dir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


class Remote:
    """A paho client on mosquitto (the other side of the bridge)."""

    def __init__(self, port: int, client_id: str, clean: bool = True) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.ready: queue.Queue[Any] = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311
        )
        self.paho.on_message = lambda _c, _u, m: self.messages.put(m)
        self.paho.on_connect = lambda _c, _u, _f, rc, _p: self.ready.put(rc)
        self.paho.reconnect_delay_set(0.1, 0.5)
        self.port = port

    async def connect(self, *filters: str) -> Remote:
        await asyncio.to_thread(self.paho.connect, "127.0.0.1", self.port)
        self.paho.loop_start()
        await asyncio.to_thread(self.ready.get, True, 5)
        for topic_filter in filters:
            self.paho.subscribe(topic_filter, 1)
        await asyncio.sleep(0.2)
        return self

    async def next(self, timeout: float = 10) -> mqtt.MQTTMessage:
        return await asyncio.to_thread(self.messages.get, True, timeout)

    async def publish(self, topic: str, payload: bytes) -> None:
        info = self.paho.publish(topic, payload, 1)
        await asyncio.to_thread(info.wait_for_publish, 5)

    def stop(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
async def remote(mosquitto: Mosquitto) -> AsyncIterator[Callable[..., Any]]:
    made: list[Remote] = []

    async def make(*filters: str, client_id: str = "remote", clean: bool = True) -> Remote:
        client = Remote(mosquitto.port, client_id, clean)
        made.append(client)
        return await client.connect(*filters)

    yield make
    for client in made:
        client.stop()


BRIDGES = [
    {
        "endpoint": "$upstream",
        "settings": [
            {"direction": "out", "topic": "alerts/#", "outPrefix": "remote/"},
            {"direction": "in", "topic": "commands/#", "inPrefix": "local/"},
            {"direction": "both", "topic": "sync/#"},
        ],
    }
]


def bridged_manifest() -> Any:
    doc = json.loads((ROOT / "config" / "broker.json").read_text())
    hub = doc["modulesContent"]["$edgeHub"]["properties.desired"]
    hub["mqttBroker"]["bridges"] = BRIDGES
    hub["routes"] = {"up": "FROM /messages/* INTO $upstream"}
    return parse_deployment(doc, env={})


@pytest.fixture
async def bridged(start_hub: Callable[..., Any], mosquitto: Mosquitto) -> Hub:
    hub = await start_hub(
        bridged_manifest(),
        upstream=f"mqtt://127.0.0.1:{mosquitto.port}",
        mqtt_port=0,
        dev=True,
        delivery_retry_first=0.2,
    )
    await upstream_connected(hub)
    return hub


def upstream_connections(hub: Hub) -> list[dict[str, Any]]:
    return list(hub.hub.snapshot().upstream["connections"].values())


async def upstream_connected(hub: Hub, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not any(c["connected"] for c in upstream_connections(hub)):
            await asyncio.sleep(0.05)


@pytest.fixture
async def local_client(bridged: Hub) -> AsyncIterator[Callable[..., Any]]:
    """Anonymous local tools on the hub's plain listener (--dev), stopped after the test."""
    made: list[Remote] = []

    async def make(client_id: str, *filters: str) -> Remote:
        client = Remote(bridged.hub.endpoints.mqtt_port, client_id)  # type: ignore[union-attr, arg-type]
        made.append(client)
        return await client.connect(*filters)

    yield make
    for client in made:
        client.stop()


async def test_upstream_messages_go_to_the_broker_on_telemetry_topics(
    bridged: Hub, remote: Callable[..., Any]
) -> None:
    cloud = await remote("devices/#")
    sensor = await bridged.client("SimulatedTemperatureSensor")
    await sensor.publish(SENSOR_EVENTS + "alert=yes", b'{"t": 30}')
    message = await cloud.next()
    assert message.topic.startswith("devices/edge-device/modules/SimulatedTemperatureSensor/messages/events/")
    assert "alert=yes" in message.topic and message.payload == b'{"t": 30}'


async def test_bridge_settings_carry_topics_out_and_in(
    bridged: Hub, remote: Callable[..., Any], local_client: Callable[..., Any]
) -> None:
    cloud = await remote("remote/#", "sync/#", "commands/#")
    local = await local_client("tool", "local/#", "sync/#")
    local.paho.publish("alerts/fire", b"hot", 1)
    message = await cloud.next()
    assert (message.topic, message.payload) == ("remote/alerts/fire", b"hot")
    await cloud.publish("commands/restart", b"now")
    assert (await cloud.next()).topic == "commands/restart"  # mosquitto's own copy to the cloud client
    message = await local.next()
    assert (message.topic, message.payload) == ("local/commands/restart", b"now")

    local.paho.publish("sync/a", b"from here", 1)
    assert (await local.next()).payload == b"from here"  # the local subscriber, once
    assert (await cloud.next()).topic == "sync/a"
    await cloud.publish("sync/b", b"from there")
    assert (await cloud.next()).payload == b"from there"
    assert (await local.next()).payload == b"from there"
    await asyncio.sleep(0.5)
    assert local.messages.empty(), "an echo came back"
    assert cloud.messages.empty(), "a message went round twice"
    assert bridged.hub.snapshot().upstream["counters"]["echo_dropped"] == 1


async def test_a_broker_outage_loses_nothing(
    bridged: Hub, mosquitto: Mosquitto, remote: Callable[..., Any], local_client: Callable[..., Any]
) -> None:
    cloud = await remote("remote/#", client_id="cloud", clean=False)
    local = await local_client("tool")
    seen: list[bytes] = []
    for i in range(10):
        local.paho.publish("alerts/n", str(i).encode(), 1)
    for _ in range(5):
        seen.append((await cloud.next()).payload)
    mosquitto.stop()  # mid-stream
    for i in range(10, 30):
        info = local.paho.publish("alerts/n", str(i).encode(), 1)
        await asyncio.to_thread(info.wait_for_publish, 5)  # acknowledged by the hub: queued durably
    await asyncio.sleep(1.0)
    mosquitto.start()
    deadline = time.monotonic() + 30
    while len(set(seen)) < 30 and time.monotonic() < deadline:
        seen.append((await cloud.next(timeout=deadline - time.monotonic())).payload)
    # At least once, in order: duplicates may come after the outage, but nothing is missing or reordered.
    assert list(dict.fromkeys(seen)) == [str(i).encode() for i in range(30)]


async def test_tls_and_credentials(start_hub: Callable[..., Any], tmp_path: Path) -> None:
    """mqtts:// with a user name and password, the broker's CA given with --upstream-ca."""
    certs = ensure_certificates(tmp_path / "broker-certs", ["127.0.0.1"])
    broker = Mosquitto(tmp_path / "secure", tls=certs, user="bridge:s3cret")
    broker.start()
    try:
        hub = await start_hub(
            bridged_manifest(),
            data_dir=tmp_path / "hub",
            upstream=f"mqtts://bridge:s3cret@127.0.0.1:{broker.port}?client_id=my-bridge",
            upstream_ca=certs.ca_cert,
        )
        await upstream_connected(hub)
        wrong = await start_hub(
            bridged_manifest(),
            data_dir=tmp_path / "wrong",
            upstream=f"mqtts://bridge:guess@127.0.0.1:{broker.port}",
            upstream_ca=certs.ca_cert,
        )
        async with asyncio.timeout(10):
            while (connections := upstream_connections(wrong)) and connections[0]["error"] is None:
                await asyncio.sleep(0.05)
        assert connections == [{"connected": False, "error": "CONNACK 5: not authorized"}]

    finally:
        broker.stop()
