"""The durable routed path over AMQP beside the same path over MQTT, both over TLS, in one run.

One hub with three sensor/filter pairs (each sensor's output routed to its filter's input through the
durable message log). The same messages (64 bytes, acknowledged after the commit, delivered with the
same window) go once through the MQTT head (``loadgen``, MQTT over TLS) and once through the AMQP head
(``amqp_loadgen``, AMQP over TLS with SASL PLAIN). The figures: msg/s, the hub's CPU per message (its
user plus system time over the run, from the kernel's CPU-time clock of its process), the generator's
CPU per message; each the median of ``RUNS`` runs sized to last about ``SECONDS``.

Issue 15 asks for these figures beside MQTT's; there is no target for them yet.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from . import amqp_loadgen, loadgen
from .brokers_bench import PAIRS, PROBE, RUNS, SECONDS, Throughput
from .harness import DEVICE, IOTHUB, CpuMeter, HubProcess
from .report import Result


def _median(drive: Callable[[int], tuple[float, int, float]], pid: int) -> Throughput:
    probe_rate, _, _ = drive(PROBE)
    count = max(PROBE, int(probe_rate * SECONDS / PAIRS))
    runs = []
    for _ in range(RUNS):
        with CpuMeter(pid) as meter:
            rate, messages, generator_us = drive(count)
        runs.append(Throughput(rate, meter.per_message_us(messages)[0], generator_us))
    return Throughput(
        statistics.median(r.rate for r in runs),
        statistics.median(r.broker_us for r in runs),
        statistics.median(r.generator_us for r in runs),
    )


def measure() -> dict[str, Throughput]:
    hub = HubProcess(pairs=PAIRS)
    try:
        mqtt_targets = [hub.target(True, i) for i in range(PAIRS)]
        amqp_targets = [
            amqp_loadgen.AmqpTarget(
                "127.0.0.1",
                hub.endpoints["amqps_port"],
                hub.endpoints["ca_file"],
                IOTHUB.split(".")[0],
                DEVICE,
                (f"sensor{i}", hub.credentials(f"sensor{i}")[2]),
                (f"filter{i}", hub.credentials(f"filter{i}")[2]),
            )
            for i in range(PAIRS)
        ]

        def mqtt(count: int) -> tuple[float, int, float]:
            result = loadgen.run_pairs(mqtt_targets, count, 64)
            return result.rate, result.messages, result.generator_cpu_us

        def amqp(count: int) -> tuple[float, int, float]:
            result = amqp_loadgen.run_pairs(amqp_targets, count)
            return result.rate, result.messages, result.generator_cpu_us

        return {
            "MQTT over TLS": _median(mqtt, hub.process.pid),
            "AMQP over TLS": _median(amqp, hub.process.pid),
        }
    finally:
        hub.stop()


def run() -> tuple[list[str], list[Result]]:
    measured = measure()
    lines = [
        f"  durable routed hub, {PAIRS} pairs, 64 B, median of {RUNS} runs;"
        " CPU per message in us (process CPU clock)",
        f"  {'head':<20}{'msg/s':>9}{'hub us':>9}{'gen us':>9}",
    ]
    for name, t in measured.items():
        lines.append(f"  {name:<20}{t.rate:>9,.0f}{t.broker_us:>9.1f}{t.generator_us:>9.1f}")
    mqtt, amqp = measured["MQTT over TLS"], measured["AMQP over TLS"]
    results = [
        Result("AMQP routed durable msg/s (TLS)", f"{amqp.rate:,.0f}", f"(MQTT {mqtt.rate:,.0f})", True),
        Result(
            "AMQP hub CPU per routed message (us)",
            f"{amqp.broker_us:.1f}",
            f"(MQTT {mqtt.broker_us:.1f})",
            True,
        ),
    ]
    return lines, results
