"""Delivery from endpoint queues: in order, one message in flight, retried until its time-to-live.

A module input endpoint delivers while the module is connected and subscribed for module messages
(``devices/{d}/modules/{m}/#`` or ``…/inputs/#``): the message goes out on
``devices/{d}/modules/{m}/inputs/{input}/{bag}`` with edgeHub's outbound property bag, at QoS 1 capped
by the subscription, and leaves the queue only on the module's PUBACK. Like edgeHub, there is one
module message in flight per client across its inputs, a PUBACK not received within 30 s means a
retry, and a subscription that registers module messages but does not match the input's topic makes
the message undeliverable: it is dropped. Without a connection or subscription, messages wait (until
their time-to-live); delivery resumes as soon as the module connects and subscribes. ``$upstream``
delivers to the configured upstream sink the same way, and so does the bridge queue to its sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from .iothub import module_input_topic
from .metrics import Reservoir
from .mqtt.session import NotConnected
from .protocol_head import ProtocolHead
from .routing import BridgeEndpoint, Message, ModuleEndpoint, UpstreamEndpoint
from .store import Entry, MemoryStore
from .tasks import spawn

log = logging.getLogger("edgehub_emu.delivery")

ACK_TIMEOUT = 30.0
DEFAULT_WINDOW = 16
"""Module deliveries in flight per client. edgeHub keeps one; a module cannot tell the difference (its
MQTT client acknowledges before the handler runs) and order and at-least-once hold either way, so we
pipeline a few for speed. ``--delivery-window 1`` gives edgeHub's exact pacing."""
RECHECK = 5.0  # how often a waiting loop looks again (time-to-live, missed wake-ups)


class Backoff:
    """1 s, 2 s, 4 s … up to 60 s, reset on success (edgeHub's endpoint retry)."""

    def __init__(self, first: float = 1.0, limit: float = 60.0) -> None:
        self.first, self.limit, self.attempt = first, limit, 0

    def next(self) -> float:
        delay = min(self.first * 2**self.attempt, self.limit)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class Deliveries:
    """One delivery task per endpoint that has had something queued."""

    def __init__(
        self,
        head: ProtocolHead,
        store: MemoryStore,
        upstream: Callable[[Message], Awaitable[None]],
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.window = window
        self.head = head
        self.store = store
        self.upstream = upstream
        self.sinks: dict[str, Callable[[Message], Awaitable[None]]] = {}  # other endpoints, by id
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._windows: dict[str, asyncio.Semaphore] = {}
        self.counters: Counter[str] = Counter()
        self._stopping = False
        self.sent: Counter[str] = Counter()
        self.backoff_first = 1.0
        self.latency = Reservoir()

    def ensure(self, endpoint: ModuleEndpoint | UpstreamEndpoint | BridgeEndpoint) -> None:
        if self._stopping:
            return
        task = self._tasks.get(endpoint.id)
        if task is None or task.done():
            runner = (
                self._module(endpoint) if isinstance(endpoint, ModuleEndpoint) else self._upstream(endpoint)
            )
            self._tasks[endpoint.id] = spawn(runner, f"delivery to {endpoint}")

    def retain(self, endpoint_ids: set[str]) -> None:
        """Stop delivering to endpoints no route names any more (their messages stay queued)."""
        for endpoint_id in [e for e in self._tasks if e not in endpoint_ids]:
            self._tasks.pop(endpoint_id).cancel()

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _module(self, endpoint: ModuleEndpoint) -> None:
        identity = endpoint.identity
        window = self._windows.setdefault(identity, asyncio.Semaphore(self.window))
        inflight: deque[tuple[Entry, asyncio.Future[None]]] = deque()
        sent: set[int] = set()

        def settle() -> bool:
            """Checkpoint acknowledged deliveries, in order; False if one failed (resend the rest)."""
            while inflight and inflight[0][1].done():
                entry, future = inflight.popleft()
                if future.cancelled() or future.exception() is not None:
                    inflight.clear()
                    sent.clear()
                    return False
                sent.discard(entry.sequence)
                self.latency.observe(time.time() - entry.message.enqueued_time)
                self.store.remove(entry)
                self.counters["delivered"] += 1
                self.sent[endpoint.id] += 1
            return True

        while not self._stopping:
            settle()
            state = self.head.module_subscribed(identity)
            entry = self.store.next_unsent(endpoint.id, sent) if state is not None else None
            if entry is not None and state is not None and not window.locked():
                message = entry.message
                topic = module_input_topic(
                    endpoint.device_id,
                    endpoint.module_id,
                    endpoint.input_name,
                    message.properties,
                    message.system_properties,
                )
                qos = state.session.granted_qos(topic)
                if qos is None:
                    self.store.remove(entry)
                    self.counters["rejected"] += 1
                    log.warning(
                        "dropped a message for %s: its subscriptions do not match %s (edgeHub drops it too)",
                        identity,
                        topic,
                    )
                    continue
                try:
                    future = state.session.publish(topic, message.body, min(qos, 1))
                except NotConnected:
                    continue
                if future is None:  # QoS 0: delivered once written
                    self.store.remove(entry)
                    self.counters["delivered"] += 1
                    self.sent[endpoint.id] += 1
                    continue
                await window.acquire()
                future.add_done_callback(lambda _f: window.release())
                # Checkpoint as soon as the PUBACK arrives (in order), not when this loop next runs.
                future.add_done_callback(lambda _f: settle())
                inflight.append((entry, future))
                sent.add(entry.sequence)
                continue
            if inflight:
                # Wait for the oldest delivery's PUBACK (or for room to send more).
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that races with the PUBACK, and stop() would hang.
                    async with asyncio.timeout(ACK_TIMEOUT):
                        await _first_done(
                            inflight[0][1],
                            self.store.wait(endpoint.id, RECHECK)
                            if entry is None and state is not None and not window.locked()
                            else None,
                        )
                except TimeoutError:
                    self.counters["ack_timeout"] += 1
                    log.info("no PUBACK from %s within %g s: will deliver again", identity, ACK_TIMEOUT)
                    inflight.clear()
                    sent.clear()
                continue
            if state is None:
                log.debug("%s is not connected and subscribed for module messages: waiting", identity)
                await self.head.wait_for_change(identity, RECHECK)
            elif entry is not None:
                # Another input of this module holds the client's window: wait for a free slot.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECHECK):
                        await window.acquire()
                        window.release()
            else:
                await self.store.wait(endpoint.id, RECHECK)

    async def _upstream(self, endpoint: UpstreamEndpoint | BridgeEndpoint) -> None:
        backoff = Backoff(self.backoff_first)
        sink = self.sinks.get(endpoint.id, self.upstream)
        while not self._stopping:
            entry = self.store.head(endpoint.id)
            if entry is None:
                await self.store.wait(endpoint.id, RECHECK)
                continue
            try:
                await sink(entry.message)
            except Exception as exc:
                delay = backoff.next()
                log.warning("%s refused a message (%s); retrying in %g s", endpoint, exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self.store.remove(entry)
            self.counters["upstream"] += 1
            self.sent[endpoint.id] += 1


async def _first_done(future: asyncio.Future[None], other: Awaitable[None] | None) -> None:
    """Until ``future`` is done, or ``other`` (when given) finishes first."""
    if other is None:
        await asyncio.shield(future)
        return
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({future, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
