"""What every upstream offers the hub: start, stop, send a ``$upstream`` message, say its status; and
what some of them can do besides (no-ops here): open a connection for a local identity that
connected, pass reported properties up, carry user topics over ``mqttBroker.bridges``.

Whatever the upstream, each message it sends is also recorded in the local capture, so that
``monitor``, ``/upstream/messages`` and the fixture show what went up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..broker import Bridge
from ..routing import Message
from .capture import UpstreamCapture

log = logging.getLogger("edgehub_emu.upstream")

Stored = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class UpstreamHooks:
    """What an upstream may ask of the hub."""

    invoke_method: Callable[[str, str, Any, float], Awaitable[tuple[int, Any]]]
    """A method call coming down: (identity, name, payload, timeout) → (status, payload)."""
    patch_desired: Callable[[str, dict[str, Any]], Any]
    """A desired-properties patch coming down, for a local identity."""
    enqueue_bridged: Callable[[Message, Stored], bool]
    """A user-topic message a bridge carries out: into the durable bridge queue."""
    publish_local: Callable[[str, bytes, int], None]
    """A message a bridge brings in: to the local subscribers of its topic."""


class Upstream:
    """The local capture alone: ``$upstream`` ends here (the cloud on your laptop)."""

    def __init__(self, capture: UpstreamCapture) -> None:
        self.capture = capture

    def describe(self) -> str:
        return "local capture"

    async def start(self) -> None:
        """Connect (an upstream that has a connection)."""

    async def stop(self) -> None:
        """Disconnect."""

    async def send(self, message: Message) -> None:
        """The ``$upstream`` sink: returns once the message is sent (and recorded)."""
        await self.forward(message)
        await self.capture.send(message)

    async def forward(self, message: Message) -> None:
        """Send to the upstream proper; the local capture alone has nothing to do."""

    def status(self) -> dict[str, Any]:
        return {"target": self.describe(), "connections": {}}

    # --- optional capabilities -------------------------------------------------------------------

    def identity_connected(self, identity_id: str) -> None:
        """A local identity connected (an upstream that mirrors identities opens its connection)."""

    def reported(self, identity_id: str, patch: dict[str, Any]) -> None:
        """A local identity patched its reported properties."""

    bridge_sink: Callable[[Message], Awaitable[None]] | None = None
    """Delivers the bridge queue (user topics out), when the upstream carries ``mqttBroker.bridges``."""

    def configure_bridges(self, bridges: tuple[Bridge, ...]) -> None:
        if bridges:
            log.warning(
                "mqttBroker.bridges are ignored: they need an MQTT upstream (--upstream mqtt://host:port)"
            )

    def bridge_out(self, topic: str, payload: bytes, qos: int, retain: bool, stored: Stored) -> bool:
        """A local user-topic publish a bridge may carry out (see ``UserTopics.forward``)."""
        return True
