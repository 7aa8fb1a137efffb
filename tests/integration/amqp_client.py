"""A small AMQP 1.0 client for tests: proton's engine (client side) over a real TLS socket.

It does what the hub's bad-input tests need and the SDKs never do on purpose: skip CBS, present a
wrong token, attach to another identity's address, grant no credit, send garbage. Every call waits for
the hub's answer with a deadline.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from typing import Any

from proton import Collector, Connection, Delivery, Event, Link, Message, Transport


class AmqpTestClient(asyncio.Protocol):
    def __init__(self, sasl: tuple[str, str] | None = None, anonymous_sasl: bool = False) -> None:
        self.engine = Transport(Transport.CLIENT)
        if sasl is not None or anonymous_sasl:
            layer = self.engine.sasl()
            if sasl is not None:
                layer.allowed_mechs("PLAIN")
                layer.allow_insecure_mechs = True  # TLS is asyncio's: proton cannot see it
            else:
                layer.allowed_mechs("ANONYMOUS")
        self.connection = Connection()
        if sasl is not None:
            self.connection.user, self.connection.password = sasl
        self.connection.container = "test-client"
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.engine.bind(self.connection)
        self.session = self.connection.session()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.received: dict[str, list[Message]] = {}
        self.changed = asyncio.Event()

    @classmethod
    async def connect(cls, host: str, port: int, ca_file: str, **options: Any) -> AmqpTestClient:
        context = ssl.create_default_context(cafile=ca_file)
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: cls(**options), host, port, ssl=context, server_hostname=host
        )
        client.connection.hostname = host
        client.connection.open()
        client.session.open()
        client.pump()
        return client

    # --- the engine -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view and (capacity := self.engine.capacity()) > 0:  # the engine takes what fits, then reads
            self.engine.push(bytes(view[:capacity]))
            view = view[capacity:]
            self.pump()
        self.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        self.changed.set()

    def write_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pump(self) -> None:
        while (event := self.collector.peek()) is not None:
            if event.type == Event.DELIVERY:
                delivery = event.delivery
                link = delivery.link
                if link.is_receiver and delivery.readable and not delivery.partial:
                    message = Message()
                    message.decode(link.recv(delivery.pending))
                    link.advance()
                    self.received.setdefault(link.name, []).append(message)
                    if getattr(link, "auto_accept", True):
                        delivery.update(Delivery.ACCEPTED)
                        delivery.settle()
                    else:
                        message.delivery = delivery
            self.collector.pop()
        while (pending := self.engine.pending()) > 0 and self.transport is not None:
            self.transport.write(bytes(self.engine.peek(pending)))
            self.engine.pop(pending)
        self.changed.set()

    async def until(self, condition: Any, timeout: float = 10, what: str = "the hub") -> Any:
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            self.changed.clear()
            try:
                async with asyncio.timeout(min(remaining, 0.05)):  # also polls the hub's side
                    await self.changed.wait()
            except TimeoutError:
                pass
        return result

    # --- links ----------------------------------------------------------------------------------------

    async def sender(self, address: str) -> Link:
        link = self.session.sender(f"sender-{uuid.uuid4()}")
        link.target.address = address
        link.open()
        self.pump()
        await self.until(
            lambda: link.state & Link.REMOTE_ACTIVE or link.state & Link.REMOTE_CLOSED, what="attach"
        )
        return link

    async def receiver(self, address: str, credit: int = 10, auto_accept: bool = True) -> Link:
        link = self.session.receiver(f"receiver-{uuid.uuid4()}")
        link.source.address = address
        link.auto_accept = auto_accept
        link.open()
        if credit:
            link.flow(credit)
        self.pump()
        await self.until(
            lambda: link.state & Link.REMOTE_ACTIVE or link.state & Link.REMOTE_CLOSED, what="attach"
        )
        return link

    @staticmethod
    def refused(link: Link) -> str | None:
        """The error condition the hub detached the link with, if it refused it."""
        if not link.state & Link.REMOTE_CLOSED:
            return None
        condition = link.remote_condition
        return condition.name if condition is not None else "closed"

    async def send(self, link: Link, message: Message, timeout: float = 10) -> Delivery:
        """Send unsettled; returns the delivery once the hub settled it (see ``remote_state``)."""
        await self.until(lambda: link.credit > 0, timeout, "credit")
        delivery = link.delivery(str(uuid.uuid4()))
        link.send(message.encode())
        link.advance()
        self.pump()
        await self.until(lambda: delivery.remote_state or delivery.settled, timeout, "an outcome")
        return delivery

    async def put_token(self, token: str, audience: str, timeout: float = 10) -> Message:
        """CBS put-token; returns the hub's reply."""
        cbs_out = await self.sender("$cbs")
        cbs_in = await self.receiver("$cbs")
        request = Message(body=token, reply_to="cbs", id=str(uuid.uuid4()))
        request.properties = {
            "operation": "put-token",
            "type": "servicebus.windows.net:sastoken",
            "name": audience,
        }
        await self.send(cbs_out, request, timeout)
        replies = await self.until(lambda: self.received.get(cbs_in.name), timeout, "the CBS reply")
        return replies[-1]

    def close(self) -> None:
        self.connection.close()
        self.pump()
        if self.transport is not None:
            self.transport.close()
