"""The hub's metrics, with edgeHub's names, read from its state when scraped (nothing on the hot path).

``edgehub_queue_length{endpoint,priority}``, ``edgehub_messages_received_total``,
``edgehub_messages_sent_total{to}``, ``edgehub_messages_dropped_total{reason}``,
``edgehub_connected_clients``, each with edgeHub's common labels ``iothub``, ``edge_device`` and
``instance_number``. ``hub.metrics`` is a prometheus-client registry; the HTTP endpoint serves it.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .hub import EdgeHub

COMMON = ["iothub", "edge_device", "instance_number"]
QUANTILES = (0.1, 0.5, 0.9, 0.99)


class Reservoir:
    """The last ``size`` observations plus their count and sum: a summary that costs an append."""

    def __init__(self, size: int = 1024) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.values.append(value)
        self.count += 1
        self.sum += value

    def metric(self, name: str, documentation: str, labels: list[str], values: list[str]) -> Metric:
        metric = Metric(name, documentation, "summary")
        ordered = sorted(self.values)
        for q in QUANTILES:
            value = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
            metric.add_sample(name, {**dict(zip(labels, values, strict=True)), "quantile": str(q)}, value)
        metric.add_sample(f"{name}_count", dict(zip(labels, values, strict=True)), self.count)
        metric.add_sample(f"{name}_sum", dict(zip(labels, values, strict=True)), self.sum)
        return metric


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
            dropped.add_metric([*common, "anonymous"], counters["dropped_anonymous"])
            broker = hub.head.broker
            if broker is not None:
                dropped.add_metric([*common, "not_authorized"], broker.counters["denied_publish"])
                dropped.add_metric(
                    [*common, "offline_queue_full"], broker.topics.counters["dropped_offline_limit"]
                )
            clients.add_metric(common, len(hub.head.clients))
        yield from (queue, received, sent, dropped, clients)
        if store is None or not hasattr(hub, "head"):
            return
        counters = hub.head.counters
        for name, key, documentation in (
            ("edgehub_gettwin", "get_twin", "Twin GET requests"),
            ("edgehub_reported_properties", "reported_properties", "Reported-property patches"),
            ("edgehub_direct_methods", "direct_methods", "Direct method calls"),
            ("edgehub_client_connect_success", "connect_success", "Successful connections"),
        ):
            counter = CounterMetricFamily(name, documentation, labels=COMMON)
            counter.add_metric(common, counters[key])
            yield counter
        failed = CounterMetricFamily(
            "edgehub_client_connect_failed", "Refused connections", labels=[*COMMON, "reason"]
        )
        failed.add_metric([*common, "not_authorized"], counters["connect_failed_auth"])
        yield failed
        yield hub.head.message_sizes.metric("edgehub_message_size_bytes", "Message sizes", COMMON, common)
        yield hub.deliveries.latency.metric(
            "edgehub_message_send_duration_seconds",
            "From queued to acknowledged by the module",
            COMMON,
            common,
        )


def registry_for(hub: EdgeHub) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return registry


def render(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()
