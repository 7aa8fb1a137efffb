"""The hub routes the same with its hot path compiled (what ``make`` builds) and as Python (what runs
while the build is stale, or with EDGEHUB_EMU_PURE_PYTHON=1), and its banner says which it runs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgehub_emu.compiled import PURE_VARIABLE

from .conftest import DEVICE, HubSubprocess

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("pure", "banner"), [("", "compiled (mypyc)"), ("1", f"Python ({PURE_VARIABLE} is set)")]
)
def test_a_routed_message_arrives_either_way(tmp_path: Path, monkeypatch, pure: str, banner: str):
    monkeypatch.setenv(PURE_VARIABLE, pure)
    hub = HubSubprocess(tmp_path)
    try:
        assert any(line.split() == ["hot", "path", *banner.split()] for line in hub.banner), hub.banner
        arrived: list[tuple[str, bytes]] = []
        done = threading.Event()

        def on_message(_c, _u, message) -> None:
            arrived.append((message.topic, message.payload))
            done.set()

        receiver = hub.client("filtermodule", on_message)
        subscribed = threading.Event()
        receiver.on_subscribe = lambda *_: subscribed.set()
        receiver.subscribe(f"devices/{DEVICE}/modules/filtermodule/#", 1)
        assert subscribed.wait(10)
        sender = hub.client("SimulatedTemperatureSensor")
        sender.publish(
            f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput",
            b'{"t": 21.5}',
            qos=1,
        ).wait_for_publish(10)
        assert done.wait(10)
        topic, payload = arrived[0]
        assert topic.startswith(f"devices/{DEVICE}/modules/filtermodule/inputs/input1/")
        assert "%24.cmid=SimulatedTemperatureSensor" in topic and payload == b'{"t": 21.5}'
        for client in (sender, receiver):
            client.disconnect()
            client.loop_stop()
    finally:
        hub.stop()
