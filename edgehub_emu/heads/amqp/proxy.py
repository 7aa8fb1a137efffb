"""An AMQP client identity's outbound side: the core's device proxy over that identity's links.

Module inputs go out on the ModuleMessages link, unsettled, one delivery per attempt with a new lock
token (the delivery tag, and ``x-opt-input-name``); only while the client has granted credit and the
socket's buffer is not backed up, so a slow receiver holds messages in the queue, not in memory. The
client's outcome settles the attempt as edgeHub reads it: accepted (delivered), rejected or released
(dropped, as edgeHub drops them); a modified or missing outcome leaves it to the delivery window's
time-out, which sends it again. Twin replies, desired patches and method requests are pre-settled.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from proton import Delivery, Link
from proton import Message as AmqpMessage

from ...core import SendOutcome, Settle
from ...identity import Identity
from ...routing import Message
from .addresses import LinkKind
from .convert import new_lock_token, to_amqp
from .wire import WireMessage

if TYPE_CHECKING:
    from .connection import AmqpConnection

log = logging.getLogger("edgehub_emu.amqp")

MAX_WAITING = 64
"""Twin replies and pushes, method requests, kept per link while the client grants no credit."""


class AmqpProxy:
    transport = "amqp"

    def __init__(self, connection: AmqpConnection, identity: Identity, transport: str) -> None:
        self.connection = connection
        self.identity = identity
        self.transport = transport
        self.links: dict[LinkKind, Link] = {}
        # keyed by lock token, kept on the delivery: proton hands out a new wrapper object at every event
        self._unsettled: dict[str, tuple[Any, Settle]] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._waiting: dict[LinkKind, deque[AmqpMessage]] = {}  # pre-settled messages waiting for credit
        self._outgoing = WireMessage()  # filled and encoded for every input sent

    def _link(self, kind: LinkKind) -> Link | None:
        link = self.links.get(kind)
        if link is None or not link.state & Link.LOCAL_ACTIVE or not link.state & Link.REMOTE_ACTIVE:
            return None
        return link

    def send_to_input(self, input_name: str, message: Message, token: Any, settle: Settle) -> SendOutcome:
        link = self._link(LinkKind.MODULE_MESSAGES)
        if link is None or link.credit <= 0 or self.connection.backed_up():
            return SendOutcome.UNAVAILABLE
        lock_token, tag = new_lock_token()
        delivery = link.delivery(tag)
        link.send(to_amqp(message, input_name, lock_token, self._outgoing).encode())
        link.advance()
        delivery.lock_token = lock_token
        self._unsettled[lock_token] = (token, settle)
        self._deliveries[lock_token] = delivery
        self.connection.kick()
        return SendOutcome.SENT

    def outcome(self, delivery: Delivery) -> None:
        """The client answered a delivery of ours (module input or C2D)."""
        state = delivery.remote_state
        if state in (Delivery.ACCEPTED, Delivery.REJECTED, Delivery.RELEASED) or (
            delivery.settled and state is None
        ):
            if state in (Delivery.REJECTED, Delivery.RELEASED):
                log.info("%s refused a message (%s): dropped, as edgeHub drops it", self.identity.id, state)
            delivery.settle()
            lock_token = getattr(delivery, "lock_token", "")
            self._deliveries.pop(lock_token, None)
            pending = self._unsettled.pop(lock_token, None)
            if pending is not None:
                token, settle = pending
                settle(token, True)
            self.connection.kick()

    def link_closed(self, kind: LinkKind) -> None:
        """The client detached a link: deliveries still unsettled on it go back to the queue."""
        self.links.pop(kind, None)
        self._waiting.pop(kind, None)
        if kind is LinkKind.MODULE_MESSAGES:
            self.give_back()

    def give_back(self) -> None:
        pending, self._unsettled = self._unsettled, {}
        self._deliveries.clear()
        for token, settle in pending.values():
            settle(token, False)

    def abandon(self, tokens: Collection[Any]) -> None:
        """Attempts that timed out: forget them (a late outcome changes nothing)."""
        wanted = set(map(id, tokens))
        for key, (token, _) in list(self._unsettled.items()):
            if id(token) in wanted:
                del self._unsettled[key]
                delivery = self._deliveries.pop(key, None)
                if delivery is not None:
                    delivery.settle()
        self.connection.kick()

    def _presettled(self, kind: LinkKind, message: AmqpMessage) -> bool:
        """Send pre-settled on the link of ``kind``; a message that finds no credit waits (a few) for it:
        the SDKs send their first twin request before their receiver's credit arrives."""
        link = self._link(kind)
        if link is None:
            return False
        waiting = self._waiting.setdefault(kind, deque())
        if len(waiting) >= MAX_WAITING:
            return False
        waiting.append(message)
        self.flow(kind)
        return True

    def flow(self, kind: LinkKind) -> None:
        """The client granted credit on a link of ours: send what waits for it."""
        link = self._link(kind)
        waiting = self._waiting.get(kind)
        while waiting and link is not None and link.credit > 0 and not self.connection.backed_up():
            delivery = link.delivery(str(uuid.uuid4()))
            link.send(waiting.popleft().encode())
            link.advance()
            delivery.settle()
        self.connection.kick()

    def twin_reply(self, correlation_id: str, status: int, body: bytes) -> None:
        from proton import int32, symbol

        reply = AmqpMessage(body=body, inferred=True, correlation_id=correlation_id)
        reply.annotations = {symbol("status"): int32(status)}
        if not self._presettled(LinkKind.TWIN_SENDING, reply):
            log.info("no twin link to answer %s on (request %s)", self.identity.id, correlation_id)

    def push_desired(self, version: int, patch: bytes) -> None:
        if not self._presettled(LinkKind.TWIN_SENDING, AmqpMessage(body=patch, inferred=True)):
            log.info("could not push desired properties version %d to %s", version, self.identity.id)

    def send_method_request(self, method_name: str, request_id: str, payload: bytes) -> bool:
        request = AmqpMessage(body=payload, inferred=True, correlation_id=request_id)
        request.properties = {"IoThub-methodname": method_name}
        return self._presettled(LinkKind.METHOD_SENDING, request)

    def send_c2d(self, message: Message) -> bool:
        link = self._link(LinkKind.C2D)
        if link is None or link.credit <= 0 or self.connection.backed_up():
            return False
        lock_token, tag = new_lock_token()
        link.delivery(tag)
        link.send(to_amqp(message, lock_token=lock_token, into=self._outgoing).encode())
        link.advance()
        self.connection.kick()
        return True

    def close(self, reason: str) -> None:
        self.connection.close(reason)

    def subscriptions(self) -> list[str]:
        return sorted(kind.value for kind in self.links)
