"""What delivery did, for metrics and status: messages delivered per endpoint, drops, retries, and
how long messages waited from queued to acknowledged."""

from __future__ import annotations

import time
from collections import Counter

from ..core import MessageTrace
from ..metrics import Reservoir
from ..store import Entry


class DeliveryStats:
    def __init__(self, trace: MessageTrace | None = None) -> None:
        self.sent: Counter[str] = Counter()  # endpoint id -> messages delivered
        self.rejected = 0
        self.ack_timeouts = 0
        self.sink_failures = 0
        self.latency = Reservoir()
        self.trace = trace  # delivery events for the message trace, when it is on

    def delivered(self, entry: Entry) -> None:
        self.sent[entry.endpoint_id] += 1
        message = entry.message
        now = time.time()
        latency = self.latency  # Reservoir.observe, inlined: one per message
        value = now - message.enqueued_time
        latency.values.append(value)
        latency.count += 1
        latency.sum += value
        trace = self.trace
        if trace is not None:
            trace.delivered(now, message, entry.endpoint_id)
