"""Delivery to a sink: ``$upstream`` (the local capture, a parent edge hub or IoT hub, an MQTT broker)
and the bridge queue of ``mqttBroker.bridges``. One message at a time, in order; a message leaves the
queue once the sink took it; a sink that refuses is retried with edgeHub's back-off (1 s … 60 s)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..backoff import Backoff
from ..core import RETRIED
from ..routing import Message
from ..store import Store
from ..tasks import spawn
from .stats import DeliveryStats

log = logging.getLogger("edgehub_emu.delivery")

Sink = Callable[[Message], Awaitable[None]]


class SinkDelivery:
    def __init__(
        self, endpoint_id: str, sink: Sink, store: Store, stats: DeliveryStats, first_backoff: float = 1.0
    ) -> None:
        self.endpoint_id = endpoint_id
        self.sink = sink
        self.store = store
        self.stats = stats
        self.backoff = Backoff(first_backoff)
        self._wake = asyncio.Event()
        self._task = spawn(self._run(), f"delivery to {endpoint_id}")

    def pump(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            entry = self.store.take(self.endpoint_id)
            if entry is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self.sink(entry.message)
            except asyncio.CancelledError:
                self.store.release([entry])
                raise
            except Exception as exc:
                self.store.release([entry])
                self.stats.sink_failures += 1
                if self.stats.trace is not None:
                    self.stats.trace.note(RETRIED, entry)
                delay = self.backoff.next()
                log.warning("%s refused a message (%s); retrying in %g s", self.endpoint_id, exc, delay)
                await asyncio.sleep(delay)
                continue
            self.backoff.reset()
            self.store.ack(entry)
            self.stats.delivered(entry)

    def stop(self) -> None:
        self._task.cancel()

    async def stopped(self) -> None:
        await asyncio.gather(self._task, return_exceptions=True)
