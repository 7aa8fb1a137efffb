"""The hub's metrics, with edgeHub's names, read from its state when scraped (nothing on the hot path).

``edgehub_queue_length{endpoint,priority}``, ``edgehub_messages_received_total``,
``edgehub_messages_sent_total{to}``, ``edgehub_messages_dropped_total{reason}``,
``edgehub_connected_clients``, each with edgeHub's common labels ``iothub``, ``edge_device`` and
``instance_number``. ``hub.metrics`` is a prometheus-client registry; the HTTP endpoint serves it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .hub import EdgeHub

COMMON = ["iothub", "edge_device", "instance_number"]

# Our reasons beside edgeHub's (no_route, ttl_expiry): what this hub drops that edgeHub would not see
# or would not count.
_HEAD_DROPS = {
    "dropped_no_route": "no_route",
    "dropped_spoofed": "spoofed_sender",
    "dropped_bad_topic": "bad_topic",
    "dropped_too_large": "too_large",
}


class HubCollector(Collector):
    def __init__(self, hub: EdgeHub) -> None:
        self.hub = hub
        self.instance = str(uuid.uuid4())

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        common = [hub.settings.iothub_hostname, hub.settings.device_id, self.instance]
        queue = GaugeMetricFamily(
            "edgehub_queue_length",
            "Messages waiting per endpoint and priority",
            labels=[*COMMON, "endpoint", "priority"],
        )
        received = CounterMetricFamily(
            "edgehub_messages_received", "Messages received from clients", labels=COMMON
        )
        sent = CounterMetricFamily(
            "edgehub_messages_sent", "Messages delivered per endpoint", labels=[*COMMON, "to"]
        )
        dropped = CounterMetricFamily(
            "edgehub_messages_dropped", "Messages dropped, by reason", labels=[*COMMON, "reason"]
        )
        clients = GaugeMetricFamily("edgehub_connected_clients", "Connected clients", labels=COMMON)
        store = hub.store
        if store is not None and hasattr(hub, "head"):
            for endpoint in store.endpoints():
                for priority, count in store.depth(endpoint).items():
                    queue.add_metric([*common, endpoint, str(priority)], count)
            counters = hub.head.counters
            received.add_metric(common, counters["messages_received"])
            for endpoint, count in hub.deliveries.sent.items():
                sent.add_metric([*common, endpoint], count)
            for key, reason in _HEAD_DROPS.items():
                dropped.add_metric([*common, reason], counters[key])
            dropped.add_metric([*common, "ttl_expiry"], sum(store.expired.values()))
            dropped.add_metric([*common, "rejected_by_subscription"], hub.deliveries.counters["rejected"])
            clients.add_metric(common, len(hub.head.clients))
        yield from (queue, received, sent, dropped, clients)


def registry_for(hub: EdgeHub) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return registry


def render(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()
