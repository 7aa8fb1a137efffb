"""A cheap AMQP 1.0 load generator: proton's engine over asyncio TLS, one message encoded once.

For each sensor/filter pair it opens two connections with SASL PLAIN (one identity each): the sensor
sends on its events link (unsettled; at most ``window`` awaiting the hub's outcome, at most ``backlog``
sent and not yet received), the filter grants credit on its module-messages link and accepts every
input. Counts, time and this process's CPU come back as a ``LoadResult``, as from ``loadgen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import ssl
import time
from dataclasses import dataclass

from proton import Collector, Connection, Delivery, Event, Link, Message, Transport

from .loadgen import LoadResult, _run_loop

CREDIT = 500


@dataclass(frozen=True)
class AmqpTarget:
    host: str
    port: int
    ca_file: str
    iothub: str  # the IoT hub's first label, for SASL PLAIN user names
    device: str
    sensor: tuple[str, str]  # module, SAS token
    filter: tuple[str, str]


class _Engine(asyncio.Protocol):
    """One AMQP connection for one identity, driven by proton's engine."""

    def __init__(self, target: AmqpTarget, module: str, token: str) -> None:
        self.engine = Transport(Transport.CLIENT)
        sasl = self.engine.sasl()
        sasl.allowed_mechs("PLAIN")
        sasl.allow_insecure_mechs = True  # asyncio does the TLS, out of proton's sight
        self.connection = Connection()
        self.connection.user = f"{target.device}/modules/{module}@sas.{target.iothub}"
        self.connection.password = token
        self.connection.hostname = target.host
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.engine.bind(self.connection)
        self.session = self.connection.session()
        self.transport: asyncio.Transport | None = None
        self.address = f"/devices/{target.device}/modules/{module}/messages/events"
        self.link: Link | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connection.open()
        self.session.open()
        self.open_link()
        self.pump()

    def open_link(self) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view and (capacity := self.engine.capacity()) > 0:
            self.engine.push(bytes(view[:capacity]))
            view = view[capacity:]
            self.events()
        self.pump()

    def events(self) -> None:
        while (event := self.collector.peek()) is not None:
            self.on_event(event)
            self.collector.pop()

    def on_event(self, event: Event) -> None:
        if event.type == Event.LINK_REMOTE_OPEN and not self.ready.done():
            self.ready.set_result(None)

    def pump(self) -> None:
        self._scheduled = False
        self.events()
        while (pending := self.engine.pending()) > 0 and self.transport is not None:
            self.transport.write(bytes(self.engine.peek(pending)))
            self.engine.pop(pending)

    def later(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.pump)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"the hub closed the connection: {exc}"))


class _Filter(_Engine):
    def __init__(self, target: AmqpTarget, count: int) -> None:
        super().__init__(target, *target.filter)
        self.count = count
        self.received = 0
        self.last = 0.0
        self.sensor: _Sensor | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def open_link(self) -> None:
        self.link = self.session.receiver("inputs")
        self.link.source.address = self.address
        self.link.open()
        self.link.flow(CREDIT)

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        if event.type != Event.DELIVERY:
            return
        delivery = event.delivery
        link = delivery.link
        if delivery.partial or not delivery.readable:
            return
        link.recv(delivery.pending)
        link.advance()
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        if link.credit < CREDIT // 2:
            link.flow(CREDIT - link.credit)
        self.received += 1
        self.last = time.perf_counter()
        if self.received >= self.count and not self.done.done():
            self.done.set_result(None)
        if self.sensor is not None:
            self.sensor.later()


class _Sensor(_Engine):
    def __init__(self, target: AmqpTarget, count: int, window: int, backlog: int) -> None:
        super().__init__(target, *target.sensor)
        message = Message(body=b"x" * 64, inferred=True)
        message.properties = {"iothub-outputname": "out"}
        self.encoded = message.encode()
        self.count, self.window, self.backlog = count, window, backlog
        self.sent = 0
        self.unsettled = 0
        self.filter: _Filter | None = None
        self.started = False

    def open_link(self) -> None:
        self.link = self.session.sender("events")
        self.link.target.address = self.address
        self.link.open()

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        if event.type == Event.DELIVERY:
            delivery = event.delivery
            if delivery.remote_state == Delivery.ACCEPTED or delivery.remote_state == Delivery.REJECTED:
                delivery.settle()
                self.unsettled -= 1

    def pump(self) -> None:
        self.events()
        if self.started:
            self.send_owed()
        super().pump()

    def send_owed(self) -> None:
        link = self.link
        assert link is not None and self.filter is not None
        received = self.filter.received
        while (
            self.sent < self.count
            and self.unsettled < self.window
            and self.sent - received < self.backlog
            and link.credit > 0
        ):
            link.delivery(str(self.sent).encode())
            link.send(self.encoded)
            link.advance()
            self.sent += 1
            self.unsettled += 1


async def _open(target: AmqpTarget, protocol: _Engine) -> _Engine:
    loop = asyncio.get_running_loop()
    tls = ssl.create_default_context(cafile=target.ca_file)
    await loop.create_connection(
        lambda: protocol, target.host, target.port, ssl=tls, server_hostname=target.host
    )
    await asyncio.wait_for(protocol.ready, 10)
    return protocol


async def _run(
    targets: list[AmqpTarget], count: int, window: int, backlog: int, timeout: float
) -> LoadResult:
    filters = [await _open(t, _Filter(t, count)) for t in targets]
    sensors = [await _open(t, _Sensor(t, count, window, backlog)) for t in targets]
    for sensor, receiver in zip(sensors, filters, strict=True):
        sensor.filter, receiver.sensor = receiver, sensor  # type: ignore[attr-defined]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    began = time.perf_counter()
    for sensor in sensors:
        sensor.started = True  # type: ignore[attr-defined]
        sensor.pump()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(f.done for f in filters)), timeout)  # type: ignore[attr-defined]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    received = sum(f.received for f in filters)  # type: ignore[attr-defined]
    ended = max((f.last for f in filters), default=began)  # type: ignore[attr-defined]
    for c in [*sensors, *filters]:
        if c.transport is not None:
            c.transport.close()
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    return LoadResult(received, ended - began, cpu / max(received, 1) * 1e6)


def run_pairs(
    targets: list[AmqpTarget], count: int, window: int = 256, backlog: int = 1000, timeout: float = 120
) -> LoadResult:
    """``count`` messages through each sensor/filter pair over AMQP, all pairs at once."""
    result: LoadResult = _run_loop(_run(targets, count, window, backlog, timeout))
    return result
