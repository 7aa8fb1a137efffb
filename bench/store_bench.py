"""Issue 4's figures: the durable hub under load beside mosquitto and amqtt, and a 1,000,000-message
backlog.

- Throughput of module-to-module QoS 1 routing with the durable store, 64 B and 1 KB bodies, with
  several publisher/subscriber processes (so the Python clients are not the bottleneck), beside the
  same load through mosquitto and amqtt's broker; peak RSS of each.
- The same hub runs the broker mode (``mqttBroker``, ``--dev``): plain QoS 1 pub/sub on user topics
  by anonymous clients, the load mosquitto gets, reported beside it (no target).
- p50/p99 latency at 1,000 msg/s through the durable store.
- A 1,000,000-message backlog for one module input: the hub's RSS while holding it, then the drain
  rate when the module connects. Time from process start to ready, empty and with the backlog.

Targets: durable throughput >= 0.8x mosquitto, p99 <= 5 ms at 1,000 msg/s, RSS <= 150 MB holding the
backlog, ready <= 1 s.

Also the CPU each message costs, in the broker and in the load generator, for the 64 B runs: on a
machine whose cores the clients and the broker share, throughput is bounded by the sum, so these say
what a broker would have to cost per message to reach 0.8x mosquitto here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from edgehub_emu.mqtt.codec import Connect, Decoder, Puback, Publish, Subscribe, encode
from edgehub_emu.routing import Message, ModuleEndpoint, RoutedEndpoint
from edgehub_emu.store import LogStore

from .harness import AMQTT, DEVICE, Amqtt, CpuMeter, HubProcess, Mosquitto, pair_throughput
from .mqtt_bench import latency
from .report import Result

PAIRS = 3
COUNT = 8_000
BACKLOG = 1_000_000


async def fill_backlog(data: Path, count: int) -> None:
    """Queue ``count`` messages for filter0's input straight into the store the hub will open."""
    store = LogStore(data / "queue")
    copy = RoutedEndpoint(ModuleEndpoint(DEVICE, "filter0", "in"), 2_000_000_000, 86_400, "r0")
    system = {"connectionDeviceId": DEVICE, "connectionModuleId": "sensor0", "outputName": "out"}
    for start in range(0, count, 10_000):
        for i in range(start, min(count, start + 10_000)):
            message = Message(body=b"x" * 64, properties={"n": str(i)}, system_properties=system)
            store.add(message, [copy], _ignore)
        store.flush()
        await asyncio.sleep(0)
    store.close()


def _ignore(error: BaseException | None) -> None:
    if error is not None:
        raise error


async def drain(hub: HubProcess, count: int) -> float:
    """Connect filter0 with a lean client that acknowledges every delivery; messages per second."""
    client_id, username, password = hub.credentials("filter0")
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.endpoints["mqtt_port"])
    writer.write(encode(Connect(client_id, True, 600, username, password.encode())))
    writer.write(encode(Subscribe(1, [(f"devices/{DEVICE}/modules/filter0/inputs/#", 1)])))
    decoder = Decoder()
    received = 0
    start = time.perf_counter()
    while received < count:
        data = await reader.read(1 << 16)
        if not data:
            break
        acks = []
        for packet in decoder.feed(data):
            if isinstance(packet, Publish):
                received += 1
                acks.append(encode(Puback(packet.packet_id or 0)))
        if acks:
            writer.write(b"".join(acks))
    elapsed = time.perf_counter() - start
    writer.close()
    return received / elapsed


def run() -> list[Result]:
    results: list[Result] = []
    figures: dict[str, float] = {}
    peaks: dict[str, float] = {}
    cpu: dict[str, tuple[float, float]] = {}
    hub = HubProcess(pairs=PAIRS, broker=True)
    ready_empty = hub.ready_after
    try:
        for size in (64, 1024):
            with CpuMeter(hub.process.pid) as meter:
                figures[f"hub-{size}"] = pair_throughput(
                    [hub.target(False, i) for i in range(PAIRS)], COUNT, size
                )
            if size == 64:
                cpu["hub"] = meter.per_message_us(COUNT * PAIRS)
        figures["user-topics-64"] = pair_throughput(
            [hub.user_topic_target(i) for i in range(PAIRS)], COUNT, 64
        )
        peaks["hub"] = hub.memory_mb("VmHWM")
        _, p99 = latency(hub.target(tls=True))
    finally:
        hub.stop()
    for broker_class in (Mosquitto, Amqtt):
        available = shutil.which("mosquitto") if broker_class is Mosquitto else AMQTT.exists()
        if not available:
            continue
        broker = broker_class()
        try:
            for size in (64, 1024):
                with CpuMeter(broker.process.pid) as meter:
                    figures[f"{broker.name}-{size}"] = pair_throughput(
                        [broker.target(pair=i) for i in range(PAIRS)], COUNT, size
                    )
                if size == 64:
                    cpu[broker.name] = meter.per_message_us(COUNT * PAIRS)
            peaks[broker.name] = broker.memory_mb("VmHWM")
        finally:
            broker.stop()

    data = Path(tempfile.mkdtemp(prefix="edgehub-backlog-"))
    try:
        started = time.perf_counter()
        asyncio.run(fill_backlog(data, BACKLOG))
        filled = time.perf_counter() - started
        loaded = HubProcess(pairs=PAIRS, data=data)
        try:
            time.sleep(1.0)
            holding = loaded.memory_mb()
            ready_backlog = loaded.ready_after
            rate = asyncio.run(drain(loaded, BACKLOG))
            drain_peak = loaded.memory_mb("VmHWM")
        finally:
            loaded.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)

    for size in (64, 1024):
        hub_rate = figures[f"hub-{size}"]
        base = figures.get(f"mosquitto-{size}")
        if base:
            results.append(
                Result(f"{PAIRS} pairs: mosquitto msg/s, {size} B", f"{base:,.0f}", "(reference)", True)
            )
        if f"amqtt-{size}" in figures:
            amqtt = figures[f"amqtt-{size}"]
            ratio = f"{amqtt / base:.2f}x mosquitto" if base else ""
            results.append(Result(f"{PAIRS} pairs: amqtt msg/s, {size} B", f"{amqtt:,.0f}", ratio, True))
        target = f">= {0.8 * base:,.0f} (0.8x)" if base else "(no mosquitto)"
        results.append(
            Result(
                f"{PAIRS} pairs: durable hub msg/s, {size} B",
                f"{hub_rate:,.0f}" + (f" ({hub_rate / base:.2f}x)" if base else ""),
                target,
                not base or hub_rate >= 0.8 * base,
            )
        )
    if "mosquitto-64" in figures:
        user = figures["user-topics-64"]
        results.append(
            Result(
                f"{PAIRS} pairs: broker mode, user topics, QoS 1 msg/s, 64 B",
                f"{user:,.0f} ({user / figures['mosquitto-64']:.2f}x)",
                "(reported)",
                True,
            )
        )
    for name, (broker_us, clients_us) in cpu.items():
        results.append(
            Result(
                f"3 pairs, 64 B: CPU per message, {name} / load generator (us)",
                f"{broker_us:.0f} / {clients_us:.0f}",
                "(reported)",
                True,
            )
        )
    base = figures.get("mosquitto-64")
    if base and "hub" in cpu:
        cores = os.cpu_count() or 1
        budget = cores * 1e6 / (0.8 * base) - cpu["hub"][1]
        results.append(
            Result(
                f"hub CPU per message 0.8x would need on {cores} shared cores (us)",
                f"{budget:.0f}",
                f"(now {cpu['hub'][0]:.0f})",
                True,
            )
        )
    for name, peak in peaks.items():
        results.append(Result(f"peak RSS under that load: {name} (MB)", f"{peak:.0f}", "", True))
    results.append(Result("durable latency p99 at 1,000 msg/s, TLS (ms)", f"{p99:.2f}", "<= 5", p99 <= 5))
    results.append(Result("ready after start, empty (s)", f"{ready_empty:.2f}", "<= 1", ready_empty <= 1))
    results.append(Result(f"filling a {BACKLOG:,} backlog (msg/s)", f"{BACKLOG / filled:,.0f}", "", True))
    results.append(Result(f"RSS holding {BACKLOG:,} queued (MB)", f"{holding:.0f}", "<= 150", holding <= 150))
    results.append(Result("ready after start, with that backlog (s)", f"{ready_backlog:.2f}", "", True))
    results.append(Result("drain rate of the backlog (msg/s)", f"{rate:,.0f}", "", True))
    results.append(Result("peak RSS while draining (MB)", f"{drain_peak:.0f}", "", True))
    return results
