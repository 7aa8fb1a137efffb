"""At-least-once towards a module that goes away with deliveries unacknowledged: whatever it took
without a PUBACK comes again, at once, on its next connection, in order; nothing else has to be routed
to set delivery going again."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from edgehub_emu.mqtt import codec
from edgehub_emu.mqtt.codec import Connect, Decoder, Puback, Publish, Subscribe, encode

from .conftest import DEVICE, Hub

SENSOR_OUT = f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput"
INPUTS = f"devices/{DEVICE}/modules/filtermodule/inputs/#"


class RawModule:
    """filtermodule over TLS with hand-made packets: it decides when (and whether) to acknowledge."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder()
        self.buffered: list[codec.Packet] = []

    @classmethod
    async def connect(cls, hub: Hub, clean: bool) -> tuple[RawModule, bool]:
        context = ssl.create_default_context(cafile=str(hub.hub.ca_file))
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port, ssl=context)
        module = cls(reader, writer)
        identity = f"{DEVICE}/filtermodule"
        username = f"{hub.hub.settings.iothub_hostname}/{identity}/?api-version=2019-10-01"
        writer.write(encode(Connect(identity, clean, 60, username, hub.token(identity).encode())))
        connack = await module.next()
        assert isinstance(connack, codec.Connack) and connack.return_code == 0
        return module, connack.session_present

    async def subscribe(self) -> None:
        self.writer.write(encode(Subscribe(1, [(INPUTS, 1)])))
        assert isinstance(await self.next(), codec.Suback)

    async def next(self, timeout: float = 5) -> codec.Packet:
        while not self.buffered:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(65536)
            assert data, "the hub closed the connection"
            self.buffered.extend(self.decoder.feed(data))
        return self.buffered.pop(0)

    async def publishes(self, count: int, timeout: float = 5) -> list[Publish]:
        got = []
        while len(got) < count:
            packet = await self.next(timeout)
            assert isinstance(packet, Publish), packet
            got.append(packet)
        return got

    def ack(self, packets: list[Publish]) -> None:
        self.writer.write(b"".join(encode(Puback(p.packet_id or 0)) for p in packets))

    def reset(self) -> None:
        """Gone without a word: a TCP reset, as when the module's container dies."""
        self.writer.transport.abort()


async def queue_for_the_filter(hub: Hub, count: int) -> None:
    sensor = await hub.client("SimulatedTemperatureSensor")
    for i in range(count):
        await sensor.publish(SENSOR_OUT, str(i).encode())
    sensor.stop()


@pytest.mark.parametrize("clean", [True, False], ids=["clean session", "persistent session"])
@pytest.mark.parametrize("window", [16, 1])
async def test_deliveries_taken_without_puback_come_again_at_once_on_the_next_connection(
    start_hub, clean: bool, window: int
):
    hub = await start_hub(delivery_window=window)
    await queue_for_the_filter(hub, 40)
    module, _ = await RawModule.connect(hub, clean)
    await module.subscribe()
    taken = await module.publishes(window)  # the window's worth, never acknowledged
    assert [int(p.payload) for p in taken] == list(range(window))
    module.reset()

    again, present = await RawModule.connect(hub, clean)
    if not present:
        await again.subscribe()
    received: list[int] = []
    while len(set(received)) < 40:  # no new message is routed: the old ones alone must come
        batch = await again.publishes(1, timeout=5)
        received += [int(p.payload) for p in batch]
        again.ack(batch)
    assert list(dict.fromkeys(received)) == list(range(40))  # all of them, in order
    assert hub.hub.queued("filtermodule", "input1") == [] or await queue_drained(hub)


async def queue_drained(hub: Hub, timeout: float = 5) -> bool:
    async with asyncio.timeout(timeout):
        while hub.hub.queued("filtermodule", "input1"):
            await asyncio.sleep(0.05)
    return True
