"""The MQTT 3.1.1 server on asyncio: connections, the CONNECT handshake, keep-alive, acknowledgements.

It moves bytes and timers and keeps MQTT's rules; what a publish or a subscription *means* is the
``Broker``'s business (the IoT Hub protocol head plugs in there). Rules it keeps, as edgeHub does:

- CONNECT first, within ``connect_timeout`` (60 s); a second CONNECT closes; protocol level 4 only (an
  MQTT 5 CONNECT gets return code 1).
- keep-alive enforced at 1.5 × the client's value, at most 10 minutes (also when the client sends 0).
- a new connection with the same client id takes the session over and closes the old one.
- a QoS 1 PUBLISH is acknowledged only when the broker's work for it is done (stored), and PUBACKs go
  out in the order the PUBLISHes came in; with ``max_pending`` (16) still being processed the server
  stops reading the socket (back-pressure) instead of dropping. If that work fails, the client is
  disconnected without a PUBACK.
- a QoS 2 PUBLISH is processed, then the connection is closed (edgeHub does not support QoS 2), unless
  ``qos2`` is on (the broker mode of IoT Edge 1.2): then QoS 2 works both ways, exactly once.
- a CONNECT with an empty client id is the broker's to accept or refuse; it may assign an id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from . import codec
from .codec import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Pingreq,
    Pingresp,
    ProtocolError,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolLevel,
    Will,
    publish_bytes,
)
from .session import Session, SessionStore, Subscription

log = logging.getLogger("edgehub_emu.mqtt")

MAX_KEEP_ALIVE_TIMEOUT: Final = 600.0


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The broker's answer to a CONNECT: return code 0 to accept, with who the client is."""

    return_code: int
    identity: Any = None
    username: Any = None
    reason: str = ""
    client_id: str | None = None  # an id the broker assigned (the client sent an empty one)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    address: Any
    tls: bool
    transport: str  # "tcp", "tls" or "websocket"


class CloseConnection(Exception):
    """Raised by the broker to close the client's connection without acknowledging the packet."""


Stored = Callable[[BaseException | None], None]
"""Called when the broker's work for a publish is done (None) or failed (the error)."""


class Broker(Protocol):
    def authenticate(self, connect: Connect, peer: PeerInfo) -> AuthResult: ...

    def connected(self, session: Session, present: bool) -> None: ...

    def publish(self, session: Session, packet: Publish, stored: Stored) -> bool:
        """Handle a client's PUBLISH. True: done, acknowledge it now. False: ``stored`` is called when the
        work it waits for (a store's commit) is done; the acknowledgement goes out then, in order."""
        ...

    def subscribe(self, session: Session, requests: list[tuple[str, int]]) -> list[int]: ...

    def subscribed(self, session: Session, granted: list[tuple[str, int]]) -> None:
        """After the SUBACK went out (retained messages follow it)."""

    def unsubscribe(self, session: Session, filters: list[str]) -> None: ...

    def disconnected(self, session: Session, graceful: bool, will: Will | None) -> None: ...


def keep_alive_timeout(keep_alive: int) -> float:
    timeout = 1.5 * keep_alive
    return MAX_KEEP_ALIVE_TIMEOUT if keep_alive == 0 or timeout > MAX_KEEP_ALIVE_TIMEOUT else timeout


WRITE_LIMIT: Final = 1 << 20
"""Bytes waiting for a client past which the hub reads nothing more from it until they drain."""
DRAIN_POLL: Final = 0.05


class MqttServer:
    """Sessions by client id, and the protocol factory for listeners."""

    def __init__(
        self,
        broker: Broker,
        *,
        session_store: SessionStore | None = None,
        max_packet_size: int = codec.MAX_PACKET_SIZE,
        connect_timeout: float = 60.0,
        max_pending: int = 16,
        qos2: bool = False,
    ) -> None:
        self.broker = broker
        self.qos2 = qos2
        self.session_store = session_store or SessionStore(None)
        self.max_packet_size = max_packet_size
        self.connect_timeout = connect_timeout
        self.max_pending = max_pending
        self.sessions: dict[str, Session] = {}
        self.connections: set[MqttConnection] = set()

    def protocol(self, transport_kind: str = "tls") -> MqttConnection:
        return MqttConnection(self, transport_kind)

    def expire_sessions(
        self, expiry: float, kept: Callable[[str], bool] = lambda _: False, now: float | None = None
    ) -> list[str]:
        """Forget persistent sessions whose client has been away longer than ``expiry`` seconds (their
        subscriptions, and what waited for them), except those ``kept`` (the deployment's identities,
        which are few and whose SDKs count on their sessions): a client id that never comes back costs
        nothing for ever. Returns the client ids forgotten."""
        now = time.monotonic() if now is None else now
        gone = [
            client_id
            for client_id, session in self.sessions.items()
            if session.connection is None
            and session.left_at is not None
            and now - session.left_at > expiry
            and not kept(client_id)
        ]
        for client_id in gone:
            session = self.sessions.pop(client_id)
            self.broker.unsubscribe(session, list(session.subscriptions))
            session.discard("the session expired")
        stale = [c for c in self.session_store.stale(expiry, now, keep=set(self.sessions)) if not kept(c)]
        for client_id in [*gone, *stale]:
            self.session_store.delete(client_id)
        if gone:
            log.info("forgot %d persistent session(s) away longer than %g s", len(gone), expiry)
        return gone

    def close_all(self, reason: str = "hub stopping") -> None:
        """Drop every connection at once: a stopping hub does not wait for slow clients' TLS goodbyes."""
        for connection in list(self.connections):
            connection.abort(reason)


class MqttConnection:
    """One client connection (TCP, TLS or a WebSocket adapter): an asyncio protocol. It does not
    subclass ``asyncio.Protocol``, so that mypyc compiles it as a native class (its attributes are
    read and written without dictionary lookups); it has every method a transport calls."""

    def __init__(self, server: MqttServer, transport_kind: str) -> None:
        self.server = server
        self.transport_kind = transport_kind
        self.transport: Any = None  # an asyncio transport, or the WebSocket adapter
        self.decoder = Decoder(server.max_packet_size)
        self.session: Session | None = None
        self.connect_packet: Connect | None = None
        self.graceful = False
        self.closing = False
        self.peer: PeerInfo | None = None
        self._pending: deque[tuple[bytes, bool]] = deque()  # (acknowledgement, waits for the broker)
        self._done = 0  # broker work finished for that many waiting acknowledgements, in order
        self._paused = False
        self._write_blocked = False  # the client does not read what we write: reading paused
        self._outbox_bytes = 0  # what ``_outbox`` holds (twin answers and acks; deliveries are windowed)
        self._drain_waiters: list[Callable[[], None]] = []
        self._last_activity = time.monotonic()
        self._keep_alive = MAX_KEEP_ALIVE_TIMEOUT
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_event_loop()
        self._outbox: list[bytes] = []

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = PeerInfo(
            transport.get_extra_info("peername"),
            transport.get_extra_info("ssl_object") is not None or self.transport_kind == "websocket",
            self.transport_kind,
        )
        self.server.connections.add(self)
        self._timer = self._loop.call_later(self.server.connect_timeout, self._connect_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._last_activity = time.monotonic()
        self.decoder.receive(data)
        self._process()

    def _process(self) -> None:
        """Handle buffered packets until none is complete, the connection closes, or back-pressure
        pauses us (what is left stays buffered until acknowledgements catch up)."""
        next_packet = self.decoder.next_packet
        while not self.closing and not self._paused and not self._write_blocked:
            if self._outbox_bytes > WRITE_LIMIT:  # answers pile up within one read: stop here
                self._block_for_writes()
                return
            try:
                packet = next_packet()
            except UnsupportedProtocolLevel as unsupported:
                self._write(codec.encode(Connack(codec.UNACCEPTABLE_PROTOCOL_VERSION)))
                self.close(str(unsupported))
                return
            except ProtocolError as bad:
                self.close(f"protocol error: {bad}")
                return
            if packet is None:
                return
            try:
                kind = type(packet)  # the two packets of every message first, without a call more
                if kind is Publish and self.session is not None:
                    self._on_publish(self.session, packet)  # type: ignore[arg-type]
                elif kind is Puback and self.session is not None:
                    self.session.acknowledge(packet.packet_id)  # type: ignore[union-attr,arg-type]
                else:
                    self._handle(packet)
            except CloseConnection as closing:
                self.close(str(closing) or "closed by the hub")
            except Exception:  # a bug must not take the hub down: close this client only
                log.exception("error handling %s from %s", type(packet).__name__, self._who())
                self.close("internal error")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        session = self.session
        if session is None or session.connection is not self:
            return
        session.connection = None
        session.left_at = time.monotonic()
        will = None if self.graceful or self.connect_packet is None else self.connect_packet.will
        if session.clean:
            session.discard("connection closed")
            if self.server.sessions.get(session.client_id) is session:
                del self.server.sessions[session.client_id]
        try:
            self.server.broker.disconnected(session, self.graceful, will)
        except Exception:
            log.exception("error after %s disconnected", session.client_id)

    def eof_received(self) -> None:
        """The client shut its side: let the transport close (as ``asyncio.Protocol`` does)."""

    def pause_writing(self) -> None:
        self._block_for_writes()

    def resume_writing(self) -> None:
        if self._drain_waiters:
            self._poll_drained()

    def backed_up(self) -> bool:
        """More than ``WRITE_LIMIT`` bytes wait for this client (it reads slower than it is sent to)."""
        return self._waiting_bytes() > WRITE_LIMIT

    def _waiting_bytes(self) -> int:
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size() + self._outbox_bytes

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once what waits for the client has drained to half the limit. (Polled: not
        every transport tells its protocol when it drains.)"""
        self._drain_waiters.append(callback)
        if len(self._drain_waiters) == 1:
            self._loop.call_later(DRAIN_POLL, self._poll_drained)

    def _poll_drained(self) -> None:
        if self.closing:
            self._drain_waiters.clear()
            return
        if not self._drain_waiters:
            return
        if self._waiting_bytes() > WRITE_LIMIT // 2:
            self._loop.call_later(DRAIN_POLL, self._poll_drained)
            return
        waiters, self._drain_waiters = self._drain_waiters, []
        for callback in waiters:
            callback()

    def _block_for_writes(self) -> None:
        """The client reads slower than we write (twin responses, deliveries piling up): read nothing
        more from it until what waits for it drains, so that what it asks for cannot grow without
        bound."""
        if self._write_blocked or self.closing:
            return
        self._write_blocked = True
        self.transport.pause_reading()
        log.info("%s reads slower than the hub writes: not reading it until it catches up", self._who())
        self.when_drained(self._unblock_reading)

    def _unblock_reading(self) -> None:
        self._write_blocked = False
        if not self._paused and self.transport is not None:
            self.transport.resume_reading()
            self._process()

    # --- helpers -----------------------------------------------------------------------------------

    def _who(self) -> str:
        return self.session.client_id if self.session else str(self.peer.address if self.peer else "?")

    def _write(self, data: bytes) -> None:
        """Queue bytes for the client; everything written in one loop iteration goes out in one call."""
        if not self._outbox:
            self._loop.call_soon(self._flush_writes)
        self._outbox.append(data)
        self._outbox_bytes += len(data)

    def _flush_writes(self) -> None:
        data, self._outbox, self._outbox_bytes = b"".join(self._outbox), [], 0
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if self.transport.get_write_buffer_size() > WRITE_LIMIT:
                self._block_for_writes()

    def send_publish(
        self, topic: str, payload: bytes, qos: int, packet_id: int | None, dup: bool, retain: bool = False
    ) -> None:
        if not self._outbox:  # _write, inlined: this runs for every delivery
            self._loop.call_soon(self._flush_writes)
        packet = publish_bytes(topic, payload, qos, packet_id, dup, retain)
        self._outbox.append(packet)
        self._outbox_bytes += len(packet)

    def send_packet(self, packet: codec.Packet) -> None:
        self._write(codec.encode(packet))

    def close(self, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        log.info("closing connection of %s: %s", self._who(), reason)
        self._flush_writes()  # a CONNACK refusal or the last PUBACKs go out before the close
        if self.transport is not None:
            self.transport.close()

    def abort(self, reason: str) -> None:
        self.closing = True
        log.info("dropping connection of %s: %s", self._who(), reason)
        if self.transport is not None:
            self.transport.abort()

    def _connect_timed_out(self) -> None:
        if self.session is None:
            self.close("no CONNECT within the connect timeout")

    def _check_keep_alive(self) -> None:
        idle = time.monotonic() - self._last_activity
        if idle >= self._keep_alive:
            self.close(f"keep-alive timeout ({self._keep_alive:g} s without a packet)")
        else:
            self._timer = self._loop.call_later(self._keep_alive - idle, self._check_keep_alive)

    # --- packets -----------------------------------------------------------------------------------

    def _handle(self, packet: codec.Packet) -> None:
        if isinstance(packet, Connect):
            if self.session is not None:
                raise CloseConnection("second CONNECT")
            self._on_connect(packet)
            return
        session = self.session
        if session is None:
            raise CloseConnection(f"{type(packet).__name__} before CONNECT")
        if isinstance(packet, Publish):
            self._on_publish(session, packet)
        elif isinstance(packet, Puback | Pubcomp):
            session.acknowledge(packet.packet_id)
        elif isinstance(packet, Pubrec) and self.server.qos2:
            session.received(packet.packet_id)
        elif isinstance(packet, Pubrel) and self.server.qos2:
            session.awaiting_release.discard(packet.packet_id)
            self._write(codec.encode(Pubcomp(packet.packet_id)))
        elif isinstance(packet, Subscribe):
            self._on_subscribe(session, packet)
        elif isinstance(packet, Unsubscribe):
            for topic_filter in packet.topics:
                session.subscriptions.pop(topic_filter, None)
            self.server.broker.unsubscribe(session, packet.topics)
            self.server.session_store.save(session)
            self._write(codec.encode(Unsuback(packet.packet_id)))
        elif isinstance(packet, Pingreq):
            self._write(codec.encode(Pingresp()))
        elif isinstance(packet, Disconnect):
            self.graceful = True
            self.close("client disconnected")
        else:
            raise CloseConnection(f"unexpected {type(packet).__name__} (QoS 2 is not supported)")

    def _on_connect(self, packet: Connect) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.connect_packet = packet
        assert self.peer is not None
        try:
            result = self.server.broker.authenticate(packet, self.peer)
        except Exception:
            log.exception("error authenticating %r", packet.client_id)
            result = AuthResult(codec.SERVER_UNAVAILABLE, reason="internal error")
        if result.return_code != codec.ACCEPTED:
            log.info("refused %r (CONNACK %d): %s", packet.client_id, result.return_code, result.reason)
            self._write(codec.encode(Connack(result.return_code)))
            self.close("connection refused")
            return
        if result.client_id is not None:
            packet = dataclasses.replace(packet, client_id=result.client_id)
            self.connect_packet = packet
        server = self.server
        existing = server.sessions.get(packet.client_id)
        if existing is not None and existing.connection is not None:
            existing.connection.close("another connection with the same client id took over")
            existing.connection = None
        if packet.clean_session:
            if existing is not None:
                existing.discard("clean session requested")
            server.session_store.delete(packet.client_id)
            session, present = Session(packet.client_id, True), False
        elif existing is not None and not existing.clean:
            session, present = existing, True
        else:
            session = Session(packet.client_id, False)
            stored = server.session_store.load(packet.client_id)
            present = stored is not None
            for topic_filter, qos in (stored or {}).items():
                session.subscriptions[topic_filter] = Subscription(qos)
        session.clean = packet.clean_session
        session.identity = result.identity
        session.username = result.username
        session.connection = self
        server.sessions[packet.client_id] = session
        self.session = session
        self._write(codec.encode(Connack(codec.ACCEPTED, present)))
        self._keep_alive = keep_alive_timeout(packet.keep_alive)
        self._timer = self._loop.call_later(self._keep_alive, self._check_keep_alive)
        server.broker.connected(session, present)
        if present:
            session.resend_inflight()
            session.flush_offline()

    def _on_subscribe(self, session: Session, packet: Subscribe) -> None:
        codes = self.server.broker.subscribe(session, packet.topics)
        for (topic_filter, _), code in zip(packet.topics, codes, strict=True):
            if code != codec.SUBACK_FAILURE:
                session.subscriptions[topic_filter] = Subscription(code)
        self.server.session_store.save(session)
        self._write(codec.encode(Suback(packet.packet_id, codes)))
        granted = [
            (f, c) for (f, _), c in zip(packet.topics, codes, strict=True) if c != codec.SUBACK_FAILURE
        ]
        self.server.broker.subscribed(session, granted)

    def _on_publish(self, session: Session, packet: Publish) -> None:
        if packet.qos == 2 and self.server.qos2:
            assert packet.packet_id is not None
            if packet.packet_id in session.awaiting_release:  # sent again before our PUBREC arrived
                again = codec.encode(Pubrec(packet.packet_id))
                if self._pending:  # in order: after the first copy's PUBREC, once it is stored
                    self._pending.append((again, False))
                else:
                    self._write(again)
                return
            session.awaiting_release.add(packet.packet_id)
        if packet.qos == 0:
            self.server.broker.publish(session, packet, _log_failure)
            return
        done = self.server.broker.publish(session, packet, self._stored)
        if packet.qos == 2 and not self.server.qos2:
            raise CloseConnection("QoS 2 PUBLISH processed; QoS 2 is not supported")
        assert packet.packet_id is not None
        ack = (_PUBACK if packet.qos == 1 else _PUBREC) + packet.packet_id.to_bytes(2, "big")

        if done and not self._pending:
            self._write(ack)
            return
        self._pending.append((ack, not done))
        if len(self._pending) >= self.server.max_pending and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _stored(self, error: BaseException | None) -> None:
        """The broker's work for the oldest waiting publish is done: acknowledge what can go, in order."""
        if self.closing:
            return
        if error is not None:
            # (the store said why, once, at ERROR: this is the consequence, per publisher)
            log.info("could not store a message from %s: %s", self._who(), error)
            self._pending.clear()
            if self.session is not None:  # QoS 2 ones not acknowledged: process them when resent
                self.session.awaiting_release.clear()
            self.close("the message could not be stored")
            return
        self._done += 1
        pending, outbox = self._pending, self._outbox
        if not outbox:
            self._loop.call_soon(self._flush_writes)
        while pending:
            ack, waits = pending[0]
            if waits:
                if not self._done:
                    break
                self._done -= 1
            pending.popleft()
            outbox.append(ack)

        if self._paused and len(pending) < self.server.max_pending:
            self._paused = False
            if not self._write_blocked:
                self.transport.resume_reading()
                self._process()


def _log_failure(error: BaseException | None) -> None:
    if error is not None:
        log.warning("a QoS 0 message was not stored: %s", error)


_PUBACK: Final = b"\x40\x02"
_PUBREC: Final = b"\x50\x02"
