"""What the message trace costs on the durable routed path (issue 14: at most 1 us of hub CPU per
message). One hub, driven by the cheap load generator, in runs that alternate between tracing on (the
default: the latest 2,000 messages) and paused (``PUT /trace {"enabled": false}``): the same process
for both, so that neither a different memory layout nor a different hash seed is measured instead, and
in the order on/off, off/on, ... so that periodic work (a log segment sealed every so many messages)
falls on both. The figure is the difference of the medians of the hub's CPU per message. The runs are
short and many (the CPU is read to the nanosecond), since this machine's slow stretches last seconds:
finely alternated, they fall on both sides alike.
"""

from __future__ import annotations

import json
import statistics
import urllib.request

from . import loadgen
from .harness import CpuMeter, HubProcess
from .report import Result

PAIRS = 3
RUNS = 20
COUNT = 7_500  # messages per pair in a run (short runs, finely alternated: see above)


def _run(hub: HubProcess) -> float:
    targets = [hub.target(False, i) for i in range(PAIRS)]
    with CpuMeter(hub.process.pid) as meter:
        result = loadgen.run_pairs(targets, COUNT, 64)
    return meter.per_message_us(result.messages)[0]


def _tracing(hub: HubProcess, on: bool) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{hub.endpoints['http_port']}/trace",
        data=json.dumps({"enabled": on}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["tracing"] is on


def run() -> list[Result]:
    hub = HubProcess(pairs=PAIRS)
    on: list[float] = []
    off: list[float] = []
    try:
        _run(hub)  # warm up
        for turn in range(RUNS):  # on/off, then off/on: periodic work (a segment sealed every so many
            for tracing in (True, False) if turn % 2 == 0 else (False, True):  # messages) hits both
                _tracing(hub, tracing)
                (on if tracing else off).append(_run(hub))
    finally:
        hub.stop()
    with_trace, without = statistics.median(on), statistics.median(off)
    cost = with_trace - without
    return [
        Result("hub CPU per routed message, tracing on (us)", f"{with_trace:.1f}", "(reported)", True),
        Result("hub CPU per routed message, tracing paused (us)", f"{without:.1f}", "(reported)", True),
        Result("message trace: CPU added per message (us)", f"{cost:+.2f}", "<= 1", cost <= 1),
    ]


if __name__ == "__main__":
    for r in run():
        print(f"  {r.name:50} {r.figure:>8}  target {r.target:<12} {'ok' if r.met else 'MISSED'}")
