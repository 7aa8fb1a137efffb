"""Messages into the hub: a client's telemetry or output, routed and queued for every endpoint.

As edgeHub's ``RoutingEdgeHub``: each message gets an ``edgeMessageId`` (a new GUID) and
``edgeHubOriginInterface`` (``internal`` from this edge device, ``downstream`` from a leaf device); one
larger than 256 KB (properties and body, edgeHub's measure) is dropped; one no route takes is dropped
(``no_route``). Otherwise it is queued, one copy per endpoint, and the sender is acknowledged once the
store has committed it. Heads call ``telemetry``; the hub's API calls ``enqueue`` to put a message
straight into a module input's queue.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import Counter
from typing import Final

from ..identity import Identity
from ..metrics import Reservoir
from ..routing import Endpoint, Message, RoutedEndpoint, RouteTable
from ..routing.message import (
    CONNECTION_DEVICE_ID,
    CONNECTION_MODULE_ID,
    EDGE_HUB_ORIGIN_INTERFACE,
    EDGE_MESSAGE_ID,
)
from ..store import Store, Stored
from .trace import BODY_KEPT, MessageTrace

log = logging.getLogger("edgehub_emu.hub")

MAX_MESSAGE_SIZE: Final = 262_144


class MessageRefused(ValueError):
    """A message refused as edgeHub refuses it (``status``: the HTTP status an API answers)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Guids:
    """Version-4 GUIDs in ``uuid.uuid4()``'s form, as edgeHub's ``edgeMessageId``s: the first 20 hex digits
    random per process, the last 12 a counter that starts at a random value. Unique, and a tenth of
    the cost of ``str(uuid.uuid4())`` (which is a visible part of a message's CPU here)."""

    def __init__(self) -> None:
        head = uuid.uuid4().hex
        self.prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-{head[16:20]}-"
        self.counter = random.getrandbits(47)

    def next(self) -> str:
        self.counter = (self.counter + 1) & 0xFFFFFFFFFFFF
        return f"{self.prefix}{self.counter:012x}"


new_guid = _Guids().next


def log_store_failure(error: BaseException | None) -> None:
    """For messages nobody acknowledges (wills, twin-change notifications, QoS 0)."""
    if error is not None:
        log.warning("a message was not stored: %s", error)


def message_size(message: Message) -> int:
    """edgeHub's measure: every property's name and value, plus the body (in characters and bytes)."""
    size = len(message.body)
    for properties in (message.properties, message.system_properties):
        for key, value in properties.items():
            size += len(key) + (len(value) if value else 0)
    return size


class Ingest:
    def __init__(
        self,
        device_id: str,
        routes: RouteTable,
        store: Store,
        counters: Counter[str],
        trace: MessageTrace | None = None,
    ) -> None:
        self.device_id = device_id
        self.trace = trace  # what became of each message, unless tracing is off
        self._routes = routes
        self._record = None if trace is None else trace.record
        if trace is not None:
            trace.routing_with(routes)
        self.store = store
        self.counters = counters
        self.sizes = Reservoir()

    @property
    def routes(self) -> RouteTable:
        return self._routes

    @routes.setter
    def routes(self, table: RouteTable) -> None:
        """Replaced whole when the deployment changes."""
        self._routes = table
        if self.trace is not None:
            self.trace.routing_with(table)

    def set_trace(self, trace: MessageTrace | None) -> None:
        self.trace = trace
        self._record = None if trace is None else trace.record
        if trace is not None:
            trace.routing_with(self._routes)

    def telemetry(self, identity: Identity, message: Message, stored: Stored) -> bool:
        """A client's message, from the identity it authenticated as. True: done (queued in memory, or
        dropped as edgeHub drops it); False: ``stored`` says when it is committed."""
        system = message.system_properties
        device_id = identity.device_id
        system[CONNECTION_DEVICE_ID] = device_id
        if identity.module_id is not None:
            system[CONNECTION_MODULE_ID] = identity.module_id
        system[EDGE_MESSAGE_ID] = new_guid()
        system[EDGE_HUB_ORIGIN_INTERFACE] = "internal" if device_id == self.device_id else "downstream"
        size = message_size(message)
        if size > MAX_MESSAGE_SIZE:
            self.counters["dropped_too_large"] += 1
            log.warning(
                "dropped a message of %d bytes from %s (edgeHub's limit is %d)",
                size,
                identity.id,
                MAX_MESSAGE_SIZE,
            )
            return True
        sizes = self.sizes  # Reservoir.observe, inlined: one per message
        sizes.values.append(size)
        sizes.count += 1
        sizes.sum += size
        self.counters["messages_received"] += 1

        copies = self._routes.route(message)
        record = self._record
        if record is not None:
            record(message if size <= BODY_KEPT else MessageTrace.kept(message))
        if copies:
            return self.store.add(message, copies, stored)
        self.counters["dropped_no_route"] += 1
        return True

    def route(self, message: Message, stored: Stored) -> bool:
        """Route and queue a message (see ``telemetry`` for what the result means)."""
        self.counters["messages_received"] += 1
        copies = self._routes.route(message)
        if self._record is not None:
            self._record(MessageTrace.kept(message))
        if not copies:
            self.counters["dropped_no_route"] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("no route for a message from %s", message.source)
            return True
        return self.store.add(message, copies, stored)

    def enqueue(
        self, endpoint: Endpoint, message: Message, time_to_live_secs: int, stored: Stored, route: str = "api"
    ) -> bool:
        """Put a message straight into an endpoint's queue, as a route would (priority 0). It gets an
        ``edgeMessageId`` as every message the hub accepts does, so that it can be traced."""
        message.system_properties.setdefault(EDGE_MESSAGE_ID, new_guid())
        copies = [RoutedEndpoint(endpoint, 0, time_to_live_secs, route)]
        if self.trace is not None:
            self.trace.queued(route, message, copies)
        return self.store.add(message, copies, stored)
