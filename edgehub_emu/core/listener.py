"""A connected identity's inbound side (edgeHub's device listener): what a protocol head calls when its
client sends telemetry, asks for its twin, patches reported properties, answers a method call or
changes its subscriptions. The head translates its wire events into these calls; nothing here knows
the wire."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

from ..routing import Message
from ..store import Stored
from .connections import Connection

if TYPE_CHECKING:
    from .hub_core import HubCore

log = logging.getLogger("edgehub_emu.hub")


class DeviceListener:
    __slots__ = ("_core", "connection", "identity", "telemetry")

    def __init__(self, core: HubCore, connection: Connection) -> None:
        self._core = core
        self.connection = connection
        self.identity = connection.identity
        self.telemetry: Callable[[Message, Stored], bool] = partial(core.ingest.telemetry, self.identity)
        """``telemetry(message, stored)``: a message the client sent (telemetry or an output), routed and
        queued. True: done now; False: ``stored`` is called once it is committed. (A partial, not a
        method: it runs for every message.)"""

    def get_twin(self) -> bytes:
        return self._core.twins.get(self.identity.id)

    def patch_reported(self, payload: bytes) -> int:
        return self._core.twins.patch_reported(self.identity, payload)

    def method_response(self, request_id: str, status: int, payload: bytes) -> None:
        self._core.methods.respond(request_id, status, payload)

    def renew(self, token_expiry: float) -> None:
        """The client proved itself again with a new token (AMQP CBS renewal): it expires later."""
        self.connection.token_expiry = token_expiry

    def ready(self) -> None:
        """The client can take more deliveries than it could (its head's flow control opened up)."""
        self._core.connections.ready(self.identity.id)

    def set_features(self, features: Iterable[str]) -> None:

        self._core.connections.set_features(self.identity.id, self.connection.proxy, features)

    def disconnected(self, graceful: bool) -> None:
        if self._core.connections.disconnect(self.identity.id, self.connection.proxy):
            log.info("%s disconnected%s", self.identity.id, "" if graceful else " (not graceful)")
