"""At-least-once through a crash: every PUBACKed message survives `kill -9` of the hub process."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from .conftest import DEVICE, HubSubprocess

pytestmark = pytest.mark.timeout(120)


def test_every_acknowledged_message_survives_kill_9_in_order(tmp_path: Path):
    hub = HubSubprocess(tmp_path)
    acked: list[int] = []
    sent: dict[int, int] = {}
    lock = threading.Lock()

    def on_publish(_c, _u, mid, _rc, _p) -> None:
        with lock:
            if mid in sent:
                acked.append(sent[mid])

    publisher = hub.client("SimulatedTemperatureSensor")
    publisher.on_publish = on_publish
    stop = threading.Event()

    def publish_forever() -> None:
        i = 0
        while not stop.is_set() and i < 100_000:
            info = publisher.publish(
                f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput",
                str(i).encode(),
                qos=1,
            )
            with lock:
                sent[info.mid] = i
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)

    thread = threading.Thread(target=publish_forever, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while len(acked) < 300 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.3))  # a random moment in the middle of the stream
    hub.kill()
    stop.set()
    thread.join(5)
    publisher.loop_stop()
    with lock:
        acknowledged = sorted(set(acked))
    assert len(acknowledged) >= 300

    restarted = HubSubprocess(tmp_path)
    received: list[int] = []

    def on_message(_c, _u, message) -> None:
        received.append(int(message.payload))

    receiver = restarted.client("filtermodule", on_message)
    receiver.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/#", 1)
    deadline = time.time() + 60
    while set(acknowledged) - set(received) and time.time() < deadline:
        time.sleep(0.05)

    receiver.disconnect()
    receiver.loop_stop()
    restarted.stop()

    missing = set(acknowledged) - set(received)
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:10]}"
    first_seen = list(dict.fromkeys(received))
    assert first_seen == sorted(first_seen), "messages of one priority must arrive in publish order"
    duplicates = len(received) - len(first_seen)
    print(f"acknowledged {len(acknowledged)}, delivered {len(first_seen)} (+{duplicates} duplicates)")
