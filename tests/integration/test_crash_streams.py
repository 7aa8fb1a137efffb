"""At-least-once through several crashes: streams on two priorities, fanned out to two endpoints, with a
short time-to-live on a third, and `kill -9` of the hub three times, once while a module is draining.

Every message the hub acknowledged (PUBACK) must reach every endpoint its routes name, in publish order
within each endpoint and priority; duplicates are allowed (at-least-once); a message whose time-to-live
ran out while the hub was down is not delivered.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from .conftest import DEVICE, EXAMPLE, HubSubprocess

pytestmark = pytest.mark.timeout(240)

MODULES = ["sensor", "filter", "monitor"]
STALE_TTL = 1
ROUTES = {
    "alerts": {
        "route": "FROM /messages/modules/sensor/outputs/alerts "
        'INTO BrokeredEndpoint("/modules/filter/inputs/alerts")',
        "priority": 0,
        "timeToLiveSecs": 3600,
    },
    "telemetry": {
        "route": "FROM /messages/modules/sensor/outputs/telemetry "
        'INTO BrokeredEndpoint("/modules/filter/inputs/telemetry")',
        "priority": 1,
        "timeToLiveSecs": 3600,
    },
    "everything": 'FROM /messages/modules/sensor/* INTO BrokeredEndpoint("/modules/monitor/inputs/all")',
    "stale": {
        "route": "FROM /messages/modules/sensor/outputs/telemetry "
        'INTO BrokeredEndpoint("/modules/filter/inputs/stale")',
        "timeToLiveSecs": STALE_TTL,
    },
}
EXPECTED = {  # which outputs each (module, input) receives
    ("filter", "alerts"): {"alerts"},
    ("filter", "telemetry"): {"telemetry"},
    ("monitor", "all"): {"alerts", "telemetry"},
}


def write_manifest(path: Path) -> Path:
    doc = json.loads(json.dumps(EXAMPLE))
    content = doc["modulesContent"]
    agent = content["$edgeAgent"]["properties.desired"]
    template = agent["modules"]["filtermodule"]
    agent["modules"] = {m: template for m in MODULES}
    content["$edgeHub"]["properties.desired"]["routes"] = ROUTES
    path.write_text(json.dumps(doc))
    return path


class Receiver:
    """A module that takes everything on its inputs; records (input, output, seq) in arrival order."""

    def __init__(self, hub: HubSubprocess, module: str) -> None:
        self.arrivals: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.client = hub.client(module, self.on_message)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe(f"devices/{DEVICE}/modules/{module}/inputs/#", 1)
        assert subscribed.wait(10)

    def on_message(self, _c, _u, message: mqtt.MQTTMessage) -> None:
        input_name = message.topic.split("/")[5]
        output, seq = message.payload.decode().split(":")
        with self.lock:
            self.arrivals.append((input_name, output, int(seq)))

    def stop(self) -> list[tuple[str, str, int]]:
        self.client.loop_stop()
        with self.lock:
            return list(self.arrivals)


class Stream:
    """The sensor publishing ``alerts:N`` and ``telemetry:N`` (N counting across restarts) as fast as
    the hub acknowledges; records which were acknowledged."""

    def __init__(self, hub: HubSubprocess, first: int, acked: set[tuple[str, int]]) -> None:
        self.client = hub.client("sensor")
        self.next = first
        self.acked = acked
        self.pending: dict[int, tuple[str, int]] = {}
        self.early: set[int] = set()  # acknowledged before publish() returned its id
        self.lock = threading.Lock()
        self.client.on_publish = self.on_publish
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def on_publish(self, _c, _u, mid, _rc, _p) -> None:
        with self.lock:
            sent = self.pending.pop(mid, None)
            if sent is not None:
                self.acked.add(sent)
            else:
                self.early.add(mid)

    def run(self) -> None:
        while not self.stopping.is_set():
            output = "alerts" if random.random() < 0.3 else "telemetry"
            info = self.client.publish(  # not under self.lock: paho calls on_publish under its own
                f"devices/{DEVICE}/modules/sensor/messages/events/%24.on={output}",
                f"{output}:{self.next}".encode(),
                qos=1,
            )
            with self.lock:
                if info.mid in self.early:
                    self.early.discard(info.mid)
                    self.acked.add((output, self.next))
                else:
                    self.pending[info.mid] = (output, self.next)

            self.next += 1
            if self.next % 40 == 0:
                time.sleep(0.002)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join(5)
        self.client.loop_stop()
        return self.next


def wait_for(condition, timeout: float, what: str, detail=lambda: "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what} {detail()}"
        time.sleep(0.02)


def test_nothing_acknowledged_is_lost_over_three_kill_9s(tmp_path: Path):
    manifest = write_manifest(tmp_path / "deployment.json")
    data = tmp_path / "data"
    data.mkdir()
    acked: set[tuple[str, int]] = set()
    arrivals: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    seq = 0
    for cycle in range(3):
        hub = HubSubprocess(data, manifest=manifest, modules=MODULES)
        draining = Receiver(hub, "filter") if cycle == 1 else None  # a module taking messages mid-crash
        stream = Stream(hub, seq, acked)
        before = len(acked)
        wait_for(lambda: len(acked) >= before + 400, 30, "acknowledgements")  # noqa: B023
        time.sleep(random.uniform(0.0, 0.2))  # a random moment in the middle of the stream
        hub.kill()
        seq = stream.stop()
        if draining is not None:
            arrivals["filter"] += draining.stop()
    crashed_at = time.time()

    hub = HubSubprocess(data, manifest=manifest, modules=MODULES)
    try:
        # Whatever the short route queued expired while the hub was down (or during the restart).
        wait_for(lambda: time.time() - crashed_at > STALE_TTL + 0.5, 10, "the stale route's time-to-live")
        receivers = {m: Receiver(hub, m) for m in ("filter", "monitor")}

        def missing() -> dict[str, int]:
            counts = {}
            for (module, input_name), outputs in EXPECTED.items():
                with receivers[module].lock:
                    got = {
                        (o, s) for i, o, s in arrivals[module] + receivers[module].arrivals if i == input_name
                    }
                counts[f"{module}/{input_name}"] = len({a for a in acked if a[0] in outputs} - got)
            return counts

        wait_for(lambda: not any(missing().values()), 60, "every acknowledged message", missing)

        # A sentinel through the short route: anything older still queued there would come before it.
        sensor = hub.client("sensor")
        sensor.publish(
            f"devices/{DEVICE}/modules/sensor/messages/events/%24.on=telemetry", b"telemetry:-1", qos=1
        ).wait_for_publish(10)
        wait_for(lambda: ("stale", "telemetry", -1) in receivers["filter"].arrivals, 10, "the sentinel")
        sensor.loop_stop()
        for module, receiver in receivers.items():
            arrivals[module] += receiver.stop()
    finally:
        hub.stop()

    assert len(acked) >= 1200
    stale_after_restart = [s for i, _, s in receivers["filter"].arrivals if i == "stale" and s != -1]
    assert not stale_after_restart, f"expired messages delivered: {stale_after_restart[:10]}"
    for (module, input_name), outputs in EXPECTED.items():
        seen = [(o, s) for i, o, s in arrivals[module] if i == input_name and s >= 0]
        first_seen = [s for _, s in dict.fromkeys(seen)]
        missing = {a for a in acked if a[0] in outputs} - set(seen)
        assert not missing, f"{module}/{input_name}: {len(missing)} acknowledged messages lost"
        assert first_seen == sorted(first_seen), f"{module}/{input_name}: out of order"
