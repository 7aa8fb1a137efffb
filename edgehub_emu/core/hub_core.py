"""The protocol-neutral middle of the hub: connections, authentication, telemetry into routes and
queues, twins, direct methods and C2D. Protocol heads register the clients they authenticate here and
get a ``DeviceListener`` back; the hub's Python API and the management API call the same services."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from ..identity import Identity, IdentityRegistry
from ..iothub import C2D
from ..iothub.twins import TwinStore
from ..routing import Message, RouteTable
from ..routing.message import TO
from ..store import Store
from .authentication import Authenticator
from .connections import ConnectionManager, DeviceProxy
from .listener import DeviceListener
from .methods import MethodCalls, MethodError
from .telemetry import Ingest
from .trace import MessageTrace
from .twins import TwinService

log = logging.getLogger("edgehub_emu.hub")


class HubCore:
    def __init__(
        self,
        device_id: str,
        identities: IdentityRegistry,
        hostnames: Sequence[str],
        twins: TwinStore,
        store: Store,
        routes: RouteTable,
        trace: MessageTrace | None = None,
    ) -> None:
        self.device_id = device_id
        self.identities = identities
        self.counters: Counter[str] = Counter()
        self.connections = ConnectionManager()
        self.authenticator = Authenticator(identities, hostnames)
        self.ingest = Ingest(device_id, routes, store, self.counters, trace)
        self.twins = TwinService(twins, self.connections, self.ingest, device_id, self.counters)
        self.methods = MethodCalls(self.connections, self.counters)

    def set_routes(self, routes: RouteTable) -> None:
        """A new deployment's routes, for the messages that come from now on."""
        self.ingest.routes = routes

    def set_trace(self, trace: MessageTrace | None) -> None:
        """Record what becomes of messages from now on in ``trace`` (None: stop)."""
        self.ingest.set_trace(trace)

    def connect(
        self, identity: Identity, proxy: DeviceProxy, token_expiry: float, features: Iterable[str] = ()
    ) -> DeviceListener:
        """A head authenticated a client: register it; its inbound side is the returned listener."""
        connection = self.connections.connect(identity, proxy, token_expiry, features)
        self.counters["connect_success"] += 1
        return DeviceListener(self, connection)

    def check_tokens(self, now: float | None = None) -> list[str]:
        """Disconnect clients whose token has expired (edgeHub re-checks every five minutes)."""
        expired = self.connections.expired(time.time() if now is None else now)
        for connection in expired:
            log.info("disconnecting %s: its SAS token expired", connection.identity.id)
            connection.proxy.close("SAS token expired")
        return [c.identity.id for c in expired]

    def send_c2d(self, device_id: str, message: Message) -> None:
        """A cloud-to-device message to a connected leaf device subscribed to C2D (modules cannot
        receive C2D). Raises MethodError(404) otherwise: edgeHub relays C2D, it never stores it."""
        identity = self.identities.get(device_id)
        if identity is None or identity.module_id is not None:
            raise MethodError(404, f"{device_id} is not a device (modules cannot receive C2D messages)")
        connection = self.connections.get(device_id, C2D)
        if connection is None:
            raise MethodError(404, f"device {device_id} is not connected with a C2D subscription")
        message.system_properties.setdefault(TO, f"/devices/{device_id}/messages/deviceBound")
        if not connection.proxy.send_c2d(message):
            raise MethodError(404, f"device {device_id} has no subscription matching its C2D topic")
