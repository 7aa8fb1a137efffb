"""The AMQP protocol head: what edgeHub's AMQP head does, as calls on the core.

``AmqpHead`` makes one ``AmqpConnection`` per client (AMQPS on 5671, or AMQP over WebSocket on the HTTPS
port with sub-protocol ``AMQPWSB10``), checks SASL PLAIN principals, and keeps the connections it has
open so that stopping the hub closes them.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from ...core import AuthenticationError, HubCore
from .connection import AmqpConnection
from .sasl import Principal, parse_authcid


class AmqpHead:
    def __init__(self, core: HubCore, iothub_hostname: str, connect_timeout: float = 60.0) -> None:
        self.core = core
        self.counters: Counter[str] = core.counters
        self.iothub_hostname = iothub_hostname
        self.connect_timeout = connect_timeout
        self.connections: set[AmqpConnection] = set()

    def protocol(self, transport_kind: str = "amqp") -> AmqpConnection:
        """A new connection's protocol (``amqp`` over TLS, ``amqp-ws`` over WebSocket)."""
        return AmqpConnection(self, transport_kind)

    def check_plain(self, authcid: str, password: str) -> Principal:
        """A SASL PLAIN exchange: the identity the user name names, proved by its SAS token."""
        identity_id = parse_authcid(authcid, self.iothub_hostname)
        try:
            self.core.authenticator.authenticate(identity_id, password)
        except AuthenticationError as exc:
            self.counters["connect_failed_auth"] += 1
            raise ValueError(f"{identity_id}: {exc}") from None
        return Principal(identity_id, password)

    async def close_all(self, reason: str = "Server busy, please retry operation", grace: float = 1) -> None:
        """edgeHub closes its AMQP connections with ``amqp:link:detach-forced`` when it stops. The clients
        get ``grace`` seconds to answer the CLOSE: an SDK whose goodbye is cut short may not reconnect."""
        closing = list(self.connections)
        for connection in closing:
            connection.close(reason, "amqp:link:detach-forced")
        deadline = asyncio.get_running_loop().time() + grace
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.abort()
