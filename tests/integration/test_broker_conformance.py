"""The broker mode as a plain MQTT 3.1.1 broker: clean-room versions of the ten scenarios of the Eclipse
Paho interoperability suite (plus its will-on-close check), run with paho clients against a real hub
listening on plain TCP with ``--dev`` (anonymous local clients), under ``config/broker.json``'s policy,
which forbids subscribing to ``test/nosubscribe``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgehub_emu.manifest import load_deployment
from edgehub_emu.mqtt import codec

from .conftest import ROOT, Client, Hub

TOPICS = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
WILDTOPICS = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")


@pytest.fixture
async def broker(start_hub: Callable[..., Any]) -> Hub:
    return await start_hub(load_deployment(ROOT / "config" / "broker.json"), mqtt_port=0, dev=True)


@pytest.fixture
async def connect(broker: Hub) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def make(
        client_id: str,
        *,
        clean: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
        expect: int = 0,
    ) -> Client:
        client = Client.wired(client_id, clean)
        paho = client.paho
        if will is not None:
            paho.will_set(*will)
        port = broker.hub.endpoints.mqtt_port  # type: ignore[union-attr]
        await asyncio.to_thread(paho.connect, "127.0.0.1", port, keepalive)
        paho.loop_start()
        rc, flags = await asyncio.to_thread(client.connack.get, True, 5)
        assert rc.value == expect
        client.session_present = flags.session_present  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.paho.loop_stop()
        client.paho.disconnect()


async def drain(client: Client, wait: float = 0.5) -> list[mqtt.MQTTMessage]:
    await asyncio.sleep(wait)
    out = []
    while not client.messages.empty():
        out.append(client.messages.get())
    return out


def raw_socket(hub: Hub) -> socket.socket:
    return socket.create_connection(("127.0.0.1", hub.hub.endpoints.mqtt_port), timeout=5)  # type: ignore[union-attr]


def read_packets(sock: socket.socket, quiet: float = 0.7) -> list[codec.Packet]:
    """Everything the broker sends until it closes the connection (or is quiet for ``quiet`` s)."""
    decoder = codec.Decoder()
    packets: list[codec.Packet] = []
    sock.settimeout(quiet)
    try:
        while data := sock.recv(65536):
            packets.extend(decoder.feed(data))
    except TimeoutError:
        pass
    return packets


async def test_basic_round_trip_at_each_qos(connect: Callable[..., Any]) -> None:
    client = await connect("myclientid")
    assert await client.subscribe(TOPICS[0], qos=2) == [2]
    for qos in (0, 1, 2):
        await client.publish(TOPICS[0], f"qos {qos}", qos=qos)
    received = await drain(client)
    assert sorted((m.payload, m.qos) for m in received) == [(b"qos 0", 0), (b"qos 1", 1), (b"qos 2", 2)]


async def test_second_connect_on_one_connection_closes_it(broker: Hub) -> None:
    def run() -> list[codec.Packet]:
        with raw_socket(broker) as sock:
            sock.sendall(codec.encode(codec.Connect("twice", True, 60)))
            sock.sendall(codec.encode(codec.Connect("twice", True, 60)))
            return read_packets(sock)

    packets = await asyncio.to_thread(run)
    assert packets == [codec.Connack(0, False)]  # then closed


async def test_bad_protocol_name_is_refused(broker: Hub) -> None:
    def run() -> list[codec.Packet]:
        with raw_socket(broker) as sock:
            body = codec.encode(codec.Connect("badname", True, 60)).replace(b"\x00\x04MQTT", b"\x00\x04MQTX")
            sock.sendall(body)
            return read_packets(sock)

    assert await asyncio.to_thread(run) == []


async def test_retained_messages_reach_later_subscribers_and_are_cleared(connect: Callable[..., Any]) -> None:
    publisher = await connect("myclientid")
    for qos, topic in zip((0, 1, 2), TOPICS[1:4], strict=True):
        await publisher.publish(topic, f"retained qos {qos}", qos=qos, retain=True)
    await asyncio.sleep(0.2)
    late = await connect("myclientid2")
    assert late.session_present is False  # type: ignore[attr-defined]
    await late.subscribe(WILDTOPICS[5], qos=2)
    received = await drain(late)
    assert sorted((m.topic, m.qos, m.retain) for m in received) == [
        ("Topic/C", 1, True),
        ("TopicA/B", 0, True),
        ("TopicA/C", 2, True),
    ]
    for topic in TOPICS[1:4]:
        await publisher.publish(topic, b"", qos=0, retain=True)
    await asyncio.sleep(0.2)
    again = await connect("myclientid3")
    await again.subscribe(WILDTOPICS[5], qos=2)
    assert await drain(again) == []


async def test_zero_length_client_id(connect: Callable[..., Any], broker: Hub) -> None:
    def persistent_without_id() -> list[codec.Packet]:
        with raw_socket(broker) as sock:
            sock.sendall(codec.encode(codec.Connect("", False, 60)))
            return read_packets(sock)

    assert await asyncio.to_thread(persistent_without_id) == [codec.Connack(codec.IDENTIFIER_REJECTED)]
    anonymous = await connect("")  # clean session: the broker assigns an id
    await anonymous.subscribe("test/anon")
    await anonymous.publish("test/anon", b"hello")
    assert (await anonymous.next()).payload == b"hello"


async def test_offline_messages_wait_for_a_persistent_session(connect: Callable[..., Any]) -> None:
    away = await connect("myclientid2", clean=False)
    await away.subscribe(WILDTOPICS[5], qos=2)
    away.stop()
    await asyncio.sleep(0.2)
    publisher = await connect("myclientid", clean=True)
    for qos, topic in zip((0, 1, 2), TOPICS[1:4], strict=True):
        await publisher.publish(topic, f"offline qos {qos}", qos=qos)
    back = await connect("myclientid2", clean=False)
    assert back.session_present is True  # type: ignore[attr-defined]
    received = await drain(back)
    assert sorted(m.payload for m in received) == [b"offline qos 1", b"offline qos 2"]


async def test_overlapping_subscriptions_give_one_message_at_the_highest_qos(
    connect: Callable[..., Any],
) -> None:
    client = await connect("myclientid")
    assert await client.subscribe(WILDTOPICS[6], qos=2) == [2]
    assert await client.subscribe(WILDTOPICS[0], qos=1) == [1]
    await client.publish(TOPICS[3], b"overlapping", qos=2)
    received = await drain(client)
    assert [(m.topic, m.qos) for m in received] == [("TopicA/C", 2)]


async def test_keep_alive_timeout_publishes_the_will(connect: Callable[..., Any], broker: Hub) -> None:
    watcher = await connect("myclientid2")
    await watcher.subscribe(TOPICS[2], qos=2)

    def silent_client() -> list[codec.Packet]:
        with raw_socket(broker) as sock:
            will = codec.Will(TOPICS[2], b"client not disconnected", 2, False)
            sock.sendall(codec.encode(codec.Connect("myclientid", True, 2, will=will)))
            sock.settimeout(6)
            decoder, packets = codec.Decoder(), []
            while data := sock.recv(4096):  # silent: the broker must close within 1.5 x 2 s
                packets.extend(decoder.feed(data))
            return packets

    assert await asyncio.to_thread(silent_client) == [codec.Connack(0, False)]
    will = await watcher.next()
    assert (will.topic, will.payload, will.qos) == ("Topic/C", b"client not disconnected", 2)


async def test_will_on_abrupt_close(connect: Callable[..., Any]) -> None:
    watcher = await connect("watcher")
    await watcher.subscribe("test/will", qos=1)
    dying = await connect("dying", will=("test/will", b"gone", 1, False))
    dying.paho.loop_stop()
    dying.paho.socket().close()  # no DISCONNECT
    assert (await watcher.next()).payload == b"gone"
    polite = await connect("polite", will=("test/will", b"not sent", 1, False))
    polite.stop()
    await watcher.nothing(via="topic")


async def test_unacknowledged_messages_are_redelivered_on_reconnect(
    connect: Callable[..., Any], broker: Hub
) -> None:
    subscriber = await asyncio.to_thread(raw_socket, broker)
    subscriber.sendall(codec.encode(codec.Connect("myclientid", False, 60)))
    subscriber.sendall(codec.encode(codec.Subscribe(1, [(WILDTOPICS[6], 2)])))
    await asyncio.sleep(0.3)
    publisher = await connect("myclientid2")
    await publisher.publish(TOPICS[1], b"qos 1", qos=1)
    await publisher.publish(TOPICS[3], b"qos 2", qos=2)
    first = await asyncio.to_thread(read_packets, subscriber)  # read, never acknowledged
    subscriber.close()
    assert [(p.payload, p.dup) for p in first if isinstance(p, codec.Publish)] == [
        (b"qos 1", False),
        (b"qos 2", False),
    ]
    await asyncio.sleep(0.3)

    def reconnect() -> list[codec.Packet]:
        with raw_socket(broker) as sock:
            sock.sendall(codec.encode(codec.Connect("myclientid", False, 60)))
            return read_packets(sock)

    packets = await asyncio.to_thread(reconnect)
    assert packets[0] == codec.Connack(0, True)
    again = [(p.payload, p.qos, p.dup) for p in packets if isinstance(p, codec.Publish)]
    assert again == [(b"qos 1", 1, True), (b"qos 2", 2, True)]


async def test_subscribe_failure_for_a_forbidden_filter(connect: Callable[..., Any], broker: Hub) -> None:
    client = await connect("myclientid")
    assert await client.subscribe("test/nosubscribe", qos=2) == [0x80]
    assert await client.subscribe("test/allowed", qos=2) == [2]
    assert broker.hub.snapshot().broker["counters"]["denied_subscribe"] == 1  # type: ignore[index]


async def test_dollar_topics_are_not_matched_by_leading_wildcards(connect: Callable[..., Any]) -> None:
    client = await connect("myclientid")
    await client.subscribe(WILDTOPICS[5], qos=2)
    await client.subscribe("#", qos=2)
    await client.publish("$" + TOPICS[1], b"dollar", qos=1)
    await client.nothing(via="topic")
    await client.subscribe("$TopicA/+", qos=1)
    await client.publish("$" + TOPICS[1], b"explicit", qos=1)
    assert (await client.next()).payload == b"explicit"


async def test_unsubscribe_stops_delivery(connect: Callable[..., Any]) -> None:
    client = await connect("myclientid")
    await client.subscribe(TOPICS[1], qos=2)
    await client.subscribe(TOPICS[2], qos=2)
    await client.subscribe(TOPICS[3], qos=2)
    info = client.paho.unsubscribe(TOPICS[1])
    assert info[0] == mqtt.MQTT_ERR_SUCCESS
    await asyncio.sleep(0.2)
    for topic in TOPICS[1:4]:
        await client.publish(topic, topic, qos=1)
    received = await drain(client)
    assert sorted(m.topic for m in received) == ["Topic/C", "TopicA/C"]


async def test_qos2_publish_is_processed_exactly_once_when_sent_again(broker: Hub) -> None:
    """A QoS 2 PUBLISH repeated (DUP) before PUBREL is not delivered twice."""

    def run() -> list[codec.Packet]:
        with raw_socket(broker) as sub, raw_socket(broker) as pub:
            sub.sendall(codec.encode(codec.Connect("sub", True, 60)))
            sub.sendall(codec.encode(codec.Subscribe(1, [("test/once", 2)])))
            pub.sendall(codec.encode(codec.Connect("pub", True, 60)))
            message = codec.Publish("test/once", b"once", 2, packet_id=7)
            pub.sendall(codec.encode(message))
            pub.sendall(codec.encode(codec.Publish("test/once", b"once", 2, dup=True, packet_id=7)))
            pub.sendall(codec.encode(codec.Pubrel(7)))
            publisher = read_packets(pub)
            assert publisher == [codec.Connack(0), codec.Pubrec(7), codec.Pubrec(7), codec.Pubcomp(7)]
            return read_packets(sub)

    packets = await asyncio.to_thread(run)
    assert [p.payload for p in packets if isinstance(p, codec.Publish)] == [b"once"]


async def test_anonymous_tools_cannot_use_iothub_topics(connect: Callable[..., Any], broker: Hub) -> None:
    tool = await connect("tool")
    assert await tool.subscribe("$iothub/methods/POST/#", "devices/edge-device/modules/filtermodule/#") == [
        0x80,
        0x80,
    ]
    await tool.publish("devices/edge-device/modules/filtermodule/messages/events/", b"spoof")
    await tool.publish("$iothub/twin/GET/?$rid=1", b"")
    snapshot = broker.hub.snapshot()
    assert snapshot.dropped["anonymous"] == 2
    assert snapshot.received == 0  # nothing was routed
    await tool.subscribe("test/still-served")
    await tool.publish("test/still-served", b"yes")
    assert (await tool.next()).payload == b"yes"
