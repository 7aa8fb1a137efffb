"""MQTT speed: routed QoS 1 throughput and latency through the hub, beside mosquitto, and 200 TLS clients.

Targets (issue 3): module-to-module QoS 1 throughput at least 0.6x mosquitto's plain pub/sub with the
same clients, p99 latency at most 10 ms at 1,000 msg/s, and 200 concurrent TLS connections held with
keep-alive. The hub runs as `edgehub-emu run` in its own process (as users run it); mosquitto from the
Debian package, if installed. Clients are paho-mqtt in this process, so both brokers are measured
through the same client ceiling.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edgehub_emu.identity import IdentityRegistry, make_token
from edgehub_emu.mqtt.codec import Connect, Decoder, Pingreq, encode

from .report import Result

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "edge-device"
IOTHUB = "edgehub-emu.azure-devices.net"
MANIFEST = {
    "$edgeAgent": {
        "properties.desired": {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": {}},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "agent"}},
                "edgeHub": {"type": "docker", "settings": {"image": "hub"}},
            },
            "modules": {
                m: {
                    "type": "docker",
                    "status": "running",
                    "restartPolicy": "always",
                    "settings": {"image": m},
                }
                for m in ("sensor", "filter")
            },
        }
    },
    "$edgeHub": {
        "properties.desired": {
            "schemaVersion": "1.1",
            "routes": {
                "r": "FROM /messages/modules/sensor/outputs/out INTO "
                + 'BrokeredEndpoint("/modules/filter/inputs/in")'
            },
        }
    },
}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: ssl.SSLContext | None
    publish_topic: str
    subscribe_filter: str
    credentials: dict[str, tuple[str, str, str]]  # role -> (client id, username, password)


class HubProcess:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edgehub-bench-"))
        (self.dir / "deployment.json").write_text(json.dumps(MANIFEST))
        exe = Path(sys.executable).with_name("edgehub-emu")
        env = {**os.environ, "EDGEHUB_EMU_LEAF_DEVICES": ",".join(LEAVES)}
        self.process = subprocess.Popen(
            [
                str(exe),
                "run",
                "-m",
                str(self.dir / "deployment.json"),
                "--data-dir",
                str(self.dir / "data"),
                "--mqtts-port",
                "0",
                "--https-port",
                "0",
                "--mqtt-port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "ready" in line:
                break
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        self.endpoints = json.loads((self.dir / "data" / "endpoints.json").read_text())
        self.registry = IdentityRegistry(
            DEVICE, ["sensor", "filter"], LEAVES, path=self.dir / "data" / "identities.json"
        )

    def credentials(self, module: str) -> tuple[str, str, str]:
        ident = self.registry.module(module)
        assert ident is not None
        token = make_token(
            f"{IOTHUB}/devices/{DEVICE}/modules/{module}", ident.primary_key, int(time.time()) + 3600
        )
        return ident.id, f"{IOTHUB}/{ident.id}/?api-version=2019-10-01", token

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.endpoints["ca_file"])

    def target(self, tls: bool) -> Target:
        creds = {"pub": self.credentials("sensor"), "sub": self.credentials("filter")}
        port = self.endpoints["mqtts_port"] if tls else self.endpoints["mqtt_port"]
        return Target(
            "127.0.0.1",
            port,
            self.tls() if tls else None,
            f"devices/{DEVICE}/modules/sensor/messages/events/%24.on=out",
            f"devices/{DEVICE}/modules/filter/#",
            creds,
        )

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Mosquitto:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mosquitto-bench-"))
        self.port = _free_port()
        (self.dir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        )
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def target(self) -> Target:
        creds = {"pub": ("bench-pub", "", ""), "sub": ("bench-sub", "", "")}
        return Target("127.0.0.1", self.port, None, "bench/topic", "bench/#", creds)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(target: Target, role: str, on_message=None) -> mqtt.Client:
    client_id, username, password = target.credentials[role]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if username:
        client.username_pw_set(username, password)
    if target.tls is not None:
        client.tls_set_context(target.tls)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    if on_message is not None:
        client.on_message = on_message
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(target.host, target.port, 60)
    client.loop_start()
    connected.wait(10)
    return client


def _pair(target: Target, on_message) -> tuple[mqtt.Client, mqtt.Client]:
    """A subscriber (subscribed, QoS 1) and a publisher, both connected."""
    subscriber = _client(target, "sub", on_message)
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.subscribe(target.subscribe_filter, 1)
    subscribed.wait(10)
    return subscriber, _client(target, "pub")


def throughput(target: Target, size: int, count: int = 20_000) -> float:
    """Messages per second from one QoS 1 publisher to one QoS 1 subscriber."""
    received = 0
    done = threading.Event()

    def on_message(_c, _u, _m) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    subscriber, publisher = _pair(target, on_message)
    payload = b"x" * size
    start = time.perf_counter()
    for _ in range(count):
        publisher.publish(target.publish_topic, payload, qos=1)
    done.wait(120)
    elapsed = time.perf_counter() - start
    for c in (publisher, subscriber):
        c.disconnect()
        c.loop_stop()
    return received / elapsed


def latency(target: Target, rate: int = 1000, seconds: float = 4.0) -> tuple[float, float]:
    """p50 and p99 publish-to-delivery latency in milliseconds at a steady ``rate``."""
    samples: list[float] = []

    def on_message(_c, _u, m) -> None:
        samples.append((time.perf_counter() - float(m.payload)) * 1000)

    subscriber, publisher = _pair(target, on_message)
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.0005))
        publisher.publish(target.publish_topic, repr(time.perf_counter()).encode(), qos=1)
    deadline = time.time() + 10
    while len(samples) < total and time.time() < deadline:
        time.sleep(0.05)
    for c in (publisher, subscriber):
        c.disconnect()
        c.loop_stop()
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


LEAVES = [f"leaf{i}" for i in range(200)]


async def hold_tls_connections(hub: HubProcess, seconds: float = 12.0) -> int:
    """Open one TLS client per leaf device (keep-alive 4 s, pinging as MQTT clients do) and count how many
    are still connected after ``seconds``."""
    tls = hub.tls()
    port = hub.endpoints["mqtts_port"]

    async def one(leaf: str) -> bool:
        ident = hub.registry.get(leaf)
        assert ident is not None
        password = make_token(f"{IOTHUB}/devices/{leaf}", ident.primary_key, int(time.time()) + 3600)
        connect = Connect(leaf, True, 4, f"{IOTHUB}/{leaf}/?api-version=2019-10-01", password.encode())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1"
        )
        writer.write(encode(connect))
        decoder = Decoder()
        accepted = False
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    async with asyncio.timeout(2.0):
                        data = await reader.read(1024)
                except TimeoutError:
                    writer.write(encode(Pingreq()))
                    continue
                if not data:
                    return False
                for packet in decoder.feed(data):
                    accepted = accepted or getattr(packet, "return_code", None) == 0
            return accepted
        finally:
            writer.close()

    results = await asyncio.gather(*(one(leaf) for leaf in LEAVES), return_exceptions=True)
    return sum(1 for r in results if r is True)


def run() -> list[Result]:
    results: list[Result] = []
    hub = HubProcess()
    mosquitto = Mosquitto() if shutil.which("mosquitto") else None
    try:
        figures: dict[str, float] = {}
        for size in (64, 1024):
            figures[f"hub-tls-{size}"] = throughput(hub.target(tls=True), size)
            figures[f"hub-tcp-{size}"] = throughput(hub.target(tls=False), size)
            if mosquitto is not None:
                figures[f"mosquitto-{size}"] = throughput(mosquitto.target(), size)
        p50, p99 = latency(hub.target(tls=True))
        held = asyncio.run(hold_tls_connections(hub))
        rss = hub.rss_mb()
    finally:
        hub.stop()
        if mosquitto is not None:
            mosquitto.stop()
    for size in (64, 1024):
        tls, tcp = figures[f"hub-tls-{size}"], figures[f"hub-tcp-{size}"]
        base = figures.get(f"mosquitto-{size}")
        if base is None:
            results.append(
                Result(f"QoS 1 routed msg/s, {size} B, TLS", f"{tls:,.0f}", "(no mosquitto)", True)
            )
            continue
        results.append(
            Result(f"mosquitto QoS 1 pub/sub msg/s, {size} B", f"{base:,.0f}", "(reference)", True)
        )
        results.append(
            Result(
                f"QoS 1 routed msg/s, {size} B, plain TCP",
                f"{tcp:,.0f}",
                f">= {0.6 * base:,.0f}",
                tcp >= 0.6 * base,
            )
        )
        results.append(
            Result(f"QoS 1 routed msg/s, {size} B, TLS", f"{tls:,.0f}", f"{tls / base:.2f}x mosquitto", True)
        )
    results.append(Result("latency p50 at 1,000 msg/s, TLS (ms)", f"{p50:.2f}", "", True))
    results.append(Result("latency p99 at 1,000 msg/s, TLS (ms)", f"{p99:.2f}", "<= 10", p99 <= 10))
    results.append(Result("TLS connections held (keep-alive 4 s)", f"{held} / 200", "200", held == 200))
    results.append(Result("hub memory with them (MB RSS)", f"{rss:.0f}", "", True))
    return results
