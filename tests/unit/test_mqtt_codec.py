"""The MQTT 3.1.1 codec: round trips, incremental feeding, and strict refusal of malformed input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub_emu.mqtt import codec
from edgehub_emu.mqtt.codec import (
    Connect,
    Decoder,
    PacketTooLarge,
    ProtocolError,
    Publish,
    Subscribe,
    UnsupportedProtocolLevel,
    Will,
    encode,
)

PACKETS = [
    Connect("dev/mod", False, 60, "hub/dev/mod/?api-version=2019-10-01", b"SharedAccessSignature x"),
    Connect("c", True, 0, None, None, Will("w/t", b"bye", 1, False)),
    Publish("devices/d/messages/events/a=1", b"\x00\x01payload", 1, False, False, 7),
    Publish("t", b"", 0),
    codec.Puback(7),
    codec.Pubrec(3),
    codec.Pubrel(3),
    codec.Pubcomp(3),
    Subscribe(9, [("devices/d/modules/m/#", 1), ("$iothub/twin/res/#", 0)]),
    codec.Suback(9, [1, 0x80]),
    codec.Unsubscribe(10, ["a/+"]),
    codec.Unsuback(10),
    codec.Connack(0, True),
    codec.Pingreq(),
    codec.Pingresp(),
    codec.Disconnect(),
]


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: type(p).__name__)
def test_round_trip(packet):
    assert Decoder().feed(encode(packet)) == [packet]


def test_bytes_arriving_one_at_a_time_still_decode():
    stream = b"".join(encode(p) for p in PACKETS)
    decoder = Decoder()
    out = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i : i + 1]))
    assert out == PACKETS


def test_large_remaining_length_uses_several_bytes():
    payload = b"x" * 200_000
    packet = Publish("t", payload, 1, packet_id=1)
    data = encode(packet)
    assert data[1] & 0x80 and data[2] & 0x80  # three length bytes
    assert Decoder().feed(data) == [packet]
    assert codec.publish_bytes("t", payload, 1, 1) == data


def test_oversize_packet_is_refused_before_it_arrives():
    head = encode(Publish("t", b"x" * 300_000, 0))[:6]
    with pytest.raises(PacketTooLarge):
        Decoder().feed(head)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "remaining length"),
        (b"\x00\x00", "reserved packet type"),
        (b"\xf0\x00", "reserved packet type"),
        (b"\x82\x02\x00\x00", "packet identifier 0"),
        (b"\x80\x05\x00\x01\x00\x01a", "flags"),  # SUBSCRIBE needs flags 0010
        (b"\x36\x03\x00\x01t", "QoS 3"),
        (b"\x30\x05\x00\x03a/#", "wildcard"),
        (b"\x30\x04\x00\x02\xc3\x28", "UTF-8"),
        (b"\x30\x03\x00\x01\x00", r"U\+0000"),
        (b"\x30\x02\x00\x00", "empty topic"),
        (b"\xc0\x01\x00", "trailing"),
        (b"\x82\x06\x00\x01\x00\x01a\x03", "requested QoS"),
        (b"\x82\x02\x00\x01", "without topic filters"),
    ],
)
def test_malformed_packets_are_protocol_errors(data: bytes, reason: str):
    with pytest.raises(ProtocolError, match=reason):
        Decoder().feed(data)


def connect_bytes(flags: int, level: int = 4) -> bytes:
    variable = b"\x00\x04MQTT" + bytes([level, flags]) + b"\x00\x3c" + b"\x00\x01c"
    return bytes([0x10, len(variable)]) + variable


def test_connect_flag_rules():
    with pytest.raises(ProtocolError, match="reserved flag"):
        Decoder().feed(connect_bytes(0x01))
    with pytest.raises(ProtocolError, match="without a will"):
        Decoder().feed(connect_bytes(0x08))
    with pytest.raises(ProtocolError, match="password without user name"):
        Decoder().feed(connect_bytes(0x40))


def test_mqtt5_connect_is_an_unsupported_level():
    with pytest.raises(UnsupportedProtocolLevel) as exc:
        Decoder().feed(connect_bytes(0x02, level=5))
    assert exc.value.level == 5


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes):
    with contextlib.suppress(ProtocolError):
        Decoder(max_packet_size=1024).feed(data)


@pytest.mark.parametrize("size", [0, 1, 60, 127, 128, 500, 16_383, 16_384, 70_000])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_the_delivery_fast_path_writes_what_the_encoder_writes(size: int, qos: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    packet_id = 513 if qos else None
    expected = encode(
        Publish("devices/d/modules/m/inputs/in1/%24.cdid=d", payload, qos, True, True, packet_id)
    )
    topic = "devices/d/modules/m/inputs/in1/%24.cdid=d"
    assert codec.publish_bytes(topic, payload, qos, packet_id, dup=True, retain=True) == expected
