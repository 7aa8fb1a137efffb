"""Delivery to a module's inputs, as edgeHub's module endpoints deliver: through the module's device
proxy, while it is connected and subscribed for module messages; in order; an entry leaves its queue
only when the module acknowledged it. Everything is driven by callbacks: the store says an input has
new entries, the connection manager says the module (re)connected, the proxy says a delivery was
acknowledged or its connection is gone; there is no task and no future per message.

- One window per module, across its inputs (edgeHub keeps one message in flight per client; a larger
  window pipelines, in order). Inputs take turns.
- A subscription that turns module messages on but does not match the input's topic makes the message
  undeliverable: it is dropped (``rejected``), as edgeHub drops it.
- A connection that goes away with deliveries in flight gives them back, in order; they go out again
  at once on the module's next connection (or later: at-least-once, duplicates possible).
- No acknowledgement within 30 s: the deliveries in flight go out again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Final

from ..core import REJECTED, RETRIED, ConnectionManager, DeviceProxy, SendOutcome
from ..iothub import MODULE_MESSAGES
from ..routing import ModuleEndpoint
from ..store import Entry, Store
from .stats import DeliveryStats
from .window import DeliveryWindow

log = logging.getLogger("edgehub_emu.delivery")

ACK_TIMEOUT: Final = 30.0


class ModuleDelivery:
    def __init__(
        self,
        identity_id: str,
        store: Store,
        connections: ConnectionManager,
        window: int,
        stats: DeliveryStats,
        clock: Callable[[], float] = time.monotonic,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self.identity_id = identity_id
        self.store = store
        self.connections = connections
        self.stats = stats
        self.clock = clock
        self.window: DeliveryWindow[Entry] = DeliveryWindow(window, ack_timeout)
        self.inputs: dict[str, ModuleEndpoint] = {}
        self._order: list[str] = []  # the inputs, in the order they take turns
        self._turn = 0
        self._proxy: DeviceProxy | None = None
        self._pumping = False
        self._again = False
        self._refill_scheduled = False
        # The last look found every input empty: an acknowledgement then has nothing to refill the
        # window with (new entries wake us through the store), so it schedules no look of its own.
        self._drained = False
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._loop = asyncio.get_running_loop()

    def add_input(self, endpoint: ModuleEndpoint) -> None:
        if endpoint.id not in self.inputs:
            self._order.append(endpoint.id)  # (a copy per input would make a reload quadratic)
        self.inputs[endpoint.id] = endpoint

    def remove_inputs(self, endpoint_ids: Collection[str]) -> None:
        """Stop delivering to these inputs (all at once: one pass over the turns, whatever the number)."""
        for endpoint_id in endpoint_ids:
            self.inputs.pop(endpoint_id, None)
        self._order = [i for i in self._order if i in self.inputs]

    def pump(self) -> None:
        """Send what the window has room for (safe to call any time: a call made while sending, from a
        callback, makes the running one look again)."""
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again and not self._stopped:
                self._again = False
                self._send_some()
        finally:
            self._pumping = False

    def _send_some(self) -> None:
        connection = self.connections.get(self.identity_id, MODULE_MESSAGES)
        if connection is None:
            return
        proxy = connection.proxy
        if proxy is not self._proxy:
            # A new connection: what went out on the old one and was not acknowledged goes out again.
            self._give_back()
            self._proxy = proxy
        window, store, settle, inputs = self.window, self.store, self._settle, self.inputs
        trace = self.stats.trace
        now = self.clock()
        self._drained = False
        while window.free > 0:
            order = self._order
            entry = store.take(order[0]) if len(order) == 1 else self._next()
            if entry is None:
                self._drained = True
                break
            outcome = proxy.send_to_input(inputs[entry.endpoint_id].input_name, entry.message, entry, settle)
            if outcome is SendOutcome.SENT:
                window.sent(entry, now)
            elif outcome is SendOutcome.DELIVERED:
                self._delivered(entry)
            elif outcome is SendOutcome.REJECTED:
                store.ack(entry)
                self.stats.rejected += 1
                if trace is not None:
                    trace.note(REJECTED, entry)
                log.warning(
                    "dropped a message for %s: no subscription matches input %s (edgeHub drops it too)",
                    self.identity_id,
                    inputs[entry.endpoint_id].input_name,
                )
            else:
                store.release([entry])
                break
        if self._timer is None and window.free < window.capacity:
            self._arm()

    def _next(self) -> Entry | None:
        """The next entry, the inputs taking turns."""
        ids = self._order
        for i in range(len(ids)):
            endpoint_id = ids[(self._turn + i) % len(ids)]
            entry = self.store.take(endpoint_id)
            if entry is not None:
                self._turn = (self._turn + i + 1) % len(ids)
                return entry
        return None

    def _settle(self, entry: Entry, delivered: bool) -> None:
        if not self.window.acked(entry):
            return  # already given back (a timeout, a new connection): a late answer changes nothing
        if delivered:
            self.store.ack(entry)
            self.stats.delivered(entry)
            # Refill the window once all the acknowledgements read together are counted, not after each
            # (and not at all when the last look found nothing more to send).
            if not self._refill_scheduled and not self._drained:
                self._refill_scheduled = True
                self._loop.call_soon(self._refill)
            return
        else:
            # The connection is gone: give back this one and everything else in flight, in order.
            self._released([entry, *self.window.clear()])
            self._proxy = None
        if self._pumping:
            self._again = True
        else:
            self.pump()

    def _refill(self) -> None:
        self._refill_scheduled = False
        self.pump()

    def _delivered(self, entry: Entry) -> None:

        self.store.ack(entry)
        self.stats.delivered(entry)

    def _give_back(self) -> None:
        pending = self.window.clear()
        if pending:
            if self._proxy is not None:
                self._proxy.abandon(pending)
            self._released(pending)

    def _released(self, entries: list[Entry]) -> None:
        """Give entries back to the store: they go out again (to be delivered again)."""
        trace = self.stats.trace
        if trace is not None:
            for entry in entries:
                trace.note(RETRIED, entry)
        self.store.release(entries)

    def _arm(self) -> None:
        deadline = self.window.deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, deadline - self.clock()), self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        if self.window.overdue(self.clock()):
            self.stats.ack_timeouts += 1
            log.info(
                "no acknowledgement from %s within %g s: delivering again",
                self.identity_id,
                self.window.timeout,
            )
            self._give_back()
            self.pump()
        if len(self.window) and self._timer is None:
            self._arm()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
