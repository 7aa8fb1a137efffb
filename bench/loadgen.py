"""A load generator that costs about a microsecond per message, so that what is measured is the broker.

paho spends 65–84 µs of its own CPU per message; on two cores shared with the broker that hides most
of the broker's cost. This generator runs every publisher and subscriber in one process on one event
loop, with packets encoded once: a publisher keeps ``window`` QoS 1 PUBLISHes outstanding and answers
each batch of PUBACKs with as many new PUBLISHes (the packet id patched into a pre-encoded packet); a
subscriber splits what it reads into packets by their fixed header only and answers every QoS 1
PUBLISH with a PUBACK, all acknowledgements of one read in one write.

``run_pairs(targets, count, size)`` reports messages per second over all pairs, and the generator's own
CPU per message (from ``getrusage``); the caller measures the broker's CPU (``harness.cpu_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import ssl
import statistics
import struct
import time
from dataclasses import dataclass
from typing import Any

from edgehub_emu.mqtt.codec import Connect, Subscribe, encode

from .harness import Target

PUBACK = 0x40
PUBLISH_QOS1 = 0x32


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Client(asyncio.Protocol):
    """Connects, then hands every read to ``received``; ``ready`` is set once CONNACK (and SUBACK) came."""

    def __init__(self, connect: bytes, subscribe: bytes | None) -> None:
        self.connect_packet = connect
        self.subscribe_packet = subscribe
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._handshake = bytearray()
        self._expect = 4 + (5 if subscribe else 0)  # CONNACK, then SUBACK with one code

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        data = self.connect_packet + (self.subscribe_packet or b"")
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self._handshake += data
            if len(self._handshake) < self._expect:
                return
            if self._handshake[0] != 0x20 or self._handshake[3] != 0:
                self.ready.set_exception(ConnectionError(f"refused: {bytes(self._handshake[:4])!r}"))
                return
            rest = bytes(self._handshake[self._expect :])
            self.ready.set_result(None)
            if rest:
                self.received(rest)
            return
        self.received(data)

    def received(self, data: bytes) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection closed during the handshake"))


class Publisher(_Client):
    def __init__(
        self, connect: bytes, topic: str, payload: bytes, count: int, window: int, backlog: int | None = None
    ) -> None:
        super().__init__(connect, None)
        encoded_topic = topic.encode()
        variable = struct.pack(">H", len(encoded_topic)) + encoded_topic
        body_length = len(variable) + 2 + len(payload)
        self._head = bytes([PUBLISH_QOS1]) + _remaining_length(body_length) + variable
        self._payload = payload
        self.count = count
        self.window = window
        self.backlog = backlog
        self.subscriber: Subscriber | None = None
        self.sent = 0
        self.acked = 0
        self.began = 0.0
        self._next_id = 0
        self._partial = 0
        self._owed = 0  # acknowledged, not yet replaced because the backlog was full

    def _packets(self, n: int) -> bytes:
        head, payload, out = self._head, self._payload, []
        for _ in range(n):
            self._next_id = self._next_id % 65535 + 1
            out.append(head + self._next_id.to_bytes(2, "big") + payload)
        self.sent += n
        return b"".join(out)

    def send_stamped(self) -> None:
        """One PUBLISH whose first 8 payload bytes are the time it is written (for latency)."""
        self._next_id = self._next_id % 65535 + 1
        stamp = struct.pack(">d", time.perf_counter())
        assert self.transport is not None
        self.transport.write(self._head + self._next_id.to_bytes(2, "big") + stamp + self._payload[8:])
        self.sent += 1

    def start(self) -> None:
        self.began = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self._packets(min(self.window, self.count)))

    def received(self, data: bytes) -> None:
        # Only PUBACKs (4 bytes each) come to a publisher.
        total = self._partial + len(data)
        acks, self._partial = divmod(total, 4)
        self.acked += acks
        self._owed += acks
        self.send_owed()

    def send_owed(self) -> None:
        """Replace acknowledged publishes, as far as the end-to-end backlog allows."""
        more = min(self._owed, self.count - self.sent)
        if self.backlog is not None and self.subscriber is not None:
            more = min(more, self.backlog - (self.sent - self.subscriber.received_count))
        if more > 0 and self.transport is not None:
            self._owed -= more
            self.transport.write(self._packets(more))


class Subscriber(_Client):
    def __init__(self, connect: bytes, subscribe: bytes, count: int) -> None:
        super().__init__(connect, subscribe)
        self.count = count
        self.received_count = 0
        self.publisher: Publisher | None = None
        self.last = 0.0
        self.done = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self.stamps: list[float] | None = None  # latencies, when the publisher stamps its payloads

    def received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        pos = 0
        acks = []
        count = 0
        stamps, now = self.stamps, time.perf_counter()
        while pos + 2 <= end:
            first = buffer[pos]
            # remaining length, 1 to 4 bytes
            length = 0
            shift = 0
            index = pos + 1
            while True:
                if index >= end:
                    length = -1
                    break
                byte = buffer[index]
                length |= (byte & 0x7F) << shift
                index += 1
                if not byte & 0x80:
                    break
                shift += 7
            if length < 0 or index + length > end:
                break
            if first & 0xF0 == 0x30 and first & 0x06:
                topic_length = (buffer[index] << 8) | buffer[index + 1]
                at = index + 2 + topic_length
                acks.append(buffer[at : at + 2])
                count += 1
                if stamps is not None:
                    stamps.append(now - struct.unpack_from(">d", buffer, at + 2)[0])
            elif first & 0xF0 == 0x30:
                count += 1
            pos = index + length
        self._buffer = buffer[pos:] if pos < end else b""
        if acks and self.transport is not None:
            self.transport.write(b"".join(b"\x40\x02" + a for a in acks))
        if count:
            self.received_count += count
            self.last = time.perf_counter()
            if self.received_count >= self.count and not self.done.done():
                self.done.set_result(None)
            if self.publisher is not None:
                self.publisher.send_owed()


@dataclass(frozen=True)
class LoadResult:
    messages: int
    seconds: float
    generator_cpu_us: float  # this process's CPU per message

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def _connect_bytes(identity: tuple[str, str, str]) -> bytes:
    client_id, username, password = identity
    return encode(Connect(client_id, True, 600, username or None, password.encode() if password else None))


async def _open(target: Target, protocol: _Client) -> _Client:
    loop = asyncio.get_running_loop()
    tls = ssl.create_default_context(cafile=target.ca_file) if target.ca_file else None
    await loop.create_connection(
        lambda: protocol, target.host, target.port, ssl=tls, server_hostname=target.host if tls else None
    )
    await asyncio.wait_for(protocol.ready, 10)
    return protocol


async def _run(
    targets: list[Target], count: int, size: int, window: int, timeout: float, backlog: int | None
) -> LoadResult:
    payload = b"x" * size
    subscribers = [
        await _open(
            t,
            Subscriber(_connect_bytes(t.subscriber), encode(Subscribe(1, [(t.subscribe_filter, 1)])), count),
        )
        for t in targets
    ]
    publishers = [
        await _open(
            t, Publisher(_connect_bytes(t.publisher), t.publish_topic, payload, count, window, backlog)
        )
        for t in targets
    ]
    for publisher, subscriber in zip(publishers, subscribers, strict=True):
        publisher.subscriber, subscriber.publisher = subscriber, publisher  # type: ignore[assignment]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    began = time.perf_counter()
    for p in publishers:
        p.start()  # type: ignore[attr-defined]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.done for s in subscribers)), timeout)  # type: ignore[attr-defined]

    usage = resource.getrusage(resource.RUSAGE_SELF)
    received = sum(s.received_count for s in subscribers)  # type: ignore[attr-defined]
    ended = max((s.last for s in subscribers), default=began)  # type: ignore[attr-defined]
    for c in [*publishers, *subscribers]:
        if c.transport is not None:
            c.transport.close()
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    return LoadResult(received, ended - began, cpu / max(received, 1) * 1e6)


async def _latency(target: Target, rate: int, seconds: float) -> tuple[float, float]:
    total = int(rate * seconds)
    subscribe = encode(Subscribe(1, [(target.subscribe_filter, 1)]))
    subscriber = Subscriber(_connect_bytes(target.subscriber), subscribe, total)
    subscriber.stamps = []
    await _open(target, subscriber)
    publisher = Publisher(_connect_bytes(target.publisher), target.publish_topic, b"\0" * 64, 0, 0)
    await _open(target, publisher)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        now = time.perf_counter()
        if now < due:
            await asyncio.sleep(due - now)
        publisher.send_stamped()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(subscriber.done, 10)
    for c in (publisher, subscriber):
        if c.transport is not None:
            c.transport.close()
    ordered = sorted(subscriber.stamps)
    if not ordered:
        return float("nan"), float("nan")
    return statistics.median(ordered) * 1000, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000


def latency(target: Target, rate: int = 1000, seconds: float = 4.0) -> tuple[float, float]:
    """p50 and p99 publish-to-delivery latency in ms at a steady ``rate``, each PUBLISH stamped with the
    time it is written and each delivery timed when it is read (one pair, 64-byte payloads)."""
    return _run_loop(_latency(target, rate, seconds))


def _run_loop(coroutine: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def run_pairs(
    targets: list[Target],
    count: int,
    size: int = 64,
    window: int = 256,
    timeout: float = 120,
    backlog: int | None = 1000,
) -> LoadResult:
    """``count`` QoS 1 messages through each target's publisher/subscriber pair, all at once; at most
    ``backlog`` messages of a pair published and not yet received (as a real source, which does not
    outrun its consumer forever), so that a store-and-forward hub is measured at the rate it sustains."""
    result: LoadResult = _run_loop(_run(targets, count, size, window, timeout, backlog))
    return result
