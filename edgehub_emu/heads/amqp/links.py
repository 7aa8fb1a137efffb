"""An AMQP connection's links and the identities they serve, as edgeHub's link handlers treat them.

A link's address says its kind and identity (``addresses.py``). The identity is authenticated when its
first link attaches: with the connection's SASL PLAIN principal (that identity only), or with the token
a CBS put-token stored for it, checked by the core (signature, expiry, scope). A failure refuses the
link with ``amqp:not-allowed``; the client's first authenticated link registers the identity with the
core, with an ``AmqpProxy`` as its outbound side. Attaching the inputs, C2D, twin-sending or
method-sending link turns the matching feature on; detaching it turns it off.

Inbound deliveries: telemetry is routed and accepted once stored (rejected with edgeHub's conditions
otherwise); twin requests and method responses are answered and accepted; put-token requests are
accepted at once and answered on the ``$cbs`` sender.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proton import Condition, Delivery, Link
from proton import Message as AmqpMessage

from ...core import MAX_MESSAGE_SIZE, AuthenticationError, DeviceListener, message_size
from ...iothub import C2D, DESIRED_PROPERTY_UPDATES, METHODS, MODULE_MESSAGES
from .addresses import AddressError, LinkKind, parse_address
from .cbs import CbsError, put_token, reply
from .convert import NoBody, from_amqp, id_text
from .proxy import AmqpProxy
from .wire import WireMessage

if TYPE_CHECKING:
    from .connection import AmqpConnection

log = logging.getLogger("edgehub_emu.amqp")

CREDIT = 1000
MAX_LINK_MESSAGE = 1 << 20
_FEATURES = {
    LinkKind.MODULE_MESSAGES: MODULE_MESSAGES,
    LinkKind.C2D: C2D,
    LinkKind.TWIN_SENDING: DESIRED_PROPERTY_UPDATES,
    LinkKind.METHOD_SENDING: METHODS,
}
_INBOUND = (LinkKind.EVENTS, LinkKind.TWIN_RECEIVING, LinkKind.METHOD_RECEIVING)


def _same(a: Link, b: Link) -> bool:
    return getattr(a, "key", None) == getattr(b, "key", -1)


class _Client:
    """One authenticated identity on this connection."""

    __slots__ = ("features", "listener", "proxy")

    def __init__(self, listener: DeviceListener, proxy: AmqpProxy) -> None:
        self.listener = listener
        self.proxy = proxy
        self.features: set[str] = set()


class Links:
    def __init__(self, connection: AmqpConnection) -> None:
        self.connection = connection
        self.head = connection.head
        self.tokens: dict[str, tuple[str, int]] = {}  # identity -> (token, expiry), from CBS
        self.clients: dict[str, _Client] = {}
        self.cbs_sender: Link | None = None
        self._cbs_replies: list[AmqpMessage] = []
        self._replies = 0
        self._links = 0
        self._telemetry_message = WireMessage()

    # --- attach and detach -------------------------------------------------------------------------

    def attach(self, link: Link) -> None:
        client_sends = link.is_receiver
        address = (link.remote_target if client_sends else link.remote_source).address
        try:
            parsed = parse_address(address, client_sends)
        except AddressError as exc:
            return self._refuse(link, "amqp:not-allowed", str(exc))
        self._links += 1
        link.key = self._links  # proton hands out a new wrapper per event: this says which link it is
        link.kind = parsed.kind
        link.identity_id = parsed.identity_id
        if parsed.kind is LinkKind.CBS:
            if self.connection.principal is not None:
                return self._refuse(link, "amqp:not-allowed", "a SASL PLAIN connection has no $cbs node")
            self._open(link, presettled=False)
            if client_sends:
                link.flow(CREDIT)
            else:
                self.cbs_sender = link
            return
        assert parsed.identity_id is not None
        client = self._client(parsed.identity_id, parsed.kind)
        if client is None:
            return self._refuse(
                link,
                "amqp:not-allowed",
                f"Unable to open {parsed.kind.value} link as the connection could not be authenticated",
            )
        old = client.proxy.links.get(parsed.kind)
        if old is not None and not _same(old, link):
            old.close()
            client.proxy.link_closed(parsed.kind)
        client.proxy.links[parsed.kind] = link
        self._open(
            link,
            presettled=parsed.kind in (LinkKind.TWIN_SENDING, LinkKind.METHOD_SENDING),
            receiver_settles=Link.RCV_SECOND if parsed.kind is LinkKind.C2D else Link.RCV_FIRST,
        )
        if parsed.kind in _INBOUND:
            link.flow(CREDIT)
        feature = _FEATURES.get(parsed.kind)
        if feature is not None:
            client.features.add(feature)
            client.listener.set_features(client.features)
        log.debug("%s attached its %s link", parsed.identity_id, parsed.kind.value)

    def _open(self, link: Link, presettled: bool, receiver_settles: int = Link.RCV_FIRST) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.max_message_size = MAX_LINK_MESSAGE
        if presettled:
            link.snd_settle_mode = Link.SND_SETTLED
        link.rcv_settle_mode = receiver_settles
        if link.remote_properties:
            link.properties = link.remote_properties  # edgeHub's ATTACH echoes the client's
        link.open()

    def _refuse(self, link: Link, condition: str, description: str) -> None:
        log.warning("refused an AMQP link from %s: %s", self.connection.peer, description)
        link.condition = Condition(condition, description)
        link.open()
        link.close()

    def detach(self, link: Link) -> None:
        link.close()
        kind = getattr(link, "kind", None)
        if self.cbs_sender is not None and _same(link, self.cbs_sender):
            self.cbs_sender = None
        client = self.clients.get(getattr(link, "identity_id", None) or "")
        current = client.proxy.links.get(kind) if client is not None and kind is not None else None
        if client is None or kind is None or current is None or not _same(current, link):
            return
        client.proxy.link_closed(kind)
        feature = _FEATURES.get(kind)
        if feature is not None:
            client.features.discard(feature)
            client.listener.set_features(client.features)
        if not client.proxy.links:  # its last link: the identity leaves (its token stays for a re-attach)
            del self.clients[client.proxy.identity.id]
            client.listener.disconnected(graceful=True)

    def _client(self, identity_id: str, kind: LinkKind) -> _Client | None:
        client = self.clients.get(identity_id)
        if client is not None:
            return client
        principal = self.connection.principal
        if principal is not None:
            if principal.identity_id != identity_id:
                log.warning(
                    "%s: a SASL PLAIN connection of %s asked for %s",
                    self.connection.peer,
                    principal.identity_id,
                    identity_id,
                )
                return None
            token = principal.token
        elif identity_id in self.tokens:
            token = self.tokens[identity_id][0]
        else:
            log.warning(
                "%s: %s link for %s without a CBS token", self.connection.peer, kind.value, identity_id
            )
            return None
        try:
            authenticated = self.head.core.authenticator.authenticate(identity_id, token)
        except AuthenticationError as exc:
            self.head.counters["connect_failed_auth"] += 1
            log.warning("refused %s over AMQP: %s", identity_id, exc)
            return None
        identity = authenticated.identity
        proxy = AmqpProxy(self.connection, identity, self.connection.transport_kind)
        listener = self.head.core.connect(identity, proxy, authenticated.token_expiry)
        client = self.clients[identity.id] = _Client(listener, proxy)
        log.info("%s connected over %s", identity.id, proxy.transport)
        return client

    def lost(self, graceful: bool) -> None:
        """The socket closed: every identity of this connection is gone."""
        clients, self.clients = self.clients, {}
        for client in clients.values():
            client.proxy.give_back()
            client.listener.disconnected(graceful)

    # --- flow --------------------------------------------------------------------------------------------

    def flow(self, link: Link) -> None:
        if self.cbs_sender is not None and _same(link, self.cbs_sender):
            self._send_cbs_replies()
            return

        kind = getattr(link, "kind", None)
        client = self.clients.get(getattr(link, "identity_id", None) or "")
        if client is None or not link.is_sender or link.credit <= 0:
            return
        if kind in (LinkKind.MODULE_MESSAGES, LinkKind.C2D):
            client.listener.ready()
        elif kind in (LinkKind.TWIN_SENDING, LinkKind.METHOD_SENDING):
            client.proxy.flow(kind)

    def drained(self) -> None:
        for client in list(self.clients.values()):
            client.listener.ready()

    # --- deliveries --------------------------------------------------------------------------------------

    def delivery(self, delivery: Delivery) -> None:
        link = delivery.link
        kind = getattr(link, "kind", None)
        if link.is_sender:
            client = self.clients.get(getattr(link, "identity_id", None) or "")
            if delivery.updated and client is not None:
                client.proxy.outcome(delivery)
            return
        if delivery.partial:
            if delivery.pending > MAX_LINK_MESSAGE + 65536:
                link.condition = Condition("amqp:link:message-size-exceeded", "the message is over 1 MiB")
                link.close()
            return
        if not delivery.readable or kind is None:
            return
        data = link.recv(delivery.pending)
        link.advance()
        # Telemetry, the hot path, decodes into one message per connection (its values are copied out).
        message = self._telemetry_message if kind is LinkKind.EVENTS else AmqpMessage()
        try:
            message.decode(data)
        except Exception as exc:  # proton raises its own error types for bad encodings
            return self._settle(
                delivery, link, Delivery.REJECTED, ("amqp:decode-error", f"undecodable message: {exc}")
            )
        if kind is LinkKind.CBS:
            self._put_token(delivery, link, message)
            return
        client = self.clients.get(link.identity_id)
        if client is None:
            return self._settle(
                delivery, link, Delivery.REJECTED, ("amqp:unauthorized-access", '"Unauthorized access"')
            )
        if kind is LinkKind.EVENTS:
            self._telemetry(client, delivery, link, message)
        elif kind is LinkKind.TWIN_RECEIVING:
            self._twin_request(client, delivery, link, message)
        elif kind is LinkKind.METHOD_RECEIVING:
            self._method_response(client, delivery, link, message)

    def _settle(
        self, delivery: Delivery, link: Link, state: int, error: tuple[str, str] | None = None
    ) -> None:
        if error is not None:
            delivery.local.condition = Condition(*error)
        delivery.update(state)
        delivery.settle()
        link.flow(1)
        self.connection.kick()

    def _telemetry(self, client: _Client, delivery: Delivery, link: Link, amqp: AmqpMessage) -> None:
        try:
            message = from_amqp(amqp)
        except NoBody:
            return self._settle(
                delivery, link, Delivery.REJECTED, ("amqp:not-allowed", '"Invalid action performed"')
            )
        if message_size(message) > MAX_MESSAGE_SIZE:
            return self._settle(
                delivery,
                link,
                Delivery.REJECTED,
                (
                    "amqp:link:message-size-exceeded",
                    f"Message size exceeds the limit of {MAX_MESSAGE_SIZE} bytes",
                ),
            )

        def stored(error: BaseException | None) -> None:
            if error is None:
                self._settle(delivery, link, Delivery.ACCEPTED)
            else:
                self._settle(
                    delivery,
                    link,
                    Delivery.REJECTED,
                    ("com.microsoft:device-container-throttled", str(error)),
                )

        if client.listener.telemetry(message, stored):
            self._settle(delivery, link, Delivery.ACCEPTED)

    def _twin_request(self, client: _Client, delivery: Delivery, link: Link, amqp: AmqpMessage) -> None:
        annotations = amqp.annotations
        if annotations is None or amqp.correlation_id is None:
            return self._settle(delivery, link, Delivery.REJECTED)
        operation = annotations.get("operation")
        request_id = id_text(amqp.correlation_id) or ""
        body = bytes(amqp.body) if isinstance(amqp.body, bytes | memoryview) else b""
        status, answer = 0, b""
        if operation == "GET":
            status, answer = 200, client.listener.get_twin()
        elif operation == "PATCH":
            status = client.listener.patch_reported(body)
        elif operation in ("PUT", "DELETE"):
            (client.features.add if operation == "PUT" else client.features.discard)(DESIRED_PROPERTY_UPDATES)
            client.listener.set_features(client.features)
            status = 200
        self._settle(delivery, link, Delivery.ACCEPTED)
        if status and request_id:
            client.proxy.twin_reply(request_id, status, answer)

    def _method_response(self, client: _Client, delivery: Delivery, link: Link, amqp: AmqpMessage) -> None:
        from proton import int32

        request_id = id_text(amqp.correlation_id)
        self._settle(delivery, link, Delivery.ACCEPTED)
        if request_id is None:
            return
        status = (amqp.properties or {}).get("IoThub-status")
        body = bytes(amqp.body) if isinstance(amqp.body, bytes | memoryview) else b""
        if isinstance(status, int32):
            client.listener.method_response(request_id, int(status), body)
        else:  # edgeHub reads only an AMQP int; anything else is a missing status
            client.listener.method_response(request_id, 400000, b"null")

    def _put_token(self, delivery: Delivery, link: Link, request: AmqpMessage) -> None:
        self._settle(delivery, link, Delivery.ACCEPTED)
        try:
            stored = put_token(request)
        except CbsError as exc:
            log.warning("refused a CBS token from %s: %s", self.connection.peer, exc)
            status, description = 400, str(exc)
        else:
            self.tokens[stored.identity_id] = (stored.token, stored.expiry)
            status, description = 200, "OK"
            client = self.clients.get(stored.identity_id)
            if client is not None:  # a renewal: checked now, so that the next expiry check sees it
                try:
                    renewed = self.head.core.authenticator.authenticate(stored.identity_id, stored.token)
                except AuthenticationError as exc:
                    log.warning(
                        "a renewed token for %s does not authenticate it: %s", stored.identity_id, exc
                    )
                    client.listener.renew(0)
                else:
                    client.listener.renew(renewed.token_expiry)
        if len(self._cbs_replies) < CREDIT:  # at most one per request the link had credit for
            self._cbs_replies.append(reply(request.id, status, description))
        self._send_cbs_replies()

    def _send_cbs_replies(self) -> None:
        """Answers go out once the client's ``$cbs`` receiver is there and has granted credit."""
        sender = self.cbs_sender
        while self._cbs_replies and sender is not None and sender.credit > 0:
            self._replies += 1
            answer = sender.delivery(str(self._replies))
            sender.send(self._cbs_replies.pop(0).encode())
            sender.advance()
            answer.settle()
        self.connection.kick()
