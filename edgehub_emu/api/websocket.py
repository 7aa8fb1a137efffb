"""MQTT over WebSocket (sub-protocol ``mqtt``) on the hub's HTTPS port, as the SDKs' websocket option uses.

edgeHub selects MQTT by the sub-protocol and accepts any path; the SDKs use ``/$iothub/websocket``.
Binary frames carry MQTT bytes both ways; the adapter gives the MQTT connection the transport it
expects (write, close, pause and resume reading).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType, web

from ..mqtt.server import MqttServer


class WebSocketTransport:
    """The parts of ``asyncio.Transport`` an MQTT connection uses, over an aiohttp WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.reading = asyncio.Event()
        self.reading.set()
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._writer = asyncio.ensure_future(self._write_loop())

    async def _write_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            if data is None:
                break
            try:
                await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                break
        await self.ws.close()

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._outbox.put_nowait(data)

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.request.transport.get_extra_info("peername") if self.request.transport else default
        return default


def websocket_handler(server: MqttServer):
    """An aiohttp handler that serves MQTT on any path when the client asks for sub-protocol ``mqtt``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("mqtt",), max_msg_size=server.max_packet_size + 16)
        if not ws.can_prepare(request).ok:
            raise web.HTTPNotFound(
                text="no such resource (MQTT over WebSocket needs the 'mqtt' sub-protocol)"
            )
        await ws.prepare(request)
        if ws.ws_protocol != "mqtt":
            await ws.close(message=b"sub-protocol mqtt required")
            return ws
        connection = server.protocol("websocket")
        transport = WebSocketTransport(ws, request)
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
        return ws

    return handle
