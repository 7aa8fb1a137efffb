"""A small MQTT 3.1.1 client on asyncio, for the upstream bridges: it keeps one connection up.

``start()`` connects in the background and reconnects after any loss, backing off from 1 s to 30 s;
each (re)connection asks for a fresh password (SAS tokens expire), subscribes again, and calls
``on_connected``. ``publish`` waits briefly for a connection, then for the PUBACK; it raises
``ConnectionError`` when the remote is not there, so the caller's queue keeps the message and retries.
Incoming messages are handed to ``on_message`` before they are acknowledged (QoS 1 and 2), so nothing is
acknowledged before it is taken in; a message whose handling fails is logged and acknowledged anyway,
so that one bad message cannot stall the connection. It speaks the same codec as the hub's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..mqtt import codec
from ..mqtt.codec import (
    Connack,
    Connect,
    Decoder,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
)
from ..tasks import spawn

log = logging.getLogger("edgehub_emu.upstream")

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class ConnectionRefused(ConnectionError):
    def __init__(self, code: int) -> None:
        super().__init__(f"CONNACK {code}: {CONNACK_REASONS.get(code, 'refused')}")
        self.code = code


@dataclass
class ClientOptions:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: Callable[[], bytes | None] = lambda: None
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    keep_alive: int = 60
    clean_session: bool = True
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    reconnect_after: float | None = None  # seconds: reconnect with a fresh password (token renewal)


MessageHandler = Callable[[Publish], Awaitable[None] | None]


class MqttClient:
    def __init__(
        self,
        options: ClientOptions,
        on_message: MessageHandler | None = None,
        on_connected: Callable[[], None] | None = None,
        name: str = "upstream",
    ) -> None:
        self.options = options
        self.on_message = on_message
        self.on_connected = on_connected
        self.name = name
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self.connections = 0
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._next_id = 0
        self._task: asyncio.Future[Any] | None = None
        self._stopping = False
        self._first = 1.0
        self._last_sent = time.monotonic()

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = spawn(self._maintain(), f"{self.name} connection")

    async def stop(self) -> None:
        self._stopping = True
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.write(codec.encode(codec.Disconnect()))
                writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def reconnect(self) -> None:
        """Drop the connection (if any) so that it is made again with the current options."""
        if self._writer is not None:
            log.info("%s: reconnecting with new subscriptions", self.name)
            self._writer.close()

    async def _maintain(self) -> None:
        delay = self._first
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.warning("%s: %s; connecting again in %g s", self.name, self.last_error, delay)
            finally:
                self._lost()
            if self._stopping:
                return
            if time.monotonic() - started > 30:  # it was up for a while: start backing off afresh
                delay = self._first
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _lost(self) -> None:
        self.connected.clear()
        self._writer = None
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.name}: connection lost"))
        self._waiting.clear()

    # --- one connection -----------------------------------------------------------------------------

    async def _session(self) -> None:
        o = self.options
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                o.host, o.port, ssl=o.tls, server_hostname=o.server_hostname if o.tls else None
            ),
            10,
        )
        self._writer = writer
        decoder = Decoder(1 << 28)
        try:
            connect = Connect(o.client_id, o.clean_session, o.keep_alive, o.username, o.password())
            self._write(codec.encode(connect))
            connack = await asyncio.wait_for(self._read_one(reader, decoder), 10)
            if not isinstance(connack, Connack):
                raise ConnectionError(f"expected CONNACK, got {type(connack).__name__}")
            if connack.return_code != codec.ACCEPTED:
                raise ConnectionRefused(connack.return_code)
            if o.subscriptions:
                self._next_id = self._next_id % 65535 + 1
                self._send(Subscribe(self._next_id, list(o.subscriptions)))
            self.connections += 1
            self.last_error = None
            self.connected.set()
            log.info("%s: connected to %s:%d as %s", self.name, o.host, o.port, o.client_id)
            if self.on_connected is not None:
                self.on_connected()
            await self._read_loop(reader, decoder)
        finally:
            writer.close()

    async def _read_one(self, reader: asyncio.StreamReader, decoder: Decoder) -> codec.Packet:
        while True:
            packet = decoder.next_packet()
            if packet is not None:
                return packet
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("connection closed by the remote")
            decoder.receive(data)

    async def _read_loop(self, reader: asyncio.StreamReader, decoder: Decoder) -> None:
        o = self.options
        renew_at = time.monotonic() + o.reconnect_after if o.reconnect_after else None
        ping_every = max(1.0, o.keep_alive / 2) if o.keep_alive else 3600.0
        last_received = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last_received > 3 * ping_every:
                raise ConnectionError("the remote stopped answering (keep-alive)")
            if now - self._last_sent >= ping_every:
                self._send(Pingreq())
            timeout = max(0.05, ping_every - (time.monotonic() - self._last_sent))
            if renew_at is not None:
                left = renew_at - now
                if left <= 0:
                    log.info("%s: reconnecting with a fresh token", self.name)
                    return
                timeout = min(timeout, left)
            try:
                async with asyncio.timeout(timeout):
                    packet = await self._read_one(reader, decoder)
            except TimeoutError:
                continue
            last_received = time.monotonic()
            await self._handle(packet)

    async def _handle(self, packet: codec.Packet) -> None:
        if isinstance(packet, Puback | Pubcomp):
            future = self._waiting.pop(packet.packet_id, None)
            if future is not None and not future.done():
                future.set_result(None)
        elif isinstance(packet, Pubrec):
            self._send(Pubrel(packet.packet_id))
        elif isinstance(packet, Publish):
            if self.on_message is not None:
                try:
                    result = self.on_message(packet)
                    if result is not None:
                        await result
                except Exception:  # a message we cannot take must not break the connection
                    log.exception("%s: could not take in a message on %r", self.name, packet.topic)
            if packet.qos == 1:
                self._send(Puback(packet.packet_id or 0))
            elif packet.qos == 2:
                self._send(Pubrec(packet.packet_id or 0))
        elif isinstance(packet, Pubrel):
            self._send(Pubcomp(packet.packet_id))
        elif isinstance(packet, Suback):
            refused = [c for c in packet.return_codes if c == codec.SUBACK_FAILURE]
            if refused:
                log.warning("%s: the remote refused %d subscription(s)", self.name, len(refused))
        elif not isinstance(packet, Pingresp):
            raise ConnectionError(f"unexpected {type(packet).__name__} from the remote")

    def _send(self, packet: codec.Packet) -> None:
        self._write(codec.encode(packet))

    def _write(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)
            self._last_sent = time.monotonic()

    # --- publishing ---------------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 1, wait_connected: float = 2.0) -> None:
        """Send and, for QoS 1, wait for the PUBACK; ``ConnectionError`` if not connected in time or
        the connection drops first."""
        if not self.connected.is_set():
            try:
                async with asyncio.timeout(wait_connected):
                    await self.connected.wait()
            except TimeoutError:
                raise ConnectionError(
                    f"{self.name}: not connected ({self.last_error or 'connecting'})"
                ) from None
        if self._writer is None:
            raise ConnectionError(f"{self.name}: not connected")
        if qos == 0:
            self._write(codec.publish_bytes(topic, payload, 0, None))
            return
        self._next_id = self._next_id % 65535 + 1
        while self._next_id in self._waiting:
            self._next_id = self._next_id % 65535 + 1
        packet_id = self._next_id
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[packet_id] = future
        self._write(codec.publish_bytes(topic, payload, 1, packet_id))
        try:
            async with asyncio.timeout(30):
                await future
        except TimeoutError:
            self._waiting.pop(packet_id, None)
            raise ConnectionError(f"{self.name}: no PUBACK within 30 s") from None
