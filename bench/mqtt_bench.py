"""Connections: 200 TLS clients held with keep-alive, the hub's memory with them, the time from
process start to ready, and the hub's memory after 10,000 TLS connect/disconnect cycles (issue 13:
nothing a connection leaves behind may add up); and the paho latency harness the broker comparison
uses.

Targets: 200 concurrent TLS connections held; ready <= 1 s; RSS after 10,000 cycles within 16 MB of
after the first 500.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from edgehub_emu.identity import make_token
from edgehub_emu.mqtt.codec import Connect, Decoder, Pingreq, encode

from .harness import IOTHUB, HubProcess, Target, subscribed_pair
from .report import Result

LEAVES = [f"leaf{i}" for i in range(200)]


def latency(target: Target, rate: int = 1000, seconds: float = 4.0) -> tuple[float, float]:
    """p50 and p99 publish-to-delivery latency in milliseconds at a steady ``rate``."""
    samples: list[float] = []

    def on_message(_c, _u, m) -> None:
        samples.append((time.perf_counter() - float(m.payload)) * 1000)

    subscriber, publisher = subscribed_pair(target, on_message)
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


async def hold_tls_connections(hub: HubProcess, seconds: float = 12.0) -> int:
    """One TLS client per leaf device (keep-alive 4 s, pinging as MQTT clients do); how many are still
    connected after ``seconds``."""
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


async def connect_cycles(hub: HubProcess, count: int) -> None:
    """``count`` TLS connections, one after another: CONNECT, CONNACK, DISCONNECT, close."""
    tls = hub.tls()
    port = hub.endpoints["mqtts_port"]
    leaf = LEAVES[0]
    ident = hub.registry.get(leaf)
    assert ident is not None
    password = make_token(f"{IOTHUB}/devices/{leaf}", ident.primary_key, int(time.time()) + 3600)
    connect = encode(Connect(leaf, True, 60, f"{IOTHUB}/{leaf}/?api-version=2019-10-01", password.encode()))
    for _ in range(count):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1"
        )
        writer.write(connect)
        await reader.read(4)
        writer.write(b"\xe0\x00")  # DISCONNECT
        writer.close()
        await writer.wait_closed()


def run() -> list[Result]:
    hub = HubProcess(pairs=1, leaves=LEAVES)
    try:
        held = asyncio.run(hold_tls_connections(hub))
        rss = hub.memory_mb()
        ready = hub.ready_after
        asyncio.run(connect_cycles(hub, 500))
        settled = hub.memory_mb()
        asyncio.run(connect_cycles(hub, 9_500))
        cycled = hub.memory_mb()
    finally:
        hub.stop()
    growth = cycled - settled
    return [
        Result("TLS connections held (keep-alive 4 s)", f"{held} / 200", "200", held == 200),
        Result("hub memory with them (MB RSS)", f"{rss:.0f}", "", True),
        Result("ready after start, empty (s)", f"{ready:.2f}", "<= 1", ready <= 1),
        Result(
            "RSS after 10,000 TLS connect cycles (MB)",
            f"{cycled:.0f} ({growth:+.1f})",
            "+<= 16",
            growth <= 16,
        ),
    ]
