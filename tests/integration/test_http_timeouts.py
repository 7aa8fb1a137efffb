"""Every HTTP listener times out what is idle or unfinished (the time-out shortened here): a TLS
connection that sends no request, a request sent a byte at a time, an idle keep-alive connection; a
WebSocket, once upgraded, is the protocol's to time out and stays."""

from __future__ import annotations

import asyncio
import ssl
import time

import aiohttp
import pytest

from edgehub_emu.mqtt import codec

from .conftest import DEVICE

TIMEOUT = 1.0


async def _closed_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bool) -> float:
    """Seconds until the hub closes the connection (a byte written every 0.2 s with ``trickle``)."""
    began = time.monotonic()
    while time.monotonic() - began < 10 * TIMEOUT:
        if trickle:
            try:
                writer.write(b"a")
                await writer.drain()
            except ConnectionError:
                return time.monotonic() - began
        try:
            if await asyncio.wait_for(reader.read(100), 0.2) == b"":
                return time.monotonic() - began
        except TimeoutError:
            pass
        except ConnectionError:
            return time.monotonic() - began
    raise AssertionError("the hub kept the connection open")


@pytest.mark.parametrize("listener", ["http", "https"])
@pytest.mark.parametrize("case", ["no request", "slowloris", "idle keep-alive"])
async def test_idle_and_unfinished_http_connections_are_closed(start_hub, listener, case):
    hub = await start_hub(http_idle_timeout=TIMEOUT)
    endpoints = hub.hub.endpoints
    tls = ssl.create_default_context(cafile=str(hub.hub.ca_file)) if listener == "https" else None
    port = endpoints.https_port if listener == "https" else endpoints.http_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    if case == "slowloris":
        writer.write(b"GET /health HTTP/1.1\r\nX-Slow: ")
    elif case == "idle keep-alive":
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
    closed = await _closed_after(reader, writer, trickle=case == "slowloris")
    assert closed >= TIMEOUT * 0.9  # (not before its time)
    writer.close()


async def test_an_upgraded_websocket_outlives_the_http_time_out(start_hub):
    hub = await start_hub(http_idle_timeout=TIMEOUT)
    module = f"{DEVICE}/filtermodule"
    username = f"{hub.hub.settings.iothub_hostname}/{module}/?api-version=2019-10-01"
    connect = codec.encode(codec.Connect(module, True, 60, username, hub.token(module).encode()))
    tls = ssl.create_default_context(cafile=str(hub.hub.ca_file))
    url = f"wss://127.0.0.1:{hub.hub.endpoints.https_port}/$iothub/websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=("mqtt",), ssl=tls) as ws:
        await ws.send_bytes(connect)
        assert (await ws.receive()).data == b"\x20\x02\x00\x00"
        deadline = time.monotonic() + 3 * TIMEOUT
        while time.monotonic() < deadline:  # quiet for three HTTP time-outs
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.receive(), 0.2)
        await ws.send_bytes(codec.encode(codec.Pingreq()))
        assert (await asyncio.wait_for(ws.receive(), 5)).data == b"\xd0\x00"  # PINGRESP: still served
