"""Where did my message go? The last messages the hub accepted, and what became of each.

Kept off the hot path: receiving a message appends one tuple to a bounded ring (the message, who sent
it, the route table it was routed with and the copies it made); a delivery event appends one tuple to
a second ring. Nothing is looked up, formatted or explained until someone asks: then the route
verdicts are worked out again with the table the message met (``RouteTable.explain``, the words of
``route test``), events are matched by ``edgeMessageId``, and a copy that was neither delivered nor
dropped and whose time-to-live has run out is reported expired.

Bodies over ``BODY_KEPT`` bytes are kept cut to that size, so the rings' memory stays bounded whatever
modules send.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from ..routing import Message, RoutedEndpoint, RouteTable
from ..routing.message import CONNECTION_DEVICE_ID, CONNECTION_MODULE_ID, EDGE_MESSAGE_ID, OUTPUT_NAME
from ..store import Entry

DEFAULT_SIZE = 2000
"""Messages kept; delivery events are kept for four times as many."""
BODY_KEPT = 4096

SENT = "sent"
DELIVERED = "delivered"
RETRIED = "retried"
REJECTED = "rejected"

_Received = tuple[float, str, Message, RouteTable | None, Sequence[RoutedEndpoint], int]
"""(time, sender, message, table or None when put straight into a queue, copies, body size)"""


class MessageTrace:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._received: deque[_Received] = deque(maxlen=max(1, size))
        self._events: deque[tuple[float, str, str | None, str]] = deque(maxlen=max(1, size * 4))
        self.enabled = size > 0

    # --- the hot path: one append each -------------------------------------------------------------

    def received(
        self, sender: str, message: Message, table: RouteTable | None, copies: Sequence[RoutedEndpoint]
    ) -> None:
        size = len(message.body)
        if size > BODY_KEPT:
            message = Message(
                message.body[:BODY_KEPT], message.properties, message.system_properties, message.enqueued_time
            )
        self._received.append((time.time(), sender, message, table, copies, size))

    def note(self, event: str, entry: Entry) -> None:
        """A delivery event for one queued copy."""
        self._events.append(
            (time.time(), event, entry.message.system_properties.get(EDGE_MESSAGE_ID), entry.endpoint_id)
        )

    # --- questions ---------------------------------------------------------------------------------

    def find(self, message_id: str) -> dict[str, Any] | None:
        for record in reversed(self._received):
            if record[2].system_properties.get(EDGE_MESSAGE_ID) == message_id:
                return self._describe(record)
        return None

    def last(
        self, count: int = 10, module: str | None = None, output: str | None = None
    ) -> list[dict[str, Any]]:
        """The last ``count`` messages (from ``module``, through ``output``), oldest first."""
        found = []
        for record in self._records(module, output):
            found.append(record)
            if len(found) >= count:
                break
        return [self._describe(record) for record in reversed(found)]

    def recent(self, after: float = 0.0, limit: int = 30) -> list[dict[str, Any]]:
        """The latest messages received after ``after`` (a time), at most ``limit``, oldest first: who
        sent them, where they were queued, their properties and body. A sample, for live views: at
        thousands of messages a second only the latest ``limit`` of each call are shown."""
        found: list[_Received] = []
        for record in reversed(self._received):
            if record[0] <= after or len(found) >= limit:
                break
            found.append(record)
        return [
            {
                "edgeMessageId": message.system_properties.get(EDGE_MESSAGE_ID),
                "time": at,
                "at": _iso(at),
                "from": sender,
                "source": message.source,
                "endpoints": [copy.endpoint.id for copy in copies],
                "properties": message.properties,
                "systemProperties": message.system_properties,
                "body": _body(message.body, size),
            }
            for at, sender, message, _, copies, size in reversed(found)
        ]

    def last_verdicts(self, table: RouteTable) -> dict[str, dict[str, Any]]:
        """For each route of ``table``: what it made of the last message from its source (for the
        dashboard's graph: a route that came out false or undefined says why)."""
        verdicts: dict[str, dict[str, Any]] = {}
        wanted = {route.name: route for route in table.routes}
        for _, _, message, _, _, _ in reversed(self._received):
            if not wanted:
                break
            for name, route in list(wanted.items()):
                if route.matches_source(message.source):
                    del wanted[name]
                    explained = next(v for v in table.explain(message).verdicts if v.route.name == name)
                    verdicts[name] = {
                        "outcome": explained.outcome,
                        "reasons": list(explained.reasons),
                        "edgeMessageId": message.system_properties.get(EDGE_MESSAGE_ID),
                    }
        return verdicts

    def _records(self, module: str | None, output: str | None) -> Iterator[_Received]:
        for record in reversed(self._received):
            system = record[2].system_properties
            sender = record[1]
            if module is not None and module not in (system.get(CONNECTION_MODULE_ID), sender):
                continue
            if output is not None and system.get(OUTPUT_NAME) != output:
                continue
            yield record

    def _describe(self, record: _Received) -> dict[str, Any]:
        at, sender, message, table, copies, size = record
        message_id = message.system_properties.get(EDGE_MESSAGE_ID)
        now = time.time()
        out: dict[str, Any] = {
            "edgeMessageId": message_id,
            "received": {
                "at": _iso(at),
                "from": sender,
                "source": message.source,
                "device": message.system_properties.get(CONNECTION_DEVICE_ID),
                "output": message.system_properties.get(OUTPUT_NAME),
                "properties": message.properties,
                "systemProperties": message.system_properties,
                "body": _body(message.body, size),
            },
        }
        if table is not None:
            explanation = table.explain(message)
            out["routes"] = [
                {
                    "name": v.route.name,
                    "outcome": v.outcome,
                    "reasons": list(v.reasons),
                    "endpoint": str(v.route.endpoint),
                    "condition": v.route.condition.text,
                }
                for v in explanation.verdicts
            ]
        events = [
            {"at": _iso(t), "event": kind, "endpoint": endpoint}
            for t, kind, mid, endpoint in self._events
            if mid == message_id and message_id is not None
        ]
        queued = []
        for copy in copies:
            mine = [e for e in events if e["endpoint"] == copy.endpoint.id]
            done = any(e["event"] in (DELIVERED, REJECTED) for e in mine)
            expires = at + copy.time_to_live_secs
            state = (
                "delivered"
                if any(e["event"] == DELIVERED for e in mine)
                else "dropped (no matching subscription)"
            )
            if not done:
                state = "expired" if now >= expires else "waiting"
            queued.append(
                {
                    "endpoint": copy.endpoint.id,
                    "priority": copy.priority,
                    "timeToLiveSecs": copy.time_to_live_secs,
                    "route": copy.route,
                    "state": state,
                    "expiresAt": _iso(expires),
                    "events": mine,
                }
            )
        out["queued"] = queued
        out["dropped"] = None if copies else "no_route"
        return out


def _iso(seconds: float) -> str:
    return (
        dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _body(body: bytes, size: int) -> dict[str, Any]:
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    described: dict[str, Any] = {"bytes": size, "text": text}
    if text is None:
        described["base64"] = base64.b64encode(body).decode("ascii")
    if size > len(body):
        described["truncated"] = True
    return described
