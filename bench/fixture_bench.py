"""Issue 6's figure: how long the ``edgehub`` pytest fixture takes to start and stop a hub.

The fixture's own code path (``EdgeHubFixture`` with the fixture's settings, the default manifest, the
in-memory store, a fresh data directory each time, so certificates and keys are made anew) is started
and stopped ROUNDS times; the median and the 90th percentile of start+stop are reported.

Target: median start+stop <= 10 ms, so a test suite can afford a fresh hub per test.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from edgehub_emu.manifest import load_deployment
from edgehub_emu.testing import EdgeHubFixture, hub_settings

from .report import Result

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 50


def start_stop_seconds(rounds: int = ROUNDS) -> list[float]:
    deployment = load_deployment(ROOT / "config" / "deployment.json")
    timings = []
    for _ in range(rounds):
        scratch = Path(tempfile.mkdtemp(prefix="edgehub-bench-"))
        try:
            began = time.perf_counter()
            hub = EdgeHubFixture(hub_settings(scratch / "data", scratch / "w.sock"), deployment)
            hub.stop()
            timings.append(time.perf_counter() - began)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return timings


def run() -> list[Result]:
    timings = sorted(start_stop_seconds())
    median = statistics.median(timings) * 1000
    p90 = timings[int(len(timings) * 0.9)] * 1000
    return [
        Result("pytest fixture start+stop, median", f"{median:.1f} ms", "<= 10 ms", median <= 10),
        Result("pytest fixture start+stop, p90", f"{p90:.1f} ms", "(reported)", True),
    ]
