"""Endpoint processors: what takes queued messages to their endpoints. Module inputs are reached through
the module's device proxy (``ModuleDelivery``, one per module, across its inputs); ``$upstream`` and
the bridge queue through the sinks registered for them (``SinkDelivery``). ``Deliveries`` keeps one
processor per endpoint the routes name, and is told when the store has new entries and when a module
connects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from ..core import ConnectionManager, MessageTrace
from ..routing import BRIDGE_ID, BridgeEndpoint, Endpoint, ModuleEndpoint, endpoint_from_id
from ..store import Store
from .modules import ACK_TIMEOUT, ModuleDelivery
from .sinks import Sink, SinkDelivery
from .stats import DeliveryStats
from .window import DeliveryWindow

__all__ = [
    "ACK_TIMEOUT",
    "DEFAULT_WINDOW",
    "Deliveries",
    "DeliveryStats",
    "DeliveryWindow",
    "ModuleDelivery",
    "Sink",
    "SinkDelivery",
]

log = logging.getLogger("edgehub_emu.delivery")

DEFAULT_WINDOW = 64
"""Module deliveries in flight per client. edgeHub keeps one; a module cannot tell the difference (its
MQTT client acknowledges before the handler runs) and order and at-least-once hold either way, so we
pipeline for speed. ``--delivery-window 1`` gives edgeHub's exact pacing."""


class Deliveries:
    def __init__(
        self,
        store: Store,
        connections: ConnectionManager,
        window: int = DEFAULT_WINDOW,
        first_backoff: float = 1.0,
        trace: MessageTrace | None = None,
    ) -> None:
        self.store = store
        self.connections = connections
        self.window = window
        self.stats = DeliveryStats(trace)
        self.sinks: dict[str, Sink] = {}
        self.first_backoff = first_backoff
        self._modules: dict[str, ModuleDelivery] = {}  # by identity
        self._by_endpoint: dict[str, ModuleDelivery | SinkDelivery] = {}
        self._stopped = False
        store.ready = self.wake
        connections.observe(self.identity_changed)
        connections.observe_ready(self.identity_changed)

    def set_trace(self, trace: MessageTrace | None) -> None:
        """Note delivery events in ``trace`` from now on (None: stop)."""
        self.stats.trace = trace

    def ensure(self, endpoint: Endpoint | str) -> None:
        """Deliver to ``endpoint`` (named by a route, or a message was put into its queue)."""
        processor = self._register(endpoint)
        if processor is not None:
            processor.pump()

    def _register(self, endpoint: Endpoint | str) -> ModuleDelivery | SinkDelivery | None:
        """The processor that delivers to ``endpoint``, made the first time (None: nothing can)."""
        if self._stopped:
            return None
        endpoint_id = endpoint if isinstance(endpoint, str) else endpoint.id
        processor = self._by_endpoint.get(endpoint_id)
        if processor is None:
            resolved = endpoint_from_id(endpoint_id) if isinstance(endpoint, str) else endpoint
            processor = self._processor(resolved)
            if processor is not None:
                self._by_endpoint[endpoint_id] = processor
        return processor

    def _processor(self, endpoint: Endpoint) -> ModuleDelivery | SinkDelivery | None:
        if isinstance(endpoint, ModuleEndpoint):
            module = self._modules.get(endpoint.identity)
            if module is None:
                module = self._modules[endpoint.identity] = ModuleDelivery(
                    endpoint.identity, self.store, self.connections, self.window, self.stats
                )
            module.add_input(endpoint)
            return module
        sink = self.sinks.get(endpoint.id)
        if sink is None:
            log.warning("messages for %s wait: nothing delivers to it", endpoint.id)
            return None
        return SinkDelivery(endpoint.id, sink, self.store, self.stats, self.first_backoff)

    def wake(self, endpoint_id: str) -> None:
        """The store committed new entries for ``endpoint_id``."""
        processor = self._by_endpoint.get(endpoint_id)
        if processor is not None:
            processor.pump()

    def identity_changed(self, identity_id: str) -> None:
        """A client connected, disconnected or changed its subscriptions."""
        module = self._modules.get(identity_id)
        if module is not None:
            module.pump()

    def follow(self, endpoints: Iterable[Endpoint]) -> None:
        """Deliver to these endpoints (the routes' after a start or reload; the bridge queue when a sink
        takes it), not to others: a queue no route names any more keeps its messages until their
        time-to-live, and the log says so."""
        wanted = {e.id: e for e in endpoints}
        if BRIDGE_ID in self.sinks:
            wanted[BRIDGE_ID] = BridgeEndpoint()
        self.retain(wanted)
        # Every endpoint first, then one look per processor: a module with many inputs would otherwise
        # look through all of them once per input (a reload runs on the event loop).
        for processor in dict.fromkeys(map(self._register, wanted.values())):
            if processor is not None:
                processor.pump()
        for endpoint_id in self.store.endpoints():
            if endpoint_id not in wanted:
                depth = sum(self.store.depth(endpoint_id).values())
                log.warning(
                    "%d messages wait for endpoint %s, which no route names any more: they stay until "
                    "their time-to-live runs out",
                    depth,
                    endpoint_id,
                )

    def retain(self, endpoint_ids: Iterable[str]) -> None:
        """Stop delivering to endpoints no route names any more (their messages stay queued)."""
        keep = set(endpoint_ids)
        inputs_gone: dict[ModuleDelivery, list[str]] = {}
        for endpoint_id in [e for e in self._by_endpoint if e not in keep]:
            processor = self._by_endpoint.pop(endpoint_id)
            if isinstance(processor, ModuleDelivery):
                inputs_gone.setdefault(processor, []).append(endpoint_id)
            else:
                processor.stop()
        for module, gone in inputs_gone.items():
            module.remove_inputs(gone)

    async def stop(self) -> None:
        self._stopped = True
        sinks = [p for p in self._by_endpoint.values() if isinstance(p, SinkDelivery)]
        for sink in sinks:
            sink.stop()
        await asyncio.gather(*(sink.stopped() for sink in sinks))
        for module in self._modules.values():
            module.stop()
        self._by_endpoint.clear()
