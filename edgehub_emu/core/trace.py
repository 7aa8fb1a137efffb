"""Where did my message go? The last messages the hub accepted, and what became of each.

Kept off the hot path: a routed message costs the trace one append of the message itself (who sent it
and when are among its system properties) to a bounded deque, and an acknowledged delivery one append
of a ``(time, event, edgeMessageId, endpoint)`` tuple to a second (so do the rare events: a delivery
given back to go out again, a message dropped because no subscription matches its input). The route
table a message met is known from when each table came into use. When a deque is full, each append
lets the oldest go.

Nothing is looked up, formatted or explained until someone asks: then the message is rebuilt, the
route verdicts and the endpoints are worked out again with the table it met (``RouteTable.explain``,
the words of ``route test``), events are matched by ``edgeMessageId``, and a copy that was neither
delivered nor dropped and whose time-to-live has run out is reported expired.

Bodies over ``BODY_KEPT`` bytes are kept cut to that size, so the rings' memory stays bounded whatever
modules send.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from ..routing import Message, RoutedEndpoint, RouteTable
from ..routing.message import CONNECTION_DEVICE_ID, CONNECTION_MODULE_ID, EDGE_MESSAGE_ID, OUTPUT_NAME
from ..store import Entry

DEFAULT_SIZE: Final = 2000
"""Messages kept; delivery events are kept for twice as many."""
BODY_KEPT: Final = 4096
_SIZE: Final = "x-edgehub-emu-trace-body-size"  # in a kept copy: the size of the body it cut

DELIVERED: Final = "delivered"
RETRIED: Final = "retried"
REJECTED: Final = "rejected"

_Received = tuple[str, Message, RouteTable | None, Sequence[RoutedEndpoint], int]
"""A kept message, rebuilt: (sender, message, the table it was routed with or None when it was put
straight into a queue, its copies, its body's size)."""


class MessageTrace:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = max(1, size)
        self._messages: deque[Message] = deque(maxlen=self.size)
        self.record: Callable[[Message], None] = self._messages.append
        """The hot path's way in: one append of the routed message (``kept`` cuts a large body first)."""
        self._events: deque[tuple[float, str, str | None, str]] = deque(maxlen=2 * self.size)
        self.event: Callable[[tuple[float, str, str | None, str]], None] = self._events.append
        """One append of ``(time, event, edgeMessageId, endpoint id)``."""
        self._tables: list[tuple[float, RouteTable]] = []  # (in use from, table), oldest first
        self._queued: dict[str | None, tuple[str, Sequence[RoutedEndpoint]]] = {}
        """By edgeMessageId: messages put straight into queues (the API's), with who put them there."""

    def routing_with(self, table: RouteTable) -> None:
        """Messages from now on are routed with ``table`` (a reload)."""
        self._tables.append((time.time(), table))
        oldest = self._messages[0].enqueued_time if self._messages else time.time()
        while len(self._tables) > 1 and self._tables[1][0] <= oldest:  # none of its messages is kept
            del self._tables[0]

    @staticmethod
    def kept(message: Message) -> Message:
        """The message as the trace keeps it: with a body over ``BODY_KEPT`` bytes, a copy with the body
        cut (the caller compares the size first, so most messages never come here)."""
        if len(message.body) <= BODY_KEPT:
            return message
        system = {**message.system_properties, _SIZE: str(len(message.body))}
        return Message(message.body[:BODY_KEPT], message.properties, system, message.enqueued_time)

    def queued(self, sender: str, message: Message, copies: Sequence[RoutedEndpoint]) -> None:
        """A message put straight into queues, not routed (the API's injection)."""
        self._queued[message.system_properties.get(EDGE_MESSAGE_ID)] = (sender, copies)
        self.record(self.kept(message))
        if len(self._queued) > 2 * self.size:  # forget those the ring no longer holds
            held = {m.system_properties.get(EDGE_MESSAGE_ID) for m in self._messages}
            self._queued = {k: v for k, v in self._queued.items() if k in held}

    def delivered(self, now: float, message: Message, endpoint_id: str) -> None:
        """A queued copy was acknowledged."""
        self.event((now, DELIVERED, message.system_properties.get(EDGE_MESSAGE_ID), endpoint_id))

    def note(self, event: str, entry: Entry) -> None:
        """Another delivery event for one queued copy."""
        message_id = entry.message.system_properties.get(EDGE_MESSAGE_ID)
        self.event((time.time(), event, message_id, entry.endpoint_id))

    def _table_at(self, when: float) -> RouteTable | None:
        found = self._tables[0][1] if self._tables else None
        for since, table in self._tables:
            if since > when:
                break
            found = table
        return found

    def _rebuilt(self, message: Message) -> _Received:
        system = message.system_properties
        size = int(system.get(_SIZE) or len(message.body))
        queued = self._queued.get(system.get(EDGE_MESSAGE_ID))
        if queued is not None:  # put straight into a queue: not routed
            return queued[0], _uncut(message), None, queued[1], size
        table = self._table_at(message.enqueued_time)
        sender = self._sender(message)
        message = _uncut(message)
        # the endpoints routing chose then: the same table and the same message give the same ones
        routed = table.explain(message).endpoints if table is not None else ()
        return sender, message, table, routed, size

    def _sender(self, message: Message) -> str:
        """Who sent a kept message: the identity it came from, or who put it into a queue."""
        system = message.system_properties
        queued = self._queued.get(system.get(EDGE_MESSAGE_ID))
        if queued is not None:
            return queued[0]
        device, module = system.get(CONNECTION_DEVICE_ID), system.get(CONNECTION_MODULE_ID)
        return f"{device}/{module}" if module else (device or message.source)

    def _newest(self) -> Iterator[Message]:
        return reversed(self._messages)

    # --- questions ---------------------------------------------------------------------------------

    def find(self, message_id: str) -> dict[str, Any] | None:
        for message in self._newest():
            if message.system_properties.get(EDGE_MESSAGE_ID) == message_id:
                return self._describe(self._rebuilt(message))
        return None

    def last(
        self, count: int = 10, module: str | None = None, output: str | None = None
    ) -> list[dict[str, Any]]:
        """The last ``count`` messages (from ``module``, through ``output``), oldest first."""
        found: list[Message] = []
        for message in self._newest():  # filtered first: explaining is the costly part
            system = message.system_properties
            if module is not None and module not in (system.get(CONNECTION_MODULE_ID), self._sender(message)):
                continue
            if output is not None and system.get(OUTPUT_NAME) != output:
                continue
            found.append(message)
            if len(found) >= count:
                break
        return [self._describe(self._rebuilt(message)) for message in reversed(found)]

    def recent(self, after: float = 0.0, limit: int = 30) -> list[dict[str, Any]]:
        """The latest messages received after ``after`` (a time), at most ``limit``, oldest first: who
        sent them, where they were queued, their properties and body. A sample, for live views: at
        thousands of messages a second only the latest ``limit`` of each call are shown."""
        found: list[_Received] = []
        for message in self._newest():
            if message.enqueued_time <= after or len(found) >= limit:
                break
            found.append(self._rebuilt(message))
        return [
            {
                "edgeMessageId": message.system_properties.get(EDGE_MESSAGE_ID),
                "time": message.enqueued_time,
                "at": _iso(message.enqueued_time),
                "from": sender,
                "source": message.source,
                "endpoints": [copy.endpoint.id for copy in copies],
                "properties": message.properties,
                "systemProperties": message.system_properties,
                "body": _body(message.body, size),
            }
            for sender, message, _, copies, size in reversed(found)
        ]

    def last_verdicts(self, table: RouteTable) -> dict[str, dict[str, Any]]:
        """For each route of ``table``: what it made of the last message from its source (for the
        dashboard's graph: a route that came out false or undefined says why)."""
        verdicts: dict[str, dict[str, Any]] = {}
        wanted = {route.name: route for route in table.routes}
        for message in self._newest():
            if not wanted:
                break
            message_id = message.system_properties.get(EDGE_MESSAGE_ID)
            if message_id in self._queued:  # not routed
                continue
            message = _uncut(message)
            matching = [name for name, route in wanted.items() if route.matches_source(message.source)]
            if not matching:
                continue
            explained = {v.route.name: v for v in table.explain(message).verdicts}  # once per message
            for name in matching:
                del wanted[name]
                verdicts[name] = {
                    "outcome": explained[name].outcome,
                    "reasons": list(explained[name].reasons),
                    "edgeMessageId": message_id,
                }
        return verdicts

    def _describe(self, record: _Received) -> dict[str, Any]:
        sender, message, table, copies, size = record
        at = message.enqueued_time
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
            out["routes"] = [
                {
                    "name": v.route.name,
                    "outcome": v.outcome,
                    "reasons": list(v.reasons),
                    "endpoint": str(v.route.endpoint),
                    "condition": v.route.condition.text,
                }
                for v in table.explain(message).verdicts
            ]
        events = [
            {"at": _iso(t), "event": kind, "endpoint": endpoint}
            for t, kind, mid, endpoint in self._events
            if mid == message_id and message_id is not None
        ]
        queued = []
        for copy in copies:
            mine = [e for e in events if e["endpoint"] == copy.endpoint.id]
            outcomes = {e["event"] for e in mine}
            expires = at + copy.time_to_live_secs
            if DELIVERED in outcomes:
                state = "delivered"
            elif REJECTED in outcomes:
                state = "dropped (no subscription matches the input)"
            else:
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
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _uncut(message: Message) -> Message:
    """A kept message as it was sent, but for its cut body (without the trace's size mark)."""
    system = message.system_properties
    if _SIZE not in system:
        return message
    clean = {k: v for k, v in system.items() if k != _SIZE}
    return Message(message.body, message.properties, clean, message.enqueued_time)


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
