"""The durable routed hub beside mosquitto, amqtt and its own broker mode, measured the same way in one
run, with both load generators.

Each broker gets three publisher/subscriber pairs of 64-byte QoS 1 messages:

- mosquitto and amqtt: plain pub/sub on ``bench/{i}``, anonymous;
- the hub's broker mode (``mqttBroker``, ``--dev``): the same plain pub/sub on user topics;
- the durable routed hub: ``sensor{i}`` publishes telemetry on ``outputs/out``, a route sends it to
  ``filter{i}``'s input, through the durable message log (PUBACK after the commit);
- the same hub with its hot path as Python (``EDGEHUB_EMU_PURE_PYTHON=1``), what the compiled hot path
  (``edgehub_emu.compiled``) saves measured in the same run.

Two load generators drive them: ``loadgen`` (one process, pre-encoded packets, a few microseconds per
message, so that the broker is what is measured) and paho (one process per pair, as real modules look,
with the backlog capped as a real source's would be). For every broker and generator the report gives
msg/s, the ratio to mosquitto with the same generator, the **broker's CPU per message** (its user plus
system time over the run from the kernel's CPU-time clock of its process, divided by the messages), the
generator's CPU per message, p50/p99 latency at a steady 1,000 msg/s with the broker's CPU per message
there (each message arriving alone), and the broker's peak RSS. Each throughput figure is the median of
``RUNS`` runs, each sized to last about ``SECONDS``; the hub's latency over TLS, the run with the median
p99 of three.

All five brokers run at once, idle but for the one being measured, and each generator's runs go round
them in turn (forwards, then backwards): a slow stretch of the machine, which can last seconds on a
shared host, then falls on every broker's runs instead of on one broker's, and the ratios compare
brokers measured side by side.


Targets (issue 12): durable routed hub >= 0.8x mosquitto's msg/s with paho; broker CPU per routed
durable message <= 25 us; >= 0.35x mosquitto with the cheap generator; p99 <= 2 ms at 1,000 msg/s over
TLS.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from edgehub_emu.compiled import status as hot_path_status

from . import loadgen
from .harness import AMQTT, Amqtt, CpuMeter, HubProcess, Mosquitto, Target, pair_throughput
from .mqtt_bench import latency as paho_latency
from .report import Result

PAIRS = 3
SIZE = 64
RUNS = 5
SECONDS = 2.0
PROBE = 2_000  # messages per pair in the run that sizes the measured ones


@dataclass(frozen=True)
class Subject:
    """One broker under test: its process, its pairs, and (for the hub) a TLS pair for latency."""

    name: str
    pid: int
    targets: list[Target]
    peak_mb: Callable[[], float]
    tls_target: Target | None = None


@dataclass(frozen=True)
class Throughput:
    rate: float
    broker_us: float
    generator_us: float


def _loadgen(targets: list[Target], count: int) -> tuple[float, int, float]:
    result = loadgen.run_pairs(targets, count, SIZE)
    return result.rate, result.messages, result.generator_cpu_us


def _paho(targets: list[Target], count: int) -> tuple[float, int, float]:
    rate = pair_throughput(targets, count, SIZE)
    return rate, count * len(targets), -1.0  # the generator's CPU comes from the meter


GENERATORS: dict[str, Callable[[list[Target], int], tuple[float, int, float]]] = {
    "loadgen": _loadgen,
    "paho": _paho,
}


def throughputs(subjects: dict[str, Subject], generator: str) -> dict[str, Throughput]:
    """Each broker's median of RUNS runs, each sized from a short probe run to last about SECONDS; the
    runs go round the brokers in turn (see the module's docstring)."""
    drive = GENERATORS[generator]
    counts: dict[str, int] = {}
    for name, subject in subjects.items():
        probe_rate, _, _ = drive(subject.targets, PROBE)
        counts[name] = max(PROBE, int(probe_rate * SECONDS / len(subject.targets)))
    runs: dict[str, list[Throughput]] = {name: [] for name in subjects}
    names = list(subjects)
    for turn in range(RUNS):
        for name in names if turn % 2 == 0 else reversed(names):
            subject = subjects[name]
            with CpuMeter(subject.pid) as meter:
                rate, messages, generator_us = drive(subject.targets, counts[name])
            broker_us, clients_us = meter.per_message_us(messages)
            runs[name].append(Throughput(rate, broker_us, generator_us if generator_us >= 0 else clients_us))
    return {
        name: Throughput(
            statistics.median(r.rate for r in measured),
            statistics.median(r.broker_us for r in measured),
            statistics.median(r.generator_us for r in measured),
        )
        for name, measured in runs.items()
    }


@dataclass(frozen=True)
class Latency:
    """Publish-to-delivery latency at a steady rate, and what each of those messages cost the broker.
    At 1,000 msg/s every message arrives alone, so its CPU is the cost of a lone message: several
    times the per-message cost in a busy batch, and what sets how far a slow stretch of the machine
    delays the messages behind it (see the README's performance section)."""

    p50: float  # ms
    p99: float  # ms
    broker_us: float  # the broker's CPU per message over the run (connects included: a few in 4,000)


LATENCY_RATE = 1000
LATENCY_SECONDS = 4.0


def steady_latency(pid: int, run: Callable[[], tuple[float, float]]) -> Latency:
    """``run`` (one steady run at LATENCY_RATE for LATENCY_SECONDS) with the broker's CPU metered."""
    with CpuMeter(pid) as meter:
        p50, p99 = run()
    broker_us, _ = meter.per_message_us(int(LATENCY_RATE * LATENCY_SECONDS))
    return Latency(p50, p99, broker_us)


def latencies(subject: Subject) -> dict[str, Latency]:
    """p50/p99 in ms at 1,000 msg/s, and the broker's CPU per message there, with each generator."""
    target = subject.targets[0]
    return {
        "loadgen": steady_latency(
            subject.pid, lambda: loadgen.latency(target, LATENCY_RATE, LATENCY_SECONDS)
        ),
        "paho": steady_latency(subject.pid, lambda: paho_latency(target, LATENCY_RATE, LATENCY_SECONDS)),
    }


@dataclass
class Measured:
    throughput: dict[str, Throughput]
    latency: dict[str, Latency]
    peak_mb: float
    tls_latency: Latency | None = None


def measure(subject: Subject, figures: dict[str, Throughput]) -> Measured:
    """A broker's throughput ``figures`` (measured beside the others) with its latencies and peak RSS."""
    lat = latencies(subject)
    tls = None
    tls_target = subject.tls_target
    if tls_target is not None:  # the target's figure: the run with the median p99 of three
        runs = [
            steady_latency(subject.pid, lambda: loadgen.latency(tls_target, LATENCY_RATE, LATENCY_SECONDS))
            for _ in range(3)
        ]
        tls = sorted(runs, key=lambda r: r.p99)[1]
    return Measured(figures, lat, subject.peak_mb(), tls)


def _plain(stack: contextlib.ExitStack, broker_class: type[Mosquitto] | type[Amqtt]) -> Subject:
    broker = broker_class()
    stack.callback(broker.stop)
    targets = [broker.target(pair=i) for i in range(PAIRS)]
    return Subject(broker.name, broker.process.pid, targets, lambda: broker.memory_mb("VmHWM"))


def _hub(stack: contextlib.ExitStack, routed: bool, pure_python: bool = False) -> Subject:
    hub = HubProcess(pairs=PAIRS, broker=not routed, pure_python=pure_python)
    stack.callback(hub.stop)
    peak = partial(hub.memory_mb, "VmHWM")
    if not routed:
        return Subject("broker mode", hub.process.pid, [hub.user_topic_target(i) for i in range(PAIRS)], peak)
    targets = [hub.target(False, i) for i in range(PAIRS)]
    if pure_python:  # the same-run comparison for the compiled hot path: no TLS latency
        return Subject("hub as Python", hub.process.pid, targets, peak)
    return Subject("hub", hub.process.pid, targets, peak, hub.target(True, 0))


def table(measured: dict[str, Measured]) -> list[str]:
    """The comparison, one row per broker and generator."""
    base = measured.get("mosquitto")
    lines = [
        f"  {PAIRS} pairs, {SIZE} B, QoS 1; median of {RUNS} runs; CPU per message in us (process CPU clock)",
        f"  the hub's hot path: {hot_path_status()}",
        f"  {'broker':<40}{'generator':<10}{'msg/s':>9}{'ratio':>7}{'broker us':>11}{'gen us':>8}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'us@1k':>7}{'peak MB':>9}",
    ]
    for name, m in measured.items():
        for generator, t in m.throughput.items():
            ratio = f"{t.rate / base.throughput[generator].rate:.2f}x" if base else "-"
            lat = m.latency[generator]
            lines.append(
                f"  {name:<40}{generator:<10}{t.rate:>9,.0f}{ratio:>7}{t.broker_us:>11.1f}"
                f"{t.generator_us:>8.1f}{lat.p50:>8.2f}{lat.p99:>8.2f}{lat.broker_us:>7.0f}{m.peak_mb:>9.0f}"
            )
    lines.append(
        f"  p50, p99, us@1k: at a steady {LATENCY_RATE:,} msg/s (one pair), each message arriving alone;"
    )
    lines.append("  us@1k is the broker's CPU per message there")
    return lines


HUB = "durable routed hub (module to module)"
HUB_AS_PYTHON = "  the same, its hot path as Python"


def run() -> tuple[list[str], list[Result]]:
    measured: dict[str, Measured] = {}
    with contextlib.ExitStack() as stack:
        subjects: dict[str, Subject] = {}
        if shutil.which("mosquitto"):
            subjects["mosquitto"] = _plain(stack, Mosquitto)
        if AMQTT.exists():
            subjects["amqtt"] = _plain(stack, Amqtt)
        subjects["hub broker mode (user topics)"] = _hub(stack, routed=False)
        subjects[HUB] = _hub(stack, routed=True)
        subjects[HUB_AS_PYTHON] = _hub(stack, routed=True, pure_python=True)
        figures = {generator: throughputs(subjects, generator) for generator in GENERATORS}
        for name, subject in subjects.items():
            measured[name] = measure(subject, {g: figures[g][name] for g in GENERATORS})

    hub = measured[HUB]
    base = measured.get("mosquitto")
    results: list[Result] = []
    cpu = hub.throughput["loadgen"].broker_us
    results.append(Result("hub CPU per routed durable message (us)", f"{cpu:.1f}", "<= 25", cpu <= 25))
    if base is not None:
        paho = hub.throughput["paho"].rate / base.throughput["paho"].rate
        cheap = hub.throughput["loadgen"].rate / base.throughput["loadgen"].rate
        results.append(
            Result("routed durable msg/s, paho, vs mosquitto", f"{paho:.2f}x", ">= 0.8x", paho >= 0.8)
        )
        results.append(
            Result("routed durable msg/s, loadgen, vs mosquitto", f"{cheap:.2f}x", ">= 0.35x", cheap >= 0.35)
        )
    else:
        results.append(Result("routed durable msg/s vs mosquitto", "(no mosquitto)", ">= 0.8x", False))
    tls = hub.tls_latency
    assert tls is not None
    results.append(
        Result("routed durable p50 at 1,000 msg/s, TLS (ms)", f"{tls.p50:.2f}", "(reported)", True)
    )
    results.append(
        Result("routed durable p99 at 1,000 msg/s, TLS (ms)", f"{tls.p99:.2f}", "<= 2", tls.p99 <= 2)
    )
    lone = "(reported)" if base is None else f"(mosquitto {base.latency['loadgen'].broker_us:.0f}, plain)"
    results.append(Result("  hub CPU per message there (us)", f"{tls.broker_us:.0f}", lone, True))
    return table(measured), results
