"""MQTT rules over real connections: authentication, sessions, keep-alive, bad input, back-pressure."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest

from edgehub_emu.mqtt import codec
from edgehub_emu.mqtt.codec import Connect, Decoder, Publish, encode
from edgehub_emu.store import MemoryStore

from .conftest import DEVICE

HUB_HOST = "edgehub-emu.azure-devices.net"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"password": "SharedAccessSignature sr=x&sig=y&se=1"}, 5),
        ({"client_id": f"{DEVICE}/someoneelse"}, 5),
        ({"username": "not-a-username"}, 3),
        (
            {
                "username": f"{HUB_HOST}/{DEVICE}/nobody/?api-version=2019-10-01",
                "client_id": f"{DEVICE}/nobody",
            },
            5,
        ),
    ],
)
async def test_refused_connections_get_edgehubs_connack_codes(start_hub, kwargs, code):
    hub = await start_hub()
    await hub.client("filtermodule", expect=code, **kwargs)


async def test_expired_and_foreign_tokens_are_refused(start_hub):
    hub = await start_hub()
    expired = hub.token(f"{DEVICE}/filtermodule", expiry=int(time.time()) - 400)
    await hub.client("filtermodule", password=expired, expect=5)
    other_key = hub.hub.identity("SimulatedTemperatureSensor").primary_key
    await hub.client("filtermodule", password=hub.token(f"{DEVICE}/filtermodule", key=other_key), expect=5)
    # a module may sign with its device's key
    device_key = hub.hub.identity(DEVICE).primary_key
    ok = await hub.client("filtermodule", password=hub.token(f"{DEVICE}/filtermodule", key=device_key))
    ok.stop()


async def test_expired_token_is_disconnected_on_recheck(start_hub):
    hub = await start_hub()
    client = await hub.client(
        "filtermodule", password=hub.token(f"{DEVICE}/filtermodule", expiry=int(time.time()) + 5)
    )
    assert hub.hub.check_tokens(now=time.time() + 3600) == [f"{DEVICE}/filtermodule"]
    await client.disconnected()


async def test_same_client_id_takes_over(start_hub):
    hub = await start_hub()
    first = await hub.client("filtermodule")
    second = await hub.client("filtermodule")
    await first.disconnected()
    await second.subscribe("$iothub/twin/res/#")
    second.stop()


async def test_persistent_session_survives_reconnect_and_restart(start_hub, tmp_path):
    hub = await start_hub()
    module = await hub.client("filtermodule", clean=False)
    await module.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/#")
    module.stop()
    again = await hub.client("filtermodule", clean=False)
    assert again.connack.empty()  # (connack consumed by client(); flags checked below on restart)
    sender = await hub.client("SimulatedTemperatureSensor")
    await sender.publish(
        f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput", b"1"
    )
    assert (await again.next()).payload == b"1"  # no re-subscribe needed
    for _ in range(100):  # until the hub has the PUBACK: else "1" would rightly come again after the restart
        if not hub.hub.queued("filtermodule", "input1"):
            break
        await asyncio.sleep(0.05)
    again.stop()
    sender.stop()
    await hub.hub.stop()
    restarted = await start_hub(data_dir=tmp_path)
    back = await restarted.client("filtermodule", clean=False)
    sender = await restarted.client("SimulatedTemperatureSensor")
    await sender.publish(
        f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput", b"2"
    )
    assert (await back.next()).payload == b"2"
    back.stop()
    clean = await restarted.client("filtermodule", clean=True)  # clean session: subscriptions are gone
    await sender.publish(
        f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput", b"3"
    )
    await clean.nothing()
    clean.stop()
    sender.stop()


def connect_packet(hub, identity: str = f"{DEVICE}/filtermodule", keep_alive: int = 60) -> bytes:
    username = f"{HUB_HOST}/{identity}/?api-version=2019-10-01"
    return encode(Connect(identity, True, keep_alive, username, hub.token(identity).encode()))


def read_packets(sock: ssl.SSLSocket, timeout: float = 5) -> list:
    sock.settimeout(timeout)
    decoder = Decoder()
    packets: list = []
    try:
        while not packets:
            data = sock.recv(65536)
            if not data:
                return ["closed"]
            packets.extend(decoder.feed(data))
    except TimeoutError:
        return ["timeout"]
    except (ConnectionError, ssl.SSLError):
        return ["closed"]
    return packets


async def raw_exchange(hub, *chunks: bytes, read: int = 2, timeout: float = 5) -> list:
    def run() -> list:
        sock = hub.raw()
        got: list = []
        for chunk in chunks:
            sock.sendall(chunk)
        while len(got) < read:  # packets may arrive together: count packets, not reads
            got.extend(read_packets(sock, timeout))
            if got[-1] in ("closed", "timeout"):
                break
        sock.close()
        return got

    return await asyncio.to_thread(run)


async def test_mqtt5_connect_gets_return_code_1(start_hub):
    hub = await start_hub()
    connect = bytearray(connect_packet(hub))
    connect[connect.index(b"\x00\x04MQTT") + 6] = 5  # protocol level
    assert await raw_exchange(hub, bytes(connect)) == [codec.Connack(1), "closed"]


async def test_packet_before_connect_and_malformed_packets_close_the_connection(start_hub):
    hub = await start_hub()
    assert await raw_exchange(hub, encode(codec.Pingreq()), read=1) == ["closed"]
    assert await raw_exchange(hub, connect_packet(hub), b"\x30\x05\x00\x03a/#") == [
        codec.Connack(0),
        "closed",
    ]
    assert await raw_exchange(hub, connect_packet(hub), b"\x30\xff\xff\xff\xff\x01") == [
        codec.Connack(0),
        "closed",
    ]
    ok = await hub.client("SimulatedTemperatureSensor")  # everyone else is still served
    ok.stop()


async def test_oversize_packet_closes_the_connection(start_hub):
    hub = await start_hub()
    big = encode(Publish(f"devices/{DEVICE}/modules/filtermodule/messages/events", b"x" * 262_145, 0))
    # Its first kilobyte: the size in the fixed header is enough for the hub to close, and a test that
    # wrote all of it would race the close (its own send failing under load).
    assert await raw_exchange(hub, connect_packet(hub), big[:1024]) == [codec.Connack(0), "closed"]


async def test_qos2_publish_is_routed_then_the_connection_closed(start_hub):
    hub = await start_hub()
    publish = encode(
        Publish(
            f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1", b"q2", 2, packet_id=1
        )
    )
    assert await raw_exchange(hub, connect_packet(hub), publish) == [codec.Connack(0), "closed"]
    record = await hub.hub.upstream.wait_for(timeout=5)
    assert record.message.body == b"q2"


async def test_connect_must_arrive_in_time(start_hub):
    hub = await start_hub(connect_timeout=0.5)
    assert await raw_exchange(hub, read=1) == ["closed"]


async def test_keep_alive_is_enforced_at_one_and_a_half_times(start_hub):
    hub = await start_hub()
    started = time.monotonic()
    got = await raw_exchange(hub, connect_packet(hub, keep_alive=1), read=2, timeout=5)
    elapsed = time.monotonic() - started
    assert got == [codec.Connack(0), "closed"]
    assert 1.3 < elapsed < 3.5


class GatedStore(MemoryStore):
    """Queues whose commits complete only when the test opens the gate: a store that is slow to write."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list = []
        self.opened = False

    def add(self, message, copies, stored) -> bool:
        super().add(message, copies, stored)
        if self.opened:
            return True
        self.waiting.append(stored)
        return False

    def open(self) -> None:
        self.opened = True
        for stored in self.waiting:
            stored(None)
        self.waiting.clear()


async def test_back_pressure_stops_reading_after_16_unacknowledged_publishes(start_hub):
    gate = GatedStore()
    hub = await start_hub(make_store=lambda: gate)
    topic = f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1"
    publishes = b"".join(encode(Publish(topic, b"m", 1, packet_id=i)) for i in range(1, 21))

    def run() -> tuple[list, list]:
        sock = hub.raw()
        sock.sendall(connect_packet(hub) + publishes + encode(codec.Pingreq()))
        first = read_packets(sock, 5)
        assert first == [codec.Connack(0)]
        blocked = read_packets(sock, 1.0)  # no PUBACK and no PINGRESP: the hub stopped reading
        loop.call_soon_threadsafe(gate.open)
        later: list = []
        while len(later) < 21:
            batch = read_packets(sock, 5)
            if batch[-1] in ("closed", "timeout"):
                break
            later.extend(batch)
        sock.close()
        return blocked, later

    loop = asyncio.get_running_loop()
    blocked, later = await asyncio.to_thread(run)
    assert blocked == ["timeout"]
    acks = [p.packet_id for p in later if isinstance(p, codec.Puback)]
    assert acks == list(range(1, 21))  # every publish acknowledged, in order
    assert any(isinstance(p, codec.Pingresp) for p in later)


async def test_an_invalid_filter_is_refused_alone(start_hub):
    hub = await start_hub()
    subscribe = encode(codec.Subscribe(1, [("bad/#/filter", 1), ("$iothub/twin/res/#", 1)]))
    assert await raw_exchange(hub, connect_packet(hub), subscribe) == [
        codec.Connack(0),
        codec.Suback(1, [0x80, 1]),
    ]


async def test_unacknowledged_delivery_is_sent_again_with_dup_after_reconnect(start_hub):
    hub = await start_hub()
    identity = f"{DEVICE}/filtermodule"
    username = f"{HUB_HOST}/{identity}/?api-version=2019-10-01"
    persistent = encode(Connect(identity, False, 60, username, hub.token(identity).encode()))
    subscribe = encode(codec.Subscribe(1, [(f"devices/{DEVICE}/modules/filtermodule/#", 1)]))
    sender = await hub.client("SimulatedTemperatureSensor")

    def first_connection() -> list:
        sock = hub.raw()
        sock.sendall(persistent + subscribe)
        got = read_packets(sock)
        while len(got) < 2:
            got += read_packets(sock)
        return got, sock

    got, sock = await asyncio.to_thread(first_connection)
    assert got == [codec.Connack(0), codec.Suback(1, [1])]
    await sender.publish(
        f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput",
        b"once",
    )
    [delivery] = await asyncio.to_thread(read_packets, sock)
    assert delivery.payload == b"once" and not delivery.dup
    sock.close()  # no PUBACK

    def second_connection() -> list:
        sock = hub.raw()
        sock.sendall(persistent)
        got = read_packets(sock)
        while len(got) < 2:
            got += read_packets(sock)
        sock.sendall(encode(codec.Puback(got[1].packet_id)))
        sock.close()
        return got

    connack, again = await asyncio.to_thread(second_connection)
    assert connack == codec.Connack(0, session_present=True)
    assert again.payload == b"once" and again.dup and again.packet_id == delivery.packet_id
    sender.stop()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_1_2_and_1_3_are_served(start_hub, version):
    hub = await start_hub()

    def handshake() -> str | None:
        context = ssl.create_default_context(cafile=str(hub.hub.ca_file))
        context.minimum_version = context.maximum_version = version
        with (
            socket.create_connection(("127.0.0.1", hub.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.version()

    assert (
        await asyncio.to_thread(handshake)
        == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    )


async def test_plain_listener_for_local_tools_is_loopback_only(start_hub):
    hub = await start_hub(mqtt_port=0)
    port = hub.hub.endpoints.mqtt_port

    def exchange() -> list:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(connect_packet(hub))
            return read_packets(sock)

    assert await asyncio.to_thread(exchange) == [codec.Connack(0)]


@pytest.mark.parametrize(
    "topic",
    ["$iothub/twin/PATCH/properties/desired/?$rid=1", "$iothub/twin/DELETE/?$rid=1", "$iothub/twin/GET/x"],
)
async def test_unknown_twin_operations_close_the_connection(start_hub, topic):
    hub = await start_hub()
    publish = encode(Publish(topic, b"{}", 1, packet_id=5))
    assert await raw_exchange(hub, connect_packet(hub), publish) == [codec.Connack(0), "closed"]


async def test_other_dollar_topics_are_acknowledged_and_dropped(start_hub):
    hub = await start_hub()
    publish = encode(Publish("$iothub/unknown/thing", b"{}", 1, packet_id=5))
    assert await raw_exchange(hub, connect_packet(hub), publish) == [codec.Connack(0), codec.Puback(5)]


@pytest.mark.parametrize(("window", "before_ack"), [(1, 1), (16, 3)])
async def test_deliveries_in_flight_per_client_follow_the_window(start_hub, window, before_ack):
    """edgeHub sends a module one message at a time; the default window pipelines a few, in order."""
    hub = await start_hub(delivery_window=window)
    identity = f"{DEVICE}/filtermodule"
    username = f"{HUB_HOST}/{identity}/?api-version=2019-10-01"
    connect = encode(Connect(identity, True, 60, username, hub.token(identity).encode()))
    subscribe = encode(codec.Subscribe(1, [(f"devices/{DEVICE}/modules/filtermodule/#", 1)]))
    sender = await hub.client("SimulatedTemperatureSensor")
    for i in range(3):
        await sender.publish(
            f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput",
            f"m{i}",
        )

    def receive() -> tuple[list, list]:
        sock = hub.raw()
        sock.sendall(connect + subscribe)
        first: list = []
        while True:
            batch = read_packets(sock, 1.0)
            if batch == ["timeout"]:
                break
            first += batch
        deliveries = [p for p in first if isinstance(p, Publish)]
        for p in deliveries:
            sock.sendall(encode(codec.Puback(p.packet_id)))
        rest: list = []
        while len(deliveries) + len(rest) < 3:
            rest += [p for p in read_packets(sock, 5) if isinstance(p, Publish)]
            for p in rest[-1:]:
                sock.sendall(encode(codec.Puback(p.packet_id)))
        sock.close()
        return deliveries, rest

    deliveries, rest = await asyncio.to_thread(receive)
    assert len(deliveries) == before_ack  # sent before any PUBACK
    assert [p.payload for p in deliveries + rest] == [b"m0", b"m1", b"m2"]  # in order either way
    sender.stop()


async def test_default_https_port_falls_back_to_a_free_one_when_taken(start_hub, tmp_path):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.9", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hub = await start_hub(host="127.0.0.9", https_port=port, https_port_fallback=True)
        assert hub.hub.endpoints.https_port not in (None, port)
        with pytest.raises(Exception, match="cannot listen"):
            await start_hub(
                host="127.0.0.9", https_port=port, mqtts_port=0, amqps_port=0, data_dir=tmp_path / "second"
            )


async def test_will_is_routed_on_an_unclean_close_with_message_type_will(start_hub):
    hub = await start_hub()
    identity = f"{DEVICE}/filtermodule"
    username = f"{HUB_HOST}/{identity}/?api-version=2019-10-01"
    will = codec.Will(
        f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1", b"gone", 1, False
    )
    connect = encode(Connect(identity, True, 60, username, hub.token(identity).encode(), will))
    dup = encode(
        Publish(
            f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1",
            b"again",
            1,
            dup=True,
            packet_id=3,
        )
    )
    assert await raw_exchange(hub, connect, dup) == [
        codec.Connack(0),
        codec.Puback(3),
    ]  # then the socket drops
    records = [
        await hub.hub.upstream.wait_for(lambda r, body=body: r.message.body == body)
        for body in (b"again", b"gone")
    ]
    assert records[0].message.properties == {"mqtt-dup": "true"}
    assert records[1].message.properties == {"MessageType": "Will"}


async def test_graceful_disconnect_does_not_send_the_will(start_hub):
    hub = await start_hub()
    identity = f"{DEVICE}/filtermodule"
    username = f"{HUB_HOST}/{identity}/?api-version=2019-10-01"
    will = codec.Will(
        f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1", b"gone", 0, False
    )
    connect = encode(Connect(identity, True, 60, username, hub.token(identity).encode(), will))
    assert await raw_exchange(hub, connect, encode(codec.Disconnect())) == [codec.Connack(0), "closed"]
    await asyncio.sleep(0.3)
    assert hub.hub.upstream.messages() == []
