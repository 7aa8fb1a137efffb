"""The MQTT protocol head: what CONNECT, PUBLISH and SUBSCRIBE mean to edgeHub, as calls on the core.

It implements the MQTT server's ``Broker``:

- CONNECT: the user name (edgeHub's parser; unparsable → 3), the client id equal to the identity
  (``device`` or ``device/module``), a SAS token checked by the core (anything wrong → 5). An accepted
  client is registered with the core with a device proxy; its device listener takes what it sends.
- PUBLISH: the topic's meaning is decided once (``topics.publish_kind``), then: telemetry is decoded
  with edgeHub's templates and property-bag rules, its sender ids must be the authenticated identity
  (stricter than edgeHub, on purpose: spoofed topics are dropped, logged and counted), and it is
  routed and acknowledged once stored; ``$iothub/twin/…`` is a twin GET or reported patch (a malformed
  twin topic closes the connection, as in edgeHub); ``$iothub/methods/res/…`` a method response.
- SUBSCRIBE: granted at most QoS 1; the filters turn edgeHub features on (module messages, methods,
  desired-property updates, C2D, twin responses).

With the broker mode (``mqttBroker``), CONNECT also needs the policy's ``mqtt:connect``, and user
topics go to ``broker.BrokerMode``; with ``allow_anonymous`` (``--dev``), clients without credentials
may connect on the loopback plain-MQTT listener and use user topics only.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from ...broker import BrokerMode, Client
from ...core import AuthenticationError, DeviceListener, HubCore, log_store_failure
from ...identity import Identity
from ...iothub import (
    TopicError,
    UsernameError,
    parse_method_response,
    parse_telemetry_cached,
    parse_twin_request,
    parse_username,
    twin_response_topic,
)
from ...mqtt import codec
from ...mqtt.codec import Connect, Publish, Will
from ...mqtt.server import AuthResult, CloseConnection, PeerInfo, Stored
from ...mqtt.session import Session
from ...mqtt.topic_trie import valid_filter
from ...routing import Message
from ...routing.message import MODEL_ID
from .proxy import TRANSPORTS, MqttProxy
from .topics import TopicKind, features, is_telemetry_filter, is_user_subscription, publish_kind

log = logging.getLogger("edgehub_emu.hub")


@dataclass(slots=True)
class Attached:
    """What the head keeps on the MQTT session of an authenticated identity."""

    identity: Identity
    listener: DeviceListener
    proxy: MqttProxy
    model_id: str | None


class MqttHead:
    def __init__(self, core: HubCore, allow_anonymous: bool = False) -> None:
        self.core = core
        self.counters = core.counters
        self.broker: BrokerMode | None = None
        self.allow_anonymous = allow_anonymous

    # --- CONNECT -----------------------------------------------------------------------------------

    def authenticate(self, connect: Connect, peer: PeerInfo) -> AuthResult:
        if connect.username is None:
            return self._anonymous(connect, peer)
        try:
            username = parse_username(connect.username)
        except UsernameError as bad_name:
            return AuthResult(codec.SERVER_UNAVAILABLE, reason=str(bad_name))
        if not connect.client_id.strip():
            return AuthResult(codec.SERVER_UNAVAILABLE, reason="empty client id")
        claimed = username.device_id + (f"/{username.module_id}" if username.module_id else "")
        if connect.client_id != claimed:
            return AuthResult(
                codec.NOT_AUTHORIZED,
                reason=f"client id {connect.client_id!r} is not the identity {claimed!r}",
            )
        if self.core.identities.get(claimed) is None:
            return AuthResult(codec.NOT_AUTHORIZED, reason=f"unknown identity {claimed!r}")
        if connect.password is None:
            return AuthResult(codec.NOT_AUTHORIZED, reason="no password (SAS token)")
        try:
            authenticated = self.core.authenticator.authenticate(
                claimed, connect.password.decode("utf-8", errors="replace")
            )
        except AuthenticationError as refused:
            self.counters["connect_failed_auth"] += 1
            return AuthResult(codec.NOT_AUTHORIZED, reason=str(refused))
        identity = authenticated.identity
        if self.broker is not None:
            decision = self.broker.authorize_connect(Client(claimed, identity.device_id, identity.module_id))
            if not decision.allowed:
                return AuthResult(codec.NOT_AUTHORIZED, reason=decision.reason)
        return AuthResult(codec.ACCEPTED, identity=authenticated, username=username)

    def _anonymous(self, connect: Connect, peer: PeerInfo) -> AuthResult:
        """``--dev``: a local tool without credentials, on the loopback plain-MQTT listener."""
        if self.broker is None or not self.allow_anonymous or peer.transport != "tcp":
            why = "" if self.broker is None else " (anonymous clients need --dev and the plain MQTT port)"
            return AuthResult(codec.NOT_AUTHORIZED, reason=f"no credentials{why}")
        client_id = connect.client_id
        assigned = None
        if not client_id:
            if not connect.clean_session:
                return AuthResult(codec.IDENTIFIER_REJECTED, reason="empty client id with clean session 0")
            client_id = assigned = f"anonymous-{uuid.uuid4().hex[:12]}"
        elif self.core.identities.get(client_id) is not None:
            # It would take over that identity's session: its in-flight messages, its queue.
            return AuthResult(
                codec.IDENTIFIER_REJECTED,
                reason=f"client id {client_id!r} is an identity of the deployment: anonymous --dev clients "
                "may not use it (connect with its credentials, or pick another client id)",
            )
        client = Client(client_id, client_id, None, anonymous=True)
        decision = self.broker.authorize_connect(client)
        if not decision.allowed:
            return AuthResult(codec.NOT_AUTHORIZED, reason=decision.reason)
        return AuthResult(codec.ACCEPTED, identity=client, client_id=assigned)

    def connected(self, session: Session, present: bool) -> None:
        if isinstance(session.identity, Client):
            if self.broker is not None:
                self.broker.connected(session, present)
            log.info("anonymous client %s connected (session present: %s)", session.client_id, present)
            return
        authenticated = session.identity
        identity: Identity = authenticated.identity
        session.identity = identity
        attached: Attached | None = session.attachment
        proxy = (
            attached.proxy
            if attached is not None
            else MqttProxy(session, identity.device_id, identity.module_id)
        )
        connection = session.connection
        proxy.transport = TRANSPORTS.get(getattr(connection, "transport_kind", ""), "mqtt")
        listener = self.core.connect(
            identity, proxy, authenticated.token_expiry, features(session.subscriptions)
        )
        session.attachment = Attached(identity, listener, proxy, getattr(session.username, "model_id", None))
        if self.broker is not None:
            self.broker.connected(session, present)
        log.info("%s connected over %s (session present: %s)", identity.id, proxy.transport, present)

    def disconnected(self, session: Session, graceful: bool, will: Will | None) -> None:
        if self.broker is not None:
            self.broker.disconnected(session)
        attached: Attached | None = session.attachment
        if attached is not None:
            attached.listener.disconnected(graceful)
        if will is not None and not graceful:
            self._publish_will(session, will)

    def _publish_will(self, session: Session, will: Will) -> None:
        packet = Publish(will.topic, will.payload, will.qos, will.retain)
        kind = publish_kind(will.topic, self.broker is not None)
        attached: Attached | None = session.attachment
        if kind is TopicKind.TELEMETRY and attached is not None:
            self._telemetry(attached, packet, log_store_failure, will=True)
        else:
            self.publish(session, packet, log_store_failure)

    # --- PUBLISH ---------------------------------------------------------------------------------------

    def publish(self, session: Session, packet: Publish, stored: Stored) -> bool:
        attached: Attached | None = session.attachment
        if attached is not None and packet.topic.startswith("devices/") and self.broker is None:
            return self._telemetry(attached, packet, stored)  # the common case, decided without more calls
        kind = publish_kind(packet.topic, self.broker is not None)
        if kind is TopicKind.USER:
            assert self.broker is not None
            return self.broker.publish(self._client(session), packet, stored)
        if attached is None:
            self.counters["dropped_anonymous"] += 1
            log.warning(
                "dropped %s's message on %r: anonymous clients have no IoT Hub topics",
                session.client_id,
                packet.topic,
            )
            return True
        if kind is TopicKind.TELEMETRY:
            return self._telemetry(attached, packet, stored)
        if kind is TopicKind.TWIN:
            self._twin_request(attached, packet)
        else:
            response = parse_method_response(packet.topic)
            if response is None:
                log.warning("ignored a malformed method response on %r", packet.topic)
            else:
                attached.listener.method_response(response.rid, response.status, packet.payload)
        return True

    def _telemetry(self, attached: Attached, packet: Publish, stored: Stored, will: bool = False) -> bool:
        identity = attached.identity
        try:
            telemetry = parse_telemetry_cached(packet.topic)
        except TopicError as exc:  # (edgeHub drops it and acknowledges it)
            self.counters["dropped_bad_topic"] += 1
            log.warning("dropped a message from %s: %s", identity.id, exc)
            return True
        if telemetry.device_id != identity.device_id or telemetry.module_id != identity.module_id:
            self.counters["dropped_spoofed"] += 1
            sender = telemetry.device_id + (f"/{telemetry.module_id}" if telemetry.module_id else "")
            log.warning(
                "dropped a message from %s published as %s (topic %r)", identity.id, sender, packet.topic
            )
            return True
        properties = telemetry.properties  # shared by every publish on this topic: copied to add to it
        if packet.retain or packet.dup or will:
            properties = dict(properties)
            if packet.retain:
                properties["mqtt-retain"] = "true"
            if packet.dup:
                properties["mqtt-dup"] = "true"
            if will:
                properties["MessageType"] = "Will"
        system = dict(telemetry.system_properties)
        if attached.model_id:
            system[MODEL_ID] = attached.model_id
        message = Message(body=packet.payload, properties=properties, system_properties=system)
        return attached.listener.telemetry(message, stored)

    def _twin_request(self, attached: Attached, packet: Publish) -> None:
        try:
            request = parse_twin_request(packet.topic)
        except TopicError as exc:
            raise CloseConnection(str(exc)) from None
        if request.operation == "GET":
            attached.proxy.respond(twin_response_topic(200, request.rid or ""), attached.listener.get_twin())
            return
        status = attached.listener.patch_reported(packet.payload)
        if request.rid is not None:
            attached.proxy.respond(twin_response_topic(status, request.rid), b"")

    # --- SUBSCRIBE ---------------------------------------------------------------------------------

    def subscribe(self, session: Session, requests: list[tuple[str, int]]) -> list[int]:
        broker_mode = self.broker is not None
        codes = []
        for topic_filter, qos in requests:
            if is_user_subscription(topic_filter, broker_mode):
                assert self.broker is not None
                codes.append(self.broker.subscribe(self._client(session), topic_filter, qos))
            elif broker_mode and is_telemetry_filter(topic_filter):
                # Telemetry is routed, never published to subscribers: refuse rather than grant silence.
                self.counters["refused_telemetry_subscription"] += 1
                log.warning(
                    "refused %s's subscription to %r: telemetry goes through the routes, not to subscribers "
                    "(route it to a module input, or publish on a user topic of the broker mode)",
                    session.client_id,
                    topic_filter,
                )
                codes.append(codec.SUBACK_FAILURE)
            elif not valid_filter(topic_filter) or session.attachment is None:
                codes.append(codec.SUBACK_FAILURE)  # anonymous clients have no IoT Hub topics
            else:
                codes.append(min(qos, 1))
        return codes

    def subscribed(self, session: Session, granted: list[tuple[str, int]]) -> None:
        if self.broker is not None:
            self.broker.subscribed(session, granted)
        self._features_changed(session)

    def unsubscribe(self, session: Session, filters: list[str]) -> None:
        if self.broker is not None:
            self.broker.unsubscribe(session.client_id, filters)
        self._features_changed(session)

    def _features_changed(self, session: Session) -> None:
        attached: Attached | None = session.attachment
        if attached is not None and session.connection is not None:
            attached.listener.set_features(features(session.subscriptions))

    def _client(self, session: Session) -> Client:
        """Who a session is, in the authorization policy's terms."""
        identity = session.identity
        if isinstance(identity, Client):
            return identity
        return Client(session.client_id, identity.device_id, identity.module_id)
