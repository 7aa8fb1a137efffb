"""Issue 12's reload figure: how long a running hub's event loop stalls while it reloads 1,000 routes.

A hub watches its manifest file; the file is rewritten with 1,000 routes, each with a condition no
earlier run had (nothing comes from the compile caches). A ticker on the hub's event loop asks to
wake every millisecond and records how late it wakes: the longest lateness between the write and the
moment the new routes are in use is how long every connection waited (the hub runs in this process,
with start-up's objects frozen as ``edgehub-emu run`` freezes them). The comparison, in the same run:
another fresh 1,000-route manifest read, validated, compiled and applied on the event loop, as the hub
reloaded before issue 12. A full garbage collection (it walks every object the new routes are made of)
can fall into either window: it holds the interpreter, thread or not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edgehub_emu.heap import freeze_start_up_objects
from edgehub_emu.hub import EdgeHub
from edgehub_emu.manifest import load_deployment
from edgehub_emu.testing import hub_settings

from .report import Result

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "deployment.json"
ROUTES = 1000


def _manifest(run: int) -> dict[str, Any]:
    document = json.loads(EXAMPLE.read_text())
    desired = document["modulesContent"]["$edgeHub"]["properties.desired"]
    desired["routes"] = {
        f"r{i}": {
            "route": f"FROM /messages/modules/sensor{i}/outputs/* WHERE as_number(temperature) > "
            f"{run * 100_000 + i} AND machine = 'reload{i}' "
            f'INTO BrokeredEndpoint("/modules/filter/inputs/in{i}")',
            "priority": i % 10,
        }
        for i in range(ROUTES)
    }
    return document


class _LoopLag:
    """The latest the event loop woke a 1 ms sleeper, from ``reset()`` on."""

    def __init__(self) -> None:
        self.worst = 0.0

    def reset(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - asked - 0.001)


async def _stalls(scratch: Path) -> tuple[float, float, float]:
    manifest = scratch / "deployment.json"
    manifest.write_text(EXAMPLE.read_text())
    settings = dataclasses.replace(
        hub_settings(scratch / "data", scratch / "w.sock"), manifest=manifest, watch_manifest=True
    )
    lag = _LoopLag()
    ticker = asyncio.create_task(lag.run())
    try:
        async with EdgeHub(settings) as hub:
            freeze_start_up_objects()  # as ``edgehub-emu run`` does once the hub has started
            text = json.dumps(_manifest(1))
            gc.collect()
            await asyncio.sleep(0.05)
            lag.reset()
            began = time.perf_counter()
            manifest.write_text(text)
            while hub.route_table is None or len(hub.route_table) != ROUTES:
                await asyncio.sleep(0.005)
            watched, took = lag.worst, time.perf_counter() - began

            # The design this replaced: the manifest read, validated, compiled and applied on the loop.
            text = json.dumps(_manifest(2))
            gc.collect()  # both reloads begin with the collector in the same state
            await asyncio.sleep(0.05)
            lag.reset()
            manifest.write_text(text)
            hub.reload(load_deployment(manifest, env={}))
            await asyncio.sleep(0.005)
            on_loop = lag.worst
    finally:
        ticker.cancel()
    return watched, took, on_loop


def run() -> list[Result]:
    scratch = Path(tempfile.mkdtemp(prefix="edgehub-bench-"))
    try:
        watched, took, on_loop = asyncio.run(_stalls(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [
        Result(
            "1,000-route reload: longest event-loop stall",
            f"{watched * 1000:.1f} ms",
            "<= 20 ms",
            watched <= 0.020,
        ),
        Result("  same, all on the loop (before)", f"{on_loop * 1000:.0f} ms", "(comparison)", True),
        Result("  same, file written to routes in use", f"{took * 1000:.0f} ms", "(watch: every 1 s)", True),
    ]
