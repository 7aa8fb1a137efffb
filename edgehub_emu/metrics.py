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


class HubCollector(Collector):
    """Reads one snapshot of the hub per scrape."""

    def __init__(self, hub: EdgeHub) -> None:
        self.hub = hub
        self.instance = str(uuid.uuid4())

    def collect(self) -> Iterator[Metric]:
        if not self.hub.running:
            return
        snapshot = self.hub.snapshot()
        common = [snapshot.iothub_hostname, snapshot.device_id, self.instance]
        queue = GaugeMetricFamily(
            "edgehub_queue_length",
            "Messages waiting per endpoint and priority",
            labels=[*COMMON, "endpoint", "priority"],
        )
        for info in snapshot.queues:
            queue.add_metric([*common, info.endpoint_id, str(info.priority)], info.messages)
        received = CounterMetricFamily(
            "edgehub_messages_received", "Messages received from clients", labels=COMMON
        )
        received.add_metric(common, snapshot.received)
        sent = CounterMetricFamily(
            "edgehub_messages_sent", "Messages delivered per endpoint", labels=[*COMMON, "to"]
        )
        for endpoint, count in snapshot.delivered.items():
            sent.add_metric([*common, endpoint], count)
        dropped = CounterMetricFamily(
            "edgehub_messages_dropped", "Messages dropped, by reason", labels=[*COMMON, "reason"]
        )
        for reason, count in snapshot.dropped.items():
            dropped.add_metric([*common, reason], count)
        clients = GaugeMetricFamily("edgehub_connected_clients", "Connected clients", labels=COMMON)
        clients.add_metric(common, len(snapshot.connected))
        yield from (queue, received, sent, dropped, clients)
        counters = snapshot.counters
        for name, key, documentation in (
            ("edgehub_gettwin", "get_twin", "Twin GET requests"),
            ("edgehub_reported_properties", "reported_properties", "Reported-property patches"),
            ("edgehub_direct_methods", "direct_methods", "Direct method calls"),
            ("edgehub_client_connect_success", "connect_success", "Successful connections"),
        ):
            counter = CounterMetricFamily(name, documentation, labels=COMMON)
            counter.add_metric(common, counters.get(key, 0))
            yield counter
        failed = CounterMetricFamily(
            "edgehub_client_connect_failed", "Refused connections", labels=[*COMMON, "reason"]
        )
        failed.add_metric([*common, "not_authorized"], counters.get("connect_failed_auth", 0))
        yield failed
        yield snapshot.message_sizes.metric("edgehub_message_size_bytes", "Message sizes", COMMON, common)
        yield snapshot.send_durations.metric(
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
