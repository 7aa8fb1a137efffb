"""MQTT and AMQP over WebSocket on the hub's HTTPS port, as the SDKs' websocket options use them.

edgeHub selects the protocol by the sub-protocol the client asks for, ``mqtt`` or ``AMQPWSB10``, in
any case (Microsoft's C SDK asks for ``MQTT``), and accepts any path; the SDKs use
``/$iothub/websocket``. Binary frames carry the protocol's bytes both ways; the adapter gives the
connection the transport it expects (write, close, pause and resume reading, the write buffer's size).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ..mqtt.server import MqttServer

if TYPE_CHECKING:
    from ..heads.amqp import AmqpHead

SUBPROTOCOLS = {"mqtt": "mqtt", "amqpwsb10": "amqp"}
AMQP_MAX_WS_MESSAGE = 2 << 20  # a client may put a whole message (up to 1 MiB) in one frame


class WebSocketTransport:
    """The parts of ``asyncio.Transport`` an MQTT connection uses, over an aiohttp WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.reading = asyncio.Event()
        self.reading.set()
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._queued = 0  # bytes written and not yet sent
        self._writer = asyncio.ensure_future(self._write_loop())

    async def _write_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            if data is None:
                break
            self._queued -= len(data)
            try:
                await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                break
        await self.ws.close()

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._queued += len(data)
            self._outbox.put_nowait(data)

    def get_write_buffer_size(self) -> int:
        return self._queued

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    async def drained(self, timeout: float = 5.0) -> None:
        """Wait until what was written went out (a CONNACK refusing the client, before its close)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.request.transport.get_extra_info("peername") if self.request.transport else default
        return default


def chosen_subprotocol(request: web.Request) -> str | None:
    """The client's own spelling of the first sub-protocol it asks for that the hub serves."""
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    for name in (p.strip() for p in offered.split(",")):
        if name.lower() in SUBPROTOCOLS:
            return name
    return None


def websocket_handler(server: MqttServer, amqp: AmqpHead | None = None):
    """An aiohttp handler that serves MQTT (sub-protocol ``mqtt``) and AMQP (``AMQPWSB10``) on any path."""

    async def handle(request: web.Request) -> web.StreamResponse:
        subprotocol = chosen_subprotocol(request)
        kind = SUBPROTOCOLS.get(subprotocol.lower()) if subprotocol else None
        if kind is None or (kind == "amqp" and amqp is None):
            raise web.HTTPNotFound(
                text="no such resource (a WebSocket here needs the sub-protocol 'mqtt' or 'AMQPWSB10')"
            )
        assert subprotocol is not None
        limit = server.max_packet_size + 16 if kind == "mqtt" else AMQP_MAX_WS_MESSAGE
        ws = web.WebSocketResponse(protocols=(subprotocol,), max_msg_size=limit)
        if not ws.can_prepare(request).ok:
            raise web.HTTPNotFound(text="not a WebSocket upgrade")
        await ws.prepare(request)
        transport = WebSocketTransport(ws, request)
        if kind == "amqp":
            assert amqp is not None
            connection: Any = amqp.protocol("amqp-ws")
        else:
            connection = server.protocol("websocket")
        connection.connection_made(transport)
        try:
            async for frame in ws:
                if frame.type == WSMsgType.BINARY:
                    await transport.reading.wait()
                    connection.data_received(frame.data)
                elif frame.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
                if transport.is_closing():
                    break
        finally:
            transport.close()
            connection.connection_lost(None)
            await transport.drained()  # returning closes the WebSocket: not before the last bytes
        return ws

    return handle
