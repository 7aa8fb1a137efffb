"""The message trace's delivery events: kept oldest first per message, the oldest forgotten when the
ring is full, whatever order the deliveries of different messages come in."""

from __future__ import annotations

import time

from edgehub_emu.core import DELIVERED, RETRIED, MessageTrace
from edgehub_emu.routing import Message, RouteTable, compile_route
from edgehub_emu.store import MemoryStore

INPUT = "edge/filter/in"


def sent(table: RouteTable, store: MemoryStore, trace: MessageTrace, message_id: str) -> Message:
    """A sensor's message, routed, queued and recorded as the hub does."""
    message = Message(
        b"{}",
        {},
        {
            "connectionDeviceId": "edge",
            "connectionModuleId": "sensor",
            "outputName": "out",
            "edgeMessageId": message_id,
        },
    )
    store.add(message, table.route(message), lambda error: None)
    trace.record(message)
    return message


def events(trace: MessageTrace, message_id: str) -> list[str]:
    found = trace.find(message_id)
    assert found is not None
    (copy,) = found["queued"]
    assert {e["endpoint"] for e in copy["events"]} <= {INPUT}
    return [e["event"] for e in copy["events"]]


def test_each_message_shows_its_own_events_oldest_first_until_the_ring_lets_them_go():
    route = 'FROM /messages/modules/sensor/outputs/* INTO BrokeredEndpoint("/modules/filter/inputs/in")'
    table = RouteTable([compile_route("r", route, device_id="edge")])
    store = MemoryStore()
    trace = MessageTrace(size=2)  # two messages, four delivery events
    trace.routing_with(table)
    first, second = sent(table, store, trace, "m1"), sent(table, store, trace, "m2")
    trace.delivered(time.time(), first, INPUT)
    entry = store.take(INPUT)
    assert entry is not None
    entry = store.take(INPUT)  # the second message's copy
    assert entry is not None and entry.message is second
    trace.note(RETRIED, entry)
    trace.delivered(time.time(), second, INPUT)
    assert events(trace, "m1") == [DELIVERED]
    assert events(trace, "m2") == [RETRIED, DELIVERED]
    assert trace.find("m1")["queued"][0]["state"] == "delivered"  # type: ignore[index]

    third = sent(table, store, trace, "m3")  # the ring of messages lets m1 go
    assert trace.find("m1") is None
    retried = store.take(INPUT)
    assert retried is not None and retried.message is third
    trace.note(RETRIED, retried)
    trace.note(RETRIED, retried)
    assert events(trace, "m2") == [RETRIED, DELIVERED]  # five events in four slots: m1's went
    assert events(trace, "m3") == [RETRIED, RETRIED]
    assert trace.find("m3")["queued"][0]["state"] == "waiting"  # type: ignore[index]
    trace.delivered(time.time(), third, INPUT)
    assert events(trace, "m3") == [RETRIED, RETRIED, DELIVERED]  # in order across the ring's end
    assert events(trace, "m2") == [DELIVERED]  # its retry was the oldest event left
