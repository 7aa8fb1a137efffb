"""One picture of a running hub, taken at once: who is connected, what waits in which queue, how each
route is doing, what was delivered and dropped. Metrics, ``GET /status``, the CLI and the fixture's
failure messages all read this, rather than the hub's parts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .core import ConnectionManager
from .delivery import DeliveryStats
from .identity import Identity
from .metrics import Reservoir
from .routing import RouteTable
from .store import QueueInfo, Store

DROP_REASONS = {
    "dropped_no_route": "no_route",
    "dropped_spoofed": "spoofed_sender",
    "dropped_bad_topic": "bad_topic",
    "dropped_too_large": "too_large",
    "dropped_anonymous": "anonymous",
}
"""Core counters of dropped messages, by the ``reason`` label of ``edgehub_messages_dropped_total``
(edgeHub's ``no_route``, and what this hub drops that edgeHub would not see or count)."""


@dataclass(frozen=True, slots=True)
class IdentityInfo:
    id: str
    kind: str  # "edge device", "module", "leaf device"
    connected: bool
    transport: str | None = None
    subscriptions: tuple[str, ...] = ()
    features: tuple[str, ...] = ()  # what the subscriptions turn on: ModuleMessages, Methods, ...
    connected_since: float | None = None


@dataclass(frozen=True, slots=True)
class RouteInfo:
    name: str
    text: str
    source: str
    condition: str
    endpoint: str
    priority: int
    time_to_live_secs: int
    hits: int


@dataclass(frozen=True, slots=True)
class HubSnapshot:
    device_id: str
    iothub_hostname: str
    identities: tuple[IdentityInfo, ...]
    queues: tuple[QueueInfo, ...]
    routes: tuple[RouteInfo, ...]
    received: int
    delivered: dict[str, int]  # endpoint id -> messages delivered
    dropped: dict[str, int]  # reason -> messages
    counters: dict[str, int]  # get_twin, reported_properties, direct_methods, connect_success, ...
    message_sizes: Reservoir
    send_durations: Reservoir
    upstream: dict[str, Any]
    broker: dict[str, Any] | None
    modules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def connected(self) -> list[str]:
        return [i.id for i in self.identities if i.connected]

    def depths(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for queue in self.queues:
            out.setdefault(queue.endpoint_id, {})[queue.priority] = queue.messages
        return out


def build_snapshot(
    *,
    device_id: str,
    iothub_hostname: str,
    identities: Iterable[Identity],
    connections: ConnectionManager,
    store: Store,
    route_table: RouteTable,
    counters: Mapping[str, int],
    message_sizes: Reservoir,
    delivery: DeliveryStats,
    upstream: dict[str, Any],
    broker: dict[str, Any] | None,
    modules: list[dict[str, Any]],
) -> HubSnapshot:
    infos = []
    for identity in identities:
        connection = connections.get(identity.id)
        kind = "module" if identity.module_id else ("leaf device" if identity.leaf else "edge device")
        if connection is None:
            infos.append(IdentityInfo(identity.id, kind, False))
        else:
            proxy = connection.proxy
            infos.append(
                IdentityInfo(
                    identity.id,
                    kind,
                    True,
                    proxy.transport,
                    tuple(proxy.subscriptions()),
                    tuple(sorted(connection.features)),
                    connection.since,
                )
            )
    routes = tuple(
        RouteInfo(
            r.name,
            r.text,
            r.source,
            r.condition.text,
            str(r.endpoint),
            r.priority,
            r.time_to_live_secs or route_table.global_ttl_secs,
            route_table.hits.get(r.name, 0),
        )
        for r in route_table.routes
    )
    dropped = {reason: counters.get(key, 0) for key, reason in DROP_REASONS.items()}
    dropped["ttl_expiry"] = sum(store.expired_counts().values())
    dropped["rejected_by_subscription"] = delivery.rejected
    if broker is not None:
        dropped["not_authorized"] = broker["counters"].get("denied_publish", 0)
        dropped["offline_queue_full"] = broker["counters"].get("dropped_offline_limit", 0)
    return HubSnapshot(
        device_id=device_id,
        iothub_hostname=iothub_hostname,
        identities=tuple(infos),
        queues=tuple(store.queues()),
        routes=routes,
        received=counters.get("messages_received", 0),
        delivered=dict(delivery.sent),
        dropped=dropped,
        counters=dict(counters),
        message_sizes=message_sizes,
        send_durations=delivery.latency,
        upstream=upstream,
        broker=broker,
        modules=modules,
    )
