"""The upstream MQTT client against a hand-written remote: acknowledgements, a failing handler, a remote
that refuses, and publishing while the remote is away."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from edgehub_emu.mqtt import codec
from edgehub_emu.upstream import ClientOptions, MqttClient


async def read_packet(reader: asyncio.StreamReader, decoder: codec.Decoder) -> codec.Packet:
    while (packet := decoder.next_packet()) is None:
        data = await reader.read(4096)
        if not data:
            raise ConnectionError("closed")
        decoder.receive(data)
    return packet


async def test_a_failing_handler_neither_loses_the_ack_nor_the_connection() -> None:
    seen: list[bytes] = []
    acks: asyncio.Queue[codec.Packet] = asyncio.Queue()

    async def remote(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = codec.Decoder()
        assert isinstance(await read_packet(reader, decoder), codec.Connect)
        writer.write(codec.encode(codec.Connack(0)))
        writer.write(codec.encode(codec.Publish("a", b"bad", 1, packet_id=5)))
        writer.write(codec.encode(codec.Publish("a", b"good", 2, packet_id=6)))
        with contextlib.suppress(ConnectionError):
            while True:
                packet = await read_packet(reader, decoder)
                if isinstance(packet, codec.Pubrec):
                    writer.write(codec.encode(codec.Pubrel(packet.packet_id)))
                await acks.put(packet)

    def handler(packet: codec.Publish) -> None:
        seen.append(packet.payload)
        if packet.payload == b"bad":
            raise ValueError("cannot take this one")

    server = await asyncio.start_server(remote, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = MqttClient(ClientOptions("127.0.0.1", port, "c"), on_message=handler)
    client.start()
    try:
        got = [await asyncio.wait_for(acks.get(), 5) for _ in range(3)]
        assert got == [codec.Puback(5), codec.Pubrec(6), codec.Pubcomp(6)]
        assert seen == [b"bad", b"good"]
        assert client.connections == 1
    finally:
        await client.stop()
        server.close()


async def test_refusals_and_absence_raise_connection_error() -> None:
    async def refusing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader, codec.Decoder())
        writer.write(codec.encode(codec.Connack(4)))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refusing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = MqttClient(ClientOptions("127.0.0.1", port, "c"))
    client.start()
    try:
        with pytest.raises(ConnectionError, match="not connected"):
            await client.publish("t", b"x", 1, wait_connected=0.5)
        assert client.last_error == "CONNACK 4: bad user name or password"
    finally:
        await client.stop()
        server.close()
