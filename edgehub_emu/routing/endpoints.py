"""Route endpoints: ``$upstream`` and ``BrokeredEndpoint("/modules/<m>/inputs/<i>")``.

An endpoint is where a routed message is queued and delivered from. Its ``id`` names its queue (and
the ``endpoint`` label of ``edgehub_queue_length``): ``iothub`` for upstream, ``{device}/{module}/{input}``
for a module input, as in edgeHub.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UPSTREAM_ID = "iothub"
BRIDGE_ID = "bridge"


@dataclass(frozen=True, slots=True)
class UpstreamEndpoint:
    """``$upstream``: the cloud, or whatever upstream sink is configured."""

    id: str = UPSTREAM_ID

    def __str__(self) -> str:
        return "$upstream"


@dataclass(frozen=True, slots=True)
class ModuleEndpoint:
    """A module's input on this edge device. Delivery is to ``{device}/{module}``, matched exactly
    (case-sensitive), on topic ``devices/{device}/modules/{module}/inputs/{input}``."""

    device_id: str
    module_id: str
    input_name: str
    id: str = field(init=False, compare=False, repr=False)  # {device}/{module}/{input}: its queue
    identity: str = field(init=False, compare=False, repr=False)  # {device}/{module}: who receives

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.device_id}/{self.module_id}/{self.input_name}")
        object.__setattr__(self, "identity", f"{self.device_id}/{self.module_id}")

    def __str__(self) -> str:
        return f'BrokeredEndpoint("/modules/{self.module_id}/inputs/{self.input_name}")'


@dataclass(frozen=True, slots=True)
class BridgeEndpoint:
    """Not a route's: the queue of user-topic messages ``mqttBroker.bridges`` carry out to the upstream
    broker (so a broker outage loses nothing)."""

    id: str = BRIDGE_ID

    def __str__(self) -> str:
        return "mqttBroker.bridges"


Endpoint = UpstreamEndpoint | ModuleEndpoint | BridgeEndpoint


def endpoint_from_id(endpoint_id: str) -> Endpoint:
    """The endpoint an id names: ``iothub``, ``bridge``, or ``{device}/{module}/{input}``."""
    if endpoint_id == UPSTREAM_ID:
        return UpstreamEndpoint()
    if endpoint_id == BRIDGE_ID:
        return BridgeEndpoint()
    device, module, input_name = endpoint_id.rsplit("/", 2)
    return ModuleEndpoint(device, module, input_name)


def parse_brokered_address(address: str) -> tuple[str, str] | None:
    """(module, input) from a BrokeredEndpoint address, or None if edgeHub would refuse it.

    edgeHub trims the address, strips one leading and one trailing ``/``, and needs exactly four
    ``/``-separated segments; it takes the module from the second and the input from the fourth and does
    not check the words ``modules`` and ``inputs``.
    """
    text = address.strip()
    if text.startswith("/"):
        text = text[1:]
    if text.endswith("/"):
        text = text[:-1]
    parts = text.split("/")
    if len(parts) != 4:
        return None
    return parts[1], parts[3]
