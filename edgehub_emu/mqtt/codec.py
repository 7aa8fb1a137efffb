"""MQTT 3.1.1 packets and their wire format, sans-IO: bytes in, packets out; packets in, bytes out.

The decoder is strict, as a broker must be with untrusted clients: a malformed remaining length, wrong
fixed-header flags, invalid UTF-8 or U+0000 in a string, a wildcard in a PUBLISH topic, a zero packet
id, a packet larger than the limit — each is a ``ProtocolError`` (the connection is closed); nothing
else escapes. The size limit is checked as soon as the remaining length is known, so an oversize
packet is refused before it is buffered.

This module knows nothing of sockets, sessions or IoT Hub.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

MAX_PACKET_SIZE: Final = 262_144
"""edgeHub's default ``MaxInboundMessageSize``: larger packets close the connection."""

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

# CONNACK return codes
ACCEPTED: Final = 0
UNACCEPTABLE_PROTOCOL_VERSION: Final = 1
IDENTIFIER_REJECTED: Final = 2
SERVER_UNAVAILABLE: Final = 3
BAD_USERNAME_OR_PASSWORD: Final = 4
NOT_AUTHORIZED: Final = 5

SUBACK_FAILURE: Final = 0x80


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed."""


class PacketTooLarge(ProtocolError):
    """A packet's remaining length exceeds the limit."""


class UnsupportedProtocolLevel(ProtocolError):
    """A CONNECT for a protocol level other than 4 (3.1.1): answer CONNACK 1, then close."""

    def __init__(self, level: int) -> None:
        super().__init__(f"unsupported protocol level {level}")
        self.level = level


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    clean_session: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    protocol_level: int = 4


@dataclass(frozen=True, slots=True)
class Connack:
    return_code: int
    session_present: bool = False


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None


@dataclass(slots=True)  # not frozen: one is made per message, and frozen ones cost more to make
class Puback:
    packet_id: int


@dataclass(slots=True)
class Pubrec:
    packet_id: int


@dataclass(slots=True)
class Pubrel:
    packet_id: int


@dataclass(slots=True)
class Pubcomp:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    topics: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    return_codes: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topics: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Unsuback:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Pingreq:
    pass


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


Packet = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
)

# Required low nibble of the fixed header, per packet type (PUBLISH is checked separately).
_FLAGS: Final = {
    CONNECT: 0,
    CONNACK: 0,
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 2,
    PUBCOMP: 0,
    SUBSCRIBE: 2,
    SUBACK: 0,
    UNSUBSCRIBE: 2,
    UNSUBACK: 0,
    PINGREQ: 0,
    PINGRESP: 0,
    DISCONNECT: 0,
}


# --- decoding -------------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ProtocolError("packet ends early")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise ProtocolError("packet ends early")
        (value,) = struct.unpack_from("!H", self.data, self.pos)
        self.pos += 2
        return value

    def binary(self) -> bytes:
        n = self.u16()
        if self.pos + n > len(self.data):
            raise ProtocolError("length field runs past the end of the packet")
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(value)

    def string(self, what: str) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{what} is not valid UTF-8") from None
        if "\x00" in text:
            raise ProtocolError(f"{what} contains U+0000")
        return text

    def rest(self) -> bytes:
        value = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return value


def _packet_id(reader: _Reader) -> int:
    pid = reader.u16()
    if pid == 0:
        raise ProtocolError("packet identifier 0")
    return pid


def _decode_connect(r: _Reader) -> Connect:
    name = r.string("protocol name")
    level = r.byte()
    if name not in ("MQTT", "MQIsdp"):
        raise ProtocolError(f"unknown protocol name {name!r}")
    if level != 4:
        raise UnsupportedProtocolLevel(level)
    flags = r.byte()
    if flags & 0x01:
        raise ProtocolError("CONNECT reserved flag is set")
    clean = bool(flags & 0x02)
    will_flag = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if will_qos == 3:
        raise ProtocolError("will QoS 3")
    if not will_flag and (will_qos or will_retain):
        raise ProtocolError("will QoS or retain set without a will")
    if has_password and not has_username:
        raise ProtocolError("password without user name")
    keep_alive = r.u16()
    client_id = r.string("client identifier")
    will = None
    if will_flag:
        topic = r.string("will topic")
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolError("invalid will topic")
        will = Will(topic, r.binary(), will_qos, will_retain)
    username = r.string("user name") if has_username else None
    password = r.binary() if has_password else None
    if r.remaining():
        raise ProtocolError("CONNECT has trailing bytes")
    return Connect(client_id, clean, keep_alive, username, password, will, level)


def _decode_subscribe(r: _Reader) -> Subscribe:
    pid = _packet_id(r)
    topics = []
    while r.remaining():
        topic = r.string("topic filter")
        options = r.byte()
        if options & 0xFC or options & 0x03 == 3:
            raise ProtocolError("invalid requested QoS in SUBSCRIBE")
        topics.append((topic, options))
    if not topics:
        raise ProtocolError("SUBSCRIBE without topic filters")
    return Subscribe(pid, topics)


def _decode_unsubscribe(r: _Reader) -> Unsubscribe:
    pid = _packet_id(r)
    topics = []
    while r.remaining():
        topics.append(r.string("topic filter"))
    if not topics:
        raise ProtocolError("UNSUBSCRIBE without topic filters")
    return Unsubscribe(pid, topics)


_ACKNOWLEDGEMENTS: dict[int, Callable[[int], Packet]] = {
    PUBACK: Puback,
    PUBREC: Pubrec,
    PUBREL: Pubrel,
    PUBCOMP: Pubcomp,
    UNSUBACK: Unsuback,
}
_EMPTY: dict[int, Callable[[], Packet]] = {PINGREQ: Pingreq, PINGRESP: Pingresp, DISCONNECT: Disconnect}


def _decode_body(kind: int, flags: int, body: bytes) -> Packet:
    """Every packet but PUBLISH, which ``Decoder.next_packet`` decodes on its own path."""
    if kind not in _FLAGS:
        raise ProtocolError(f"reserved packet type {kind}")
    if flags != _FLAGS[kind]:
        raise ProtocolError(f"invalid fixed-header flags {flags:#x} for packet type {kind}")
    r = _Reader(body)
    packet: Packet
    if kind == CONNECT:
        return _decode_connect(r)
    if kind == CONNACK:
        ack_flags = r.byte()
        if ack_flags & 0xFE:
            raise ProtocolError("CONNACK reserved flags set")
        packet = Connack(r.byte(), bool(ack_flags & 1))
    elif kind in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        pid = _packet_id(r)
        packet = _ACKNOWLEDGEMENTS[kind](pid)
    elif kind == SUBSCRIBE:
        return _decode_subscribe(r)
    elif kind == SUBACK:
        pid = _packet_id(r)
        packet = Suback(pid, list(r.rest()))
    elif kind == UNSUBSCRIBE:
        return _decode_unsubscribe(r)
    else:
        packet = _EMPTY[kind]()
    if r.remaining():
        raise ProtocolError(f"packet type {kind} has trailing bytes")
    return packet


class Decoder:
    """Incremental decoder. ``receive(data)`` buffers bytes; ``next_packet()`` returns the next complete
    packet or None, and raises ProtocolError at the first bad one (packets before it are returned
    first). ``feed(data)`` does both and returns every complete packet."""

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        self.max_packet_size = max_packet_size
        self._buffer = bytearray()
        self._pos = 0

    def receive(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_packet(self) -> Packet | None:
        buffer = self._buffer
        pos = self._pos
        size = len(buffer)
        if size - pos < 2:
            return None
        header = buffer[pos]
        length = buffer[pos + 1]
        if length < 0x80:  # remaining lengths of one or two bytes (packets up to 16 KB) on a short path
            start = pos + 2
        elif size - pos > 2 and buffer[pos + 2] < 0x80:
            length = length & 0x7F | buffer[pos + 2] << 7
            start = pos + 3
        else:
            found = self._length(buffer, pos, size)
            if found is None:
                return None
            start, length = found
        if length > self.max_packet_size:
            raise PacketTooLarge(f"packet of {length} bytes exceeds the limit of {self.max_packet_size}")
        end = start + length
        if end > size:
            return None
        self._pos = end
        if header == 0x40 and length == 2:  # PUBACK: one for every message delivered
            packet_id = buffer[start] << 8 | buffer[start + 1]
            if packet_id == 0:
                raise ProtocolError("packet identifier 0")
            return Puback(packet_id)
        if header & 0xF0 == 0x30:  # PUBLISH: decoded here, without copying the buffer first
            qos = (header >> 1) & 0x03
            if qos == 3:
                raise ProtocolError("PUBLISH with QoS 3")
            if length < 2:
                raise ProtocolError("packet ends early")
            topic_end = start + 2 + (buffer[start] << 8 | buffer[start + 1])
            if topic_end > end:
                raise ProtocolError("length field runs past the end of the packet")
            try:
                topic = buffer[start + 2 : topic_end].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("topic name is not valid UTF-8") from None
            if not topic:
                raise ProtocolError("empty topic name")
            if "+" in topic or "#" in topic or "\x00" in topic:
                raise ProtocolError(f"invalid PUBLISH topic {topic!r} (a wildcard or U+0000)")
            publish_id: int | None = None
            if qos:
                if topic_end + 2 > end:
                    raise ProtocolError("packet ends early")
                publish_id = buffer[topic_end] << 8 | buffer[topic_end + 1]
                if publish_id == 0:
                    raise ProtocolError("packet identifier 0")
                topic_end += 2
            return Publish(
                topic, bytes(buffer[topic_end:end]), qos, bool(header & 0x01), bool(header & 0x08), publish_id
            )

        return _decode_body(header >> 4, header & 0x0F, bytes(buffer[start:end]))

    def _length(self, buffer: bytearray, pos: int, size: int) -> tuple[int, int] | None:
        """(where the body starts, its length) of the packet at ``pos``; None while it is incomplete."""
        length = 0
        multiplier = 1
        index = pos + 1
        for _ in range(4):
            if index >= size:
                return None
            digit = buffer[index]
            index += 1
            length += (digit & 0x7F) * multiplier
            if not digit & 0x80:
                if length > self.max_packet_size:
                    raise PacketTooLarge(
                        f"packet of {length} bytes exceeds the limit of {self.max_packet_size}"
                    )
                return index, length
            multiplier *= 128
        raise ProtocolError("malformed remaining length (more than four bytes)")

    def feed(self, data: bytes) -> list[Packet]:
        self.receive(data)
        packets: list[Packet] = []
        while (packet := self.next_packet()) is not None:
            packets.append(packet)
        return packets


# --- encoding -------------------------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit = n % 128
        n //= 128
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _fixed(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _remaining_length(len(body)) + body


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def _bin(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def encode(packet: Packet) -> bytes:
    """Bytes of any packet (the server sends some; tests and tools send the others)."""
    if isinstance(packet, Publish):
        flags = packet.qos << 1 | (0x08 if packet.dup else 0) | (0x01 if packet.retain else 0)
        topic = packet.topic.encode("utf-8")
        head = struct.pack("!H", len(topic)) + topic
        if packet.qos:
            head += struct.pack("!H", packet.packet_id or 0)
        return _fixed(PUBLISH, flags, head + packet.payload)
    if isinstance(packet, Puback):
        return bytes((PUBACK << 4, 2)) + struct.pack("!H", packet.packet_id)
    if isinstance(packet, Connack):
        return bytes((CONNACK << 4, 2, 1 if packet.session_present else 0, packet.return_code))
    if isinstance(packet, Suback):
        return _fixed(SUBACK, 0, struct.pack("!H", packet.packet_id) + bytes(packet.return_codes))
    if isinstance(packet, Unsuback):
        return _fixed(UNSUBACK, 0, struct.pack("!H", packet.packet_id))
    if isinstance(packet, Pingresp):
        return bytes((PINGRESP << 4, 0))
    if isinstance(packet, Pingreq):
        return bytes((PINGREQ << 4, 0))
    if isinstance(packet, Disconnect):
        return bytes((DISCONNECT << 4, 0))
    if isinstance(packet, Pubrec):
        return _fixed(PUBREC, 0, struct.pack("!H", packet.packet_id))
    if isinstance(packet, Pubrel):
        return _fixed(PUBREL, 2, struct.pack("!H", packet.packet_id))
    if isinstance(packet, Pubcomp):
        return _fixed(PUBCOMP, 0, struct.pack("!H", packet.packet_id))
    if isinstance(packet, Subscribe):
        body = struct.pack("!H", packet.packet_id) + b"".join(_str(t) + bytes([q]) for t, q in packet.topics)
        return _fixed(SUBSCRIBE, 2, body)
    if isinstance(packet, Unsubscribe):
        body = struct.pack("!H", packet.packet_id) + b"".join(_str(t) for t in packet.topics)
        return _fixed(UNSUBSCRIBE, 2, body)
    if isinstance(packet, Connect):
        flags = 0x02 if packet.clean_session else 0
        payload = _str(packet.client_id)
        if packet.will is not None:
            flags |= 0x04 | packet.will.qos << 3 | (0x20 if packet.will.retain else 0)
            payload += _str(packet.will.topic) + _bin(packet.will.payload)
        if packet.username is not None:
            flags |= 0x80
            payload += _str(packet.username)
        if packet.password is not None:
            flags |= 0x40
            payload += _bin(packet.password)
        variable = _str("MQTT") + bytes([packet.protocol_level, flags]) + struct.pack("!H", packet.keep_alive)
        return _fixed(CONNECT, 0, variable + payload)
    raise TypeError(f"cannot encode {packet!r}")  # pragma: no cover - every packet type is handled


def publish_bytes(
    topic: str, payload: bytes, qos: int, packet_id: int | None, dup: bool = False, retain: bool = False
) -> bytes:
    """The hot path of delivery: a PUBLISH without building a Publish object."""
    raw = topic.encode("utf-8")
    topic_length = len(raw)
    body_length = 2 + topic_length + len(payload)
    header = PUBLISH << 4 | qos << 1 | (0x08 if dup else 0) | (0x01 if retain else 0)
    if qos:
        body_length += 2
        tail = (packet_id or 0).to_bytes(2, "big") + payload
    else:
        tail = payload
    if body_length < 0x80:
        fixed = bytes((header, body_length))
    elif body_length < 0x4000:
        fixed = bytes((header, body_length & 0x7F | 0x80, body_length >> 7))
    else:
        fixed = bytes((header,)) + _remaining_length(body_length)
    return b"".join((fixed, topic_length.to_bytes(2, "big"), raw, tail))
