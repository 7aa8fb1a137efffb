"""Store-and-forward through a real hub: priorities, time-to-live, outages, failures, reloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from typer.testing import CliRunner

from edgehub_emu import hub as hub_module
from edgehub_emu.cli import app
from edgehub_emu.metrics import render
from edgehub_emu.upstream import Upstream

from .conftest import DEVICE, EXAMPLE, manifest

OUT = f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on="
INPUTS = f"devices/{DEVICE}/modules/filtermodule/inputs/#"


def route(output: str, input_name: str = "in", **spec):
    text = (
        f"FROM /messages/modules/SimulatedTemperatureSensor/outputs/{output} "
        f'INTO BrokeredEndpoint("/modules/filtermodule/inputs/{input_name}")'
    )
    return {"route": text, **spec} if spec else text


async def test_priority_0_overtakes_priority_2_while_the_module_is_offline(start_hub):
    hub = await start_hub(manifest({"p2": route("p2", priority=2), "p0": route("p0", priority=0)}))
    sender = await hub.client("SimulatedTemperatureSensor")
    for i in range(4):
        await sender.publish(f"{OUT}p2", f"two-{i}")
        await sender.publish(f"{OUT}p0", f"zero-{i}")
    receiver = await hub.client("filtermodule")
    await receiver.subscribe(INPUTS)
    got = [(await receiver.next()).payload.decode() for _ in range(8)]
    assert got == [f"zero-{i}" for i in range(4)] + [f"two-{i}" for i in range(4)]
    sender.stop()
    receiver.stop()


async def test_messages_older_than_their_ttl_never_arrive_and_are_counted(start_hub):
    hub = await start_hub(manifest({"short": route("short", timeToLiveSecs=1), "long": route("long")}))
    sender = await hub.client("SimulatedTemperatureSensor")
    for i in range(3):
        await sender.publish(f"{OUT}short", f"short-{i}")
    await sender.publish(f"{OUT}long", b"long")
    await asyncio.sleep(1.3)
    receiver = await hub.client("filtermodule")
    await receiver.subscribe(INPUTS)
    assert (await receiver.next()).payload == b"long"
    await receiver.nothing()
    metrics = render(hub.hub.metrics)
    assert 'reason="ttl_expiry"} 3.0' in metrics
    sender.stop()
    receiver.stop()


class FlakyUpstream(Upstream):
    """An upstream that refuses its first messages, as one that is unreachable for a while."""

    def __init__(self, capture, refusals: int) -> None:
        super().__init__(capture)
        self.refusals = refusals
        self.delivered: list[bytes] = []

    async def forward(self, message) -> None:
        if self.refusals:
            self.refusals -= 1
            raise ConnectionError("upstream unreachable")
        self.delivered.append(message.body)


async def test_upstream_outage_messages_wait_and_flow_in_order(start_hub):
    upstreams: list[FlakyUpstream] = []

    def flaky(capture, hooks) -> FlakyUpstream:
        upstreams.append(FlakyUpstream(capture, refusals=2))
        return upstreams[-1]

    hub = await start_hub(make_upstream=flaky, delivery_retry_first=0.05)
    (upstream,) = upstreams
    delivered = upstream.delivered
    sender = await hub.client("filtermodule")
    for i in range(5):
        await sender.publish(
            f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1", f"up-{i}"
        )
    async with asyncio.timeout(10):
        while len(delivered) < 5:
            await asyncio.sleep(0.05)
    assert delivered == [f"up-{i}".encode() for i in range(5)]
    assert upstream.refusals == 0
    sender.stop()


@contextlib.contextmanager
def files_cannot_grow_beyond(size: int) -> Iterator[None]:
    """A real write failure: this process may not write files past ``size`` bytes (EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


async def test_a_store_failure_disconnects_the_publisher_without_puback(start_hub, tmp_path: Path):
    hub = await start_hub()
    sender = await hub.client("SimulatedTemperatureSensor")
    await sender.publish(f"{OUT}temperatureOutput", b"stored")
    (segment,) = (tmp_path / "queue").glob("*.log")
    with files_cannot_grow_beyond(segment.stat().st_size):
        info = sender.paho.publish(f"{OUT}temperatureOutput", b"refused", qos=1)
        await sender.disconnected()
    assert not info.is_published()
    other = await hub.client("filtermodule")  # the hub keeps serving everyone else
    await other.subscribe(INPUTS)
    assert (await other.next()).payload == b"stored"  # what was stored before is still delivered
    await other.nothing()
    other.stop()


async def test_manifest_file_change_reloads_routes_and_keeps_queued_messages(
    start_hub, tmp_path: Path, caplog
):
    path = tmp_path / "deployment.json"
    doc = json.loads(json.dumps(EXAMPLE))
    path.write_text(json.dumps(doc))
    hub = await start_hub(deployment=None, manifest=path, watch_manifest=True)
    sender = await hub.client("SimulatedTemperatureSensor")
    await sender.publish(f"{OUT}temperatureOutput", b"queued before")
    routes = doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    routes["sensorToFilter"]["route"] = route("temperatureOutput", "input2")
    path.write_text(json.dumps(doc))
    async with asyncio.timeout(5):
        while "input2" not in str([r.endpoint for r in hub.hub.snapshot().routes]):
            await asyncio.sleep(0.1)
    await sender.publish(f"{OUT}temperatureOutput", b"new route")
    receiver = await hub.client("filtermodule")
    await receiver.subscribe(INPUTS)
    message = await receiver.next()
    assert message.payload == b"new route" and "/inputs/input2/" in message.topic
    await receiver.nothing()  # the old input's queue is no longer delivered ...
    assert len(hub.hub.queued("filtermodule", "input1")) == 1  # ... but kept until its TTL
    path.write_text("{ not json")  # a broken manifest keeps the previous deployment
    await _logged(caplog, "kept the previous deployment")
    assert "input2" in str([r.endpoint for r in hub.hub.snapshot().routes])
    status = ["status", "-m", str(path.with_name("ok.json")), "--data-dir", str(tmp_path)]
    # the CLI calls the hub's API synchronously: run it off this event loop, which is the hub's
    result = await asyncio.to_thread(CliRunner().invoke, app, status)
    assert result.exit_code == 1  # no such manifest: a message, not a traceback
    path.with_name("ok.json").write_text(json.dumps(doc))
    result = await asyncio.to_thread(CliRunner().invoke, app, status)
    assert result.exit_code == 0, result.output
    assert "edge-device/filtermodule/input1  priority 0: 1 waiting" in result.output
    assert "identities:" in result.output and "sensorToFilter" in result.output  # the running hub
    assert "no route names it any more" in result.output
    sender.stop()
    receiver.stop()


async def _logged(caplog, text: str, timeout: float = 10) -> None:
    """Wait for the hub to log ``text`` (its own word that it handled what the test did)."""
    async with asyncio.timeout(timeout):
        while text not in caplog.text:
            await asyncio.sleep(0.05)


async def test_the_manifest_watcher_outlives_a_missing_a_deep_and_a_broken_file(
    start_hub, tmp_path: Path, caplog
):
    caplog.set_level("INFO")
    path = tmp_path / "deployment.json"
    doc = json.loads(json.dumps(EXAMPLE))
    path.write_text(json.dumps(doc))
    hub = await start_hub(deployment=None, manifest=path, watch_manifest=True)
    path.unlink()
    await _logged(caplog, "is gone: the deployment loaded from it keeps running")
    path.write_text("[" * 100_000 + "]" * 100_000)  # nested deeper than any parser goes
    await _logged(caplog, "kept the previous deployment")
    caplog.clear()
    path.write_text('{"modulesContent": 1}')
    await _logged(caplog, "kept the previous deployment")
    routes = doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    routes["sensorToFilter"]["route"] = route("temperatureOutput", "input2")
    path.write_text(json.dumps(doc))  # the next valid version loads
    await _logged(caplog, f"reloaded {path}")
    assert "input2" in str([r.endpoint for r in hub.hub.snapshot().routes])


async def test_a_changed_manifest_is_read_and_compiled_off_the_event_loop(
    start_hub, tmp_path: Path, caplog, monkeypatch
):
    """A big manifest takes a while to compile: the watcher does it on a thread, so that connections
    are served meanwhile; only applying the compiled table happens on the loop."""
    caplog.set_level("INFO")
    path = tmp_path / "deployment.json"
    doc = json.loads(json.dumps(EXAMPLE))
    path.write_text(json.dumps(doc))
    hub = await start_hub(deployment=None, manifest=path, watch_manifest=True)
    compiled_on: list[threading.Thread] = []
    compile_routes = hub_module.compile_routes

    def recording(deployment, device_id):
        compiled_on.append(threading.current_thread())
        return compile_routes(deployment, device_id)

    monkeypatch.setattr(hub_module, "compile_routes", recording)
    routes = doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    routes["sensorToFilter"]["route"] = route("temperatureOutput", "input2")
    path.write_text(json.dumps(doc))
    await _logged(caplog, f"reloaded {path}")
    assert "input2" in str([r.endpoint for r in hub.hub.snapshot().routes])
    assert compiled_on and threading.main_thread() not in compiled_on


async def test_metrics_use_edgehubs_names(start_hub):
    hub = await start_hub()
    sender = await hub.client("filtermodule")
    await sender.publish(f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1", b"x")
    await sender.publish(f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=nowhere", b"x")
    await hub.hub.upstream.wait_for(timeout=5)
    text = render(hub.hub.metrics)
    assert "edgehub_messages_received_total{" in text
    assert 'reason="no_route"} 1.0' in text
    assert 'to="iothub"} 1.0' in text
    assert "edgehub_connected_clients{" in text
    sender.stop()


async def test_two_inputs_of_one_module_share_the_window_without_stalling(start_hub):
    """With edgeHub's pacing (one in flight per client across inputs) both inputs keep flowing."""
    hub = await start_hub(manifest({"a": route("a", "in1"), "b": route("b", "in2")}), delivery_window=1)
    sender = await hub.client("SimulatedTemperatureSensor")
    for i in range(10):
        await sender.publish(f"{OUT}{'a' if i % 2 == 0 else 'b'}", f"m{i}")
    receiver = await hub.client("filtermodule")
    started = asyncio.get_running_loop().time()
    await receiver.subscribe(INPUTS)
    got = sorted([(await receiver.next(timeout=10)).payload.decode() for _ in range(10)])
    assert got == sorted(f"m{i}" for i in range(10))
    assert asyncio.get_running_loop().time() - started < 3  # no 5-second waits between inputs
    sender.stop()
    receiver.stop()
