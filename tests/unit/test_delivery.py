"""Delivery without sockets: the delivery window (sans-IO) and a module's delivery driven by callbacks
from a proxy the test plays."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edgehub_emu.core import ConnectionManager, SendOutcome
from edgehub_emu.delivery import Deliveries, DeliveryWindow, ModuleDelivery
from edgehub_emu.delivery.stats import DeliveryStats
from edgehub_emu.identity import IdentityRegistry
from edgehub_emu.iothub import MODULE_MESSAGES
from edgehub_emu.routing import Message, ModuleEndpoint, RoutedEndpoint
from edgehub_emu.store import MemoryStore

# --- the window ------------------------------------------------------------------------------------


def test_the_window_holds_at_most_its_capacity() -> None:
    window: DeliveryWindow[str] = DeliveryWindow(2, timeout=30)
    window.sent("a", now=0)
    window.sent("b", now=1)
    assert window.free == 0
    with pytest.raises(RuntimeError):
        window.sent("c", now=2)
    assert window.acked("a") and window.free == 1


def test_acknowledgements_may_come_in_any_order_and_stray_ones_are_ignored() -> None:
    window: DeliveryWindow[str] = DeliveryWindow(3, timeout=30)
    for token in "abc":
        window.sent(token, now=0)
    assert window.acked("b")
    assert not window.acked("b")
    assert not window.acked("zzz")
    assert window.clear() == ["a", "c"]  # what is left, in the order it was sent
    assert len(window) == 0


def test_the_oldest_delivery_in_flight_times_out() -> None:
    window: DeliveryWindow[str] = DeliveryWindow(2, timeout=30)
    assert window.deadline() is None and not window.overdue(1000)
    window.sent("a", now=10)
    window.sent("b", now=20)
    assert window.deadline() == 40
    assert not window.overdue(39) and window.overdue(40)
    window.acked("a")
    assert window.deadline() == 50


def test_a_window_of_one_is_edgehubs_pacing() -> None:
    window: DeliveryWindow[str] = DeliveryWindow(1, timeout=30)
    window.sent("a", now=0)
    assert window.free == 0
    with pytest.raises(ValueError):
        DeliveryWindow(0, timeout=30)


def test_after_a_lost_connection_everything_unacknowledged_goes_back_in_sending_order() -> None:
    window: DeliveryWindow[int] = DeliveryWindow(16, timeout=30)
    for i in range(16):
        window.sent(i, now=i)
    assert window.acked(3)
    assert window.clear() == [i for i in range(16) if i != 3]  # the reconnect defect: these come again


# --- a module's delivery ------------------------------------------------------------------------------


class Module:
    """The module's side of its proxy: deliveries arrive here, the test acknowledges or drops them."""

    def __init__(self, grants: bool = True) -> None:
        self.transport = "test"
        self.grants = grants
        self.connected = True
        self.inbox: list[tuple[str, bytes, Any, Any]] = []
        self.abandoned: list[Any] = []

    def send_to_input(self, input_name, message, token, settle) -> SendOutcome:
        if not self.connected:
            return SendOutcome.UNAVAILABLE
        if not self.grants:
            return SendOutcome.REJECTED
        self.inbox.append((input_name, message.body, token, settle))
        return SendOutcome.SENT

    async def ack_all(self) -> None:
        """Acknowledge everything received, as one read of PUBACKs; the window refills after them."""
        inbox, self.inbox = self.inbox, []
        for *_, token, settle in inbox:
            settle(token, True)
        await asyncio.sleep(0)

    def lose_connection(self) -> None:
        self.connected = False
        inbox, self.inbox = self.inbox, []
        for *_, token, settle in inbox:
            settle(token, False)

    def abandon(self, tokens) -> None:
        """As a proxy must: forget them, so that a late acknowledgement settles nothing."""
        self.abandoned.extend(tokens)
        self.inbox = [d for d in self.inbox if d[2] not in tokens]

    def push_desired(self, version, patch) -> None: ...

    def send_method_request(self, name, request_id, payload) -> bool:
        return False

    def send_c2d(self, message) -> bool:
        return False

    def close(self, reason) -> None: ...

    def subscriptions(self) -> list[str]:
        return []


IDENTITY = IdentityRegistry("edge", ["filter"]).get("edge/filter")
IN1 = ModuleEndpoint("edge", "filter", "in1")
IN2 = ModuleEndpoint("edge", "filter", "in2")


def queue(store: MemoryStore, endpoint: ModuleEndpoint, *bodies: str, priority: int = 0) -> None:
    for body in bodies:
        store.add(Message(body=body.encode()), [RoutedEndpoint(endpoint, priority, 60, "r")], lambda e: None)


def wired(window: int = 4) -> tuple[MemoryStore, ConnectionManager, Deliveries]:
    store, connections = MemoryStore(), ConnectionManager()
    deliveries = Deliveries(store, connections, window)
    deliveries.ensure(IN1)
    deliveries.ensure(IN2)
    return store, connections, deliveries


def bodies(module: Module) -> list[str]:
    return [body.decode() for _, body, *_ in module.inbox]


async def test_messages_wait_until_the_module_listens_then_flow_within_the_window() -> None:
    store, connections, _ = wired(window=4)
    queue(store, IN1, *[f"m{i}" for i in range(6)])
    module = Module()
    connections.connect(IDENTITY, module, 10**10)  # connected, not subscribed for module messages
    assert module.inbox == []
    connections.set_features("edge/filter", module, [MODULE_MESSAGES])
    assert bodies(module) == ["m0", "m1", "m2", "m3"]
    await module.ack_all()
    assert bodies(module) == ["m4", "m5"]
    await module.ack_all()
    assert store.depth(IN1.id) == {}


async def test_inputs_take_turns_in_one_window_per_module() -> None:
    store, connections, _ = wired(window=2)
    queue(store, IN1, "a0", "a1", "a2")
    queue(store, IN2, "b0", "b1")
    module = Module()
    connections.connect(IDENTITY, module, 10**10, [MODULE_MESSAGES])
    assert bodies(module) == ["a0", "b0"]
    await module.ack_all()
    assert bodies(module) == ["a1", "b1"]


async def test_a_reload_keeps_the_named_inputs_taking_turns_and_stops_the_dropped_ones() -> None:
    in3 = ModuleEndpoint("edge", "filter", "in3")
    store, connections, deliveries = wired(window=3)
    deliveries.ensure(in3)
    queue(store, IN1, "a0", "a1")
    queue(store, IN2, "b0", "b1")
    queue(store, in3, "c0", "c1")
    deliveries.follow([in3, IN1])  # a reload whose routes no longer name in2
    module = Module()
    connections.connect(IDENTITY, module, 10**10, [MODULE_MESSAGES])
    assert bodies(module) == ["a0", "c0", "a1"]  # in1 and in3 in the order they were added
    await module.ack_all()
    assert bodies(module) == ["c1"]
    await module.ack_all()
    assert store.depth(IN2.id) == {0: 2}  # in2's messages wait: no route names it
    deliveries.follow([IN2])  # named again: they go out, once each
    assert bodies(module) == ["b0", "b1"]


async def test_what_a_lost_connection_held_comes_again_in_order_on_the_next() -> None:
    store, connections, _ = wired(window=4)
    queue(store, IN1, *[f"m{i}" for i in range(6)])
    first = Module()
    connections.connect(IDENTITY, first, 10**10, [MODULE_MESSAGES])
    assert bodies(first) == ["m0", "m1", "m2", "m3"]
    first.lose_connection()
    connections.disconnect("edge/filter", first)
    second = Module()
    connections.connect(IDENTITY, second, 10**10, [MODULE_MESSAGES])
    assert bodies(second) == ["m0", "m1", "m2", "m3"]  # at once, without anything new routed
    await second.ack_all()
    await second.ack_all()
    assert store.depth(IN1.id) == {}


async def test_a_new_connection_takes_over_deliveries_the_old_one_never_settled() -> None:
    store, connections, _ = wired(window=2)
    queue(store, IN1, "m0", "m1", "m2")
    first = Module()
    connections.connect(IDENTITY, first, 10**10, [MODULE_MESSAGES])
    second = Module()
    connections.connect(IDENTITY, second, 10**10, [MODULE_MESSAGES])  # the first says nothing
    assert [t.message.body for t in first.abandoned] == [b"m0", b"m1"]
    assert first.inbox == []  # forgotten there: an acknowledgement coming late settles nothing
    assert bodies(second) == ["m0", "m1"]
    await second.ack_all()
    assert bodies(second) == ["m2"]


async def test_a_subscription_that_does_not_match_the_input_drops_the_message() -> None:
    store, connections, deliveries = wired()
    queue(store, IN1, "m0", "m1")
    connections.connect(IDENTITY, Module(grants=False), 10**10, [MODULE_MESSAGES])
    assert store.depth(IN1.id) == {}
    assert deliveries.stats.rejected == 2


async def test_no_acknowledgement_in_time_means_delivering_again() -> None:
    store, connections = MemoryStore(), ConnectionManager()
    now = [0.0]
    delivery = ModuleDelivery(
        "edge/filter", store, connections, 2, DeliveryStats(), clock=lambda: now[0], ack_timeout=0.05
    )
    delivery.add_input(IN1)
    store.ready = lambda endpoint_id: delivery.pump()
    connections.observe(lambda identity_id: delivery.pump())
    queue(store, IN1, "m0", "m1")
    module = Module()
    connections.connect(IDENTITY, module, 10**10, [MODULE_MESSAGES])
    assert bodies(module) == ["m0", "m1"]
    module.inbox.clear()  # never acknowledged
    now[0] = 1.0
    await asyncio.sleep(0.1)
    assert [t.message.body for t in module.abandoned] == [b"m0", b"m1"]
    assert bodies(module) == ["m0", "m1"]
    delivery.stop()
