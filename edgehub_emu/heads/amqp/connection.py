"""One AMQP client connection: the SASL layer, then proton's protocol engine driven from asyncio.

Bytes from the socket go through ``SaslLayer`` and then into proton's transport; proton's collector
yields events (open, attach, flow, delivery, detach, close) that this class answers; whatever proton
then has to send is written at once. Work the core does later (a message committed, a delivery to
send) calls ``kick()``, which runs the engine once more in the same loop iteration. TLS is asyncio's,
as for MQTT; for AMQP over WebSocket the same protocol is fed the binary frames.

The server's OPEN is edgeHub's: container ``DeviceGateway_<hex>``, idle time-out 240 s, max frame
size 64 KiB, channel max 8191. Idle clients are timed out by proton's ``tick``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from cproton_ffi import ffi, lib  # the collector read by event type (see ``_events``)
from proton import Collector, Condition, Connection, Delivery, Endpoint, Link, Session, Transport

from .links import Links
from .sasl import Principal, SaslLayer, Stage

if TYPE_CHECKING:
    from .head import AmqpHead

log = logging.getLogger("edgehub_emu.amqp")

IDLE_TIMEOUT = 240.0
MAX_FRAME = 65536
CHANNEL_MAX = 8191
WRITE_BUFFER_LIMIT = 1 << 20
"""Past this many bytes waiting for a slow client, the hub sends it nothing more until they drain."""

_ANSWERED = frozenset(
    {
        lib.PN_DELIVERY,
        lib.PN_LINK_FLOW,
        lib.PN_LINK_REMOTE_OPEN,
        lib.PN_LINK_REMOTE_CLOSE,
        lib.PN_LINK_REMOTE_DETACH,
        lib.PN_SESSION_REMOTE_OPEN,
        lib.PN_SESSION_REMOTE_CLOSE,
        lib.PN_CONNECTION_REMOTE_OPEN,
        lib.PN_CONNECTION_REMOTE_CLOSE,
        lib.PN_TRANSPORT_TAIL_CLOSED,
        lib.PN_TRANSPORT_ERROR,
    }
)


class AmqpConnection(asyncio.Protocol):
    def __init__(self, head: AmqpHead, transport_kind: str = "amqp") -> None:
        self.head = head
        self.transport_kind = transport_kind  # "amqp" (TLS) or "amqp-ws"
        self.transport: Any = None
        self.peer = "?"
        self.sasl = SaslLayer(head.check_plain)
        self.engine: Transport | None = None
        self.pconn: Connection | None = None
        self.collector = Collector()
        self._collector = self.collector._impl  # the C collector, read directly by ``_events``
        self.links = Links(self)
        self.closed = False
        self._kicked = False
        self._tick: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._open_timer: asyncio.TimerHandle | None = None

    @property
    def principal(self) -> Principal | None:
        return self.sasl.principal

    # --- the socket ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "?")
        transport.set_write_buffer_limits(high=WRITE_BUFFER_LIMIT)  # type: ignore[attr-defined]
        self._open_timer = self._loop.call_later(self.head.connect_timeout, self._open_timed_out)
        self.head.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.engine is None:
            reply, data = self.sasl.feed(data)
            if reply:
                self.transport.write(reply)
            if self.sasl.stage is Stage.FAILED:
                log.warning("refused an AMQP connection from %s: %s", self.peer, self.sasl.failure)
                self._abort()
                return
            if self.sasl.stage is not Stage.DONE:
                return
            self._start_engine()
        self._push(data)
        self._run()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.head.connections.discard(self)
        for timer in (self._tick, self._open_timer):
            if timer is not None:
                timer.cancel()
        self.links.lost(graceful=self.pconn is not None and bool(self.pconn.state & Endpoint.REMOTE_CLOSED))

    def backed_up(self) -> bool:
        """The client is not reading what was written: send it nothing more for now."""
        transport = self.transport
        return transport is None or transport.get_write_buffer_size() >= WRITE_BUFFER_LIMIT

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        self.links.drained()

    # --- the engine ------------------------------------------------------------------------------------

    def _start_engine(self) -> None:
        self.engine = Transport(Transport.SERVER)
        self.engine.idle_timeout = IDLE_TIMEOUT
        self.engine.max_frame_size = MAX_FRAME
        self.engine.channel_max = CHANNEL_MAX
        self.pconn = Connection()
        self.pconn.container = f"DeviceGateway_{uuid.uuid4().hex}"
        self.pconn.collect(self.collector)
        self.engine.bind(self.pconn)

    def _push(self, data: bytes) -> None:
        assert self.engine is not None
        view = memoryview(data)
        while view:
            capacity = self.engine.capacity()
            if capacity < 0:  # the engine stopped reading (it closed the connection)
                return
            if capacity == 0:
                self._run()
                if self.engine.capacity() == 0:
                    return
                continue
            self.engine.push(bytes(view[:capacity]))
            view = view[capacity:]
            self._events()

    def kick(self) -> None:
        """Run the engine once more in this loop iteration (work the core did outside a read)."""
        if not self._kicked and not self.closed:
            self._kicked = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._kicked = False
        if self.closed or self.engine is None:
            return
        self._events()
        self._write()
        self._schedule_tick()

    def _write(self) -> None:
        assert self.engine is not None
        while True:
            pending = self.engine.pending()
            if pending < 0:  # proton wrote its last frame
                if self.engine.capacity() < 0:  # and read the client's last: done
                    self.transport.close()
                    self.closed = True
                return  # the client has yet to answer our CLOSE (``close`` times it out)
            if pending == 0:
                return
            self.transport.write(bytes(self.engine.peek(pending)))
            self.engine.pop(pending)

    def _schedule_tick(self) -> None:
        assert self.engine is not None
        if self._tick is not None:
            self._tick.cancel()
        deadline = self.engine.tick(time.monotonic())
        if deadline:
            self._tick = self._loop.call_later(max(0.0, deadline - time.monotonic()), self._run)

    def _events(self) -> None:
        """Answer what proton collected. Events are read from the collector by type and only what this
        head answers is wrapped, and only in the object it needs: proton's ``Event`` wraps the delivery,
        link, session, connection and transport of every event, most of the CPU a message costs."""
        collector = self._collector
        while (event := lib.pn_collector_peek(collector)) != ffi.NULL:
            kind = lib.pn_event_type(event)
            if kind in _ANSWERED:
                try:
                    self._dispatch(kind, event)
                except Exception:  # a bug must not take the hub down: close this client only
                    log.exception("error handling AMQP event %d from %s", kind, self.peer)
                    self.close("internal error", "amqp:internal-error")
            lib.pn_collector_pop(collector)

    def _dispatch(self, kind: int, event: Any) -> None:
        if kind == lib.PN_DELIVERY:
            self.links.delivery(Delivery.wrap(lib.pn_event_delivery(event)))
        elif kind == lib.PN_LINK_FLOW:
            self.links.flow(Link.wrap(lib.pn_event_link(event)))
        elif kind == lib.PN_LINK_REMOTE_OPEN:
            self.links.attach(Link.wrap(lib.pn_event_link(event)))
        elif kind == lib.PN_LINK_REMOTE_CLOSE or kind == lib.PN_LINK_REMOTE_DETACH:
            self.links.detach(Link.wrap(lib.pn_event_link(event)))
        elif kind == lib.PN_SESSION_REMOTE_OPEN:
            Session.wrap(lib.pn_event_session(event)).open()
        elif kind == lib.PN_SESSION_REMOTE_CLOSE:
            Session.wrap(lib.pn_event_session(event)).close()
        elif kind == lib.PN_CONNECTION_REMOTE_OPEN:
            self._opened(Connection.wrap(lib.pn_event_connection(event)))
        elif kind == lib.PN_CONNECTION_REMOTE_CLOSE:
            Connection.wrap(lib.pn_event_connection(event)).close()
        elif kind == lib.PN_TRANSPORT_TAIL_CLOSED:
            self._tail_closed()
        elif kind == lib.PN_TRANSPORT_ERROR:
            assert self.engine is not None
            condition = self.engine.condition
            log.warning(
                "AMQP connection from %s failed: %s", self.peer, condition.description if condition else "?"
            )

    def _opened(self, connection: Connection) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        assert self.engine is not None
        remote = self.engine.remote_idle_timeout
        if 0 < remote < 5:
            connection.condition = Condition("amqp:invalid-field", "idle-time-out below 5000 ms")
            connection.open()
            connection.close()
            return
        connection.open()

    # --- closing -----------------------------------------------------------------------------------------

    def _tail_closed(self) -> None:
        """proton stopped reading: a frame it could not decode (a graceful CLOSE was answered already)."""
        if self.pconn is None or self.pconn.state & Endpoint.LOCAL_CLOSED:
            return
        log.warning("closed the AMQP connection from %s: it sent a frame that is not AMQP 1.0", self.peer)
        self.pconn.condition = Condition("amqp:connection:framing-error", "a frame that is not AMQP 1.0")
        if self.pconn.state & Endpoint.LOCAL_UNINIT:
            self.pconn.open()
        self.pconn.close()
        self.kick()
        self._loop.call_later(2.0, self._abort)

    def close(self, reason: str, condition: str | None = None) -> None:
        """Close the AMQP connection (CLOSE, with an error condition if given), then the socket."""
        if self.closed:
            return
        log.info("closing the AMQP connection from %s: %s", self.peer, reason)
        if self.pconn is None:
            self._abort()
            return
        if condition is not None:
            self.pconn.condition = Condition(condition, reason)
        # As the .NET AMQP library closes a connection: its links (DETACH), its sessions (END), then
        # CLOSE. The Node SDK waits for its links' DETACH and never reconnects without them.
        link = self.pconn.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None:
            link.close()
            link = link.next(Endpoint.LOCAL_ACTIVE)
        session = self.pconn.session_head(Endpoint.LOCAL_ACTIVE)
        while session is not None:
            session.close()
            session = session.next(Endpoint.LOCAL_ACTIVE)
        self.pconn.close()
        self._run()
        self._loop.call_later(2.0, self._abort)  # a client that never answers the CLOSE

    def abort(self) -> None:
        """Drop the socket at once."""
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _open_timed_out(self) -> None:
        self._open_timer = None
        log.warning(
            "closed the AMQP connection from %s: no OPEN within %g s", self.peer, self.head.connect_timeout
        )
        self._abort()
