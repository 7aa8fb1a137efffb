"""Mutation fuzz of the MQTT head: valid packet sequences with random bytes changed, cut or repeated,
each on its own connection. Whatever a client sends, the hub answers or closes that connection, logs
no traceback, and keeps serving everyone else. Seeded: a failure names the case to replay."""

from __future__ import annotations

import asyncio
import logging
import os
import random

from edgehub_emu.mqtt import codec

from .conftest import DEVICE

CASES = int(os.environ.get("FUZZ_CASES", "600"))  # FUZZ_CASES and FUZZ_SEED: a longer run by hand
SEED = int(os.environ.get("FUZZ_SEED", "20261130"))


def sequences(hub) -> list[bytes]:
    module = f"{DEVICE}/filtermodule"
    username = f"{hub.hub.settings.iothub_hostname}/{module}/?api-version=2019-10-01"
    connect = codec.encode(codec.Connect(module, True, 60, username, hub.token(module).encode()))
    e = codec.encode
    return [
        connect
        + e(codec.Subscribe(1, [(f"devices/{DEVICE}/modules/filtermodule/#", 1), ("$iothub/twin/res/#", 0)])),
        connect
        + e(
            codec.Publish(
                f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1&a=b",
                b'{"t": 1}',
                1,
                packet_id=7,
            )
        ),
        connect
        + e(codec.Publish("$iothub/twin/GET/?$rid=1", b"", 0))
        + e(codec.Publish("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"x": 1}', 0)),
        connect + e(codec.Publish("$iothub/methods/res/200/?$rid=abc", b"{}", 0)) + e(codec.Pingreq()),
        connect + e(codec.Unsubscribe(3, ["$iothub/twin/res/#"])) + e(codec.Disconnect()),
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        i = rng.randrange(len(out)) if out else 0
        if kind < 0.5 and out:
            out[i] = rng.randrange(256)
        elif kind < 0.65:
            del out[i : i + rng.randint(1, 8)]
        elif kind < 0.8:
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind < 0.9:
            out[i:i] = out[i : i + rng.randint(1, 32)]
        else:
            out[i:i] = b"\xff\xff\xff\x7f"  # a huge remaining length
    return bytes(out)


async def _exchange(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        while await asyncio.wait_for(reader.read(65536), 0.3):
            pass
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def test_mutated_packets_never_cause_a_traceback_and_the_hub_serves_on(start_hub, caplog):
    caplog.set_level(logging.INFO)
    hub = await start_hub(mqtt_port=0)
    port = hub.hub.endpoints.mqtt_port
    rng = random.Random(SEED)
    bases = sequences(hub)
    for case in range(CASES):
        data = mutate(rng.choice(bases), rng)
        await _exchange(port, data)
        broken = [r for r in caplog.records if r.exc_info or "internal error" in r.getMessage()]
        assert not broken, f"case {case} ({data!r}) gave: {broken[0].getMessage()}\n{caplog.text[-3000:]}"
    module = await hub.client("filtermodule")  # the hub still serves, over TLS
    await module.subscribe("$iothub/twin/res/#")
    module.stop()
