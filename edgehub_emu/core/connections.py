"""Who is connected, with which features, and the device proxy that reaches each of them.

edgeHub's connection manager: a protocol head that authenticated a client registers it here with a
*device proxy* (its outbound side: send to an input, push a desired patch, send a method request or
C2D, close) and the features its subscriptions turn on (module messages, methods, desired-property
updates, C2D, twin responses). Everything else in the hub reaches a client only through its proxy, so
nothing here or downstream knows a protocol. One identity has one connection: a new one, over any
protocol, closes the old (edgeHub's ``MultipleConnectionsException``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..identity import Identity
from ..routing import Message

log = logging.getLogger("edgehub_emu.hub")

TAKEOVER_WINDOW = 10.0
"""Takeovers of one identity within this many seconds mean two clients share it: warned once a window."""
TAKEOVERS_WARNED = 3


class SendOutcome(enum.Enum):
    SENT = "sent"  # on the wire; the proxy calls ``settle`` when the client acknowledges (or is gone)
    DELIVERED = "delivered"  # done already (an unacknowledged QoS 0 delivery)
    REJECTED = "rejected"  # the client can never take it (no subscription matches the input): drop it
    UNAVAILABLE = "unavailable"  # no connection to send on right now: keep it queued


Settle = Callable[[Any, bool], None]
"""``settle(token, delivered)``: the client acknowledged the delivery sent with ``token``, or the
connection it went out on is gone (``delivered`` False: send it again)."""


class DeviceProxy(Protocol):
    """A connected client's outbound side, implemented by each protocol head."""

    transport: str  # what the client connected over, for status: "mqtt", "mqtt-ws", "amqp", ...

    def send_to_input(self, input_name: str, message: Message, token: Any, settle: Settle) -> SendOutcome:
        """Deliver a routed message to a module input."""
        ...

    def abandon(self, tokens: Collection[Any]) -> None:
        """Deliveries that timed out: forget them (a late acknowledgement is ignored)."""
        ...

    def push_desired(self, version: int, patch: bytes) -> None:
        """A desired-properties patch (JSON, with its ``$version`` too), to a client that listens."""
        ...

    def send_method_request(self, method_name: str, request_id: str, payload: bytes) -> bool:
        """A direct-method request; False if the client cannot receive it (no matching subscription)."""
        ...

    def send_c2d(self, message: Message) -> bool:
        """A cloud-to-device message; False if the client cannot receive it."""
        ...

    def close(self, reason: str) -> None: ...

    def subscriptions(self) -> list[str]:
        """What the client subscribed to, in its protocol's terms (for status)."""
        ...


@dataclass(slots=True, eq=False)
class Connection:
    identity: Identity
    proxy: DeviceProxy
    features: set[str]
    token_expiry: float
    since: float = field(default_factory=time.time)


Observer = Callable[[str], None]
"""Told the id of an identity that connected, disconnected or changed its features."""


class ConnectionManager:
    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}
        self._observers: list[Observer] = []
        self._ready_observers: list[Observer] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._takeovers: dict[str, list[float]] = {}  # identity -> recent takeover times
        self._takeover_warned: dict[str, float] = {}

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def observe_ready(self, observer: Observer) -> None:
        """``observer(identity_id)`` when a connected client can take more than it could (AMQP credit)."""
        self._ready_observers.append(observer)

    def ready(self, identity_id: str) -> None:
        """A head's client can take more deliveries now (it granted credit, its buffers drained)."""
        for observer in self._ready_observers:
            observer(identity_id)

    def connect(
        self, identity: Identity, proxy: DeviceProxy, token_expiry: float, features: Iterable[str] = ()
    ) -> Connection:
        """Register a client that authenticated as ``identity``; an older connection of it is closed."""
        old = self._connections.get(identity.id)
        if old is not None and old.proxy is not proxy:
            old.proxy.close("another connection of the same identity took over")
            self._took_over(identity.id)
        connection = Connection(identity, proxy, set(features), token_expiry)
        self._connections[identity.id] = connection
        self._changed(identity.id)
        return connection

    def _took_over(self, identity_id: str) -> None:
        """Two clients with one identity take the connection from each other again and again; say so,
        at most once per window, instead of letting it churn silently."""
        now = time.monotonic()
        recent = [t for t in self._takeovers.get(identity_id, []) if now - t < TAKEOVER_WINDOW]
        recent.append(now)
        self._takeovers[identity_id] = recent
        warned = self._takeover_warned.get(identity_id)
        if len(recent) >= TAKEOVERS_WARNED and (warned is None or now - warned >= TAKEOVER_WINDOW):
            self._takeover_warned[identity_id] = now
            log.warning(
                "%s: %d connections took over from one another within %g s: two clients are using this "
                "identity (a module started twice? `make run` starts the sample modules itself; "
                "`make run LOCAL_MODULES=` does not)",
                identity_id,
                len(recent),
                TAKEOVER_WINDOW,
            )

    def disconnect(self, identity_id: str, proxy: DeviceProxy) -> bool:
        """The connection behind ``proxy`` ended (a newer one of the same identity stays registered)."""
        connection = self._connections.get(identity_id)
        if connection is None or connection.proxy is not proxy:
            return False
        del self._connections[identity_id]
        self._changed(identity_id)
        return True

    def set_features(self, identity_id: str, proxy: DeviceProxy, features: Iterable[str]) -> None:
        connection = self._connections.get(identity_id)
        if connection is None or connection.proxy is not proxy:
            return
        wanted = set(features)
        if wanted != connection.features:
            connection.features = wanted
            self._changed(identity_id)

    def get(self, identity_id: str, feature: str | None = None) -> Connection | None:
        """The identity's connection, if it is connected (and has ``feature`` turned on)."""
        connection = self._connections.get(identity_id)
        if connection is None or (feature is not None and feature not in connection.features):
            return None
        return connection

    async def wait_for(self, identity_id: str, feature: str, timeout: float) -> Connection | None:
        """The connection with ``feature``, waiting up to ``timeout`` for it to come."""
        deadline = time.monotonic() + timeout
        while (connection := self.get(identity_id, feature)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(identity_id, []).append(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                return None
            finally:
                waiters = self._waiters.get(identity_id)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
        return connection

    def expired(self, now: float, skew: float = 300.0) -> list[Connection]:
        """Connections whose token expired more than ``skew`` seconds ago."""
        return [c for c in self._connections.values() if c.token_expiry + skew < now]

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._connections.values()))

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, identity_id: object) -> bool:
        return identity_id in self._connections

    def _changed(self, identity_id: str) -> None:
        for waiter in self._waiters.pop(identity_id, ()):
            if not waiter.done():
                waiter.set_result(None)
        for observer in self._observers:
            observer(identity_id)
