"""The IoT Hub protocol head: what CONNECT, PUBLISH and SUBSCRIBE mean to edgeHub.

It implements the MQTT server's ``Broker``:

- CONNECT: the user name (edgeHub's parser; unparsable → 3), the client id equal to the identity
  (``device`` or ``device/module``), a SAS token checked against the identity's keys (anything wrong →
  5). Tokens are checked again periodically and clients whose token expired are disconnected.
- PUBLISH on a telemetry topic: decoded with edgeHub's templates and property-bag rules; the sender ids
  must be the authenticated identity (stricter than edgeHub, on purpose: spoofed topics are dropped,
  logged and counted); routed; queued for each endpoint; acknowledged after that.
- PUBLISH on ``$iothub/twin/…``: twin GET and reported patches (a malformed twin topic closes the
  connection, as in edgeHub); on ``$iothub/methods/res/…``: a direct-method response.
- SUBSCRIBE: granted at most QoS 1; each filter is classified into the edgeHub feature it turns on
  (module messages, methods, desired-property updates, C2D, twin responses).

It also offers the cloud side: invoke a method, patch desired properties, send C2D to a leaf device.

With the broker mode on (``mqttBroker`` in the manifest), CONNECT also needs the policy's
``mqtt:connect``, and filters and topics that are not IoT Hub's go to user-defined pub/sub
(``broker.BrokerMode``); with ``allow_anonymous`` (``--dev``), clients without credentials may connect
on the loopback plain-MQTT listener and use user topics only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .broker import BrokerMode, Client, is_user_filter
from .identity import Identity, IdentityRegistry, SasError, validate
from .iothub import (
    C2D,
    DESIRED_PROPERTY_UPDATES,
    METHODS,
    MODULE_MESSAGES,
    TopicError,
    UsernameError,
    c2d_topic,
    classify_subscription,
    desired_patch_topic,
    method_request_topic,
    parse_method_response,
    parse_telemetry,
    parse_twin_request,
    parse_username,
    twin_response_topic,
)
from .iothub.twins import TwinError, TwinStore, validate_reported_patch
from .metrics import Reservoir
from .mqtt import codec
from .mqtt.codec import Connect, Publish, Will
from .mqtt.server import AuthResult, CloseConnection, PeerInfo
from .mqtt.session import NotConnected, Session
from .mqtt.topic_trie import valid_filter
from .routing import Message, RoutedEndpoint, RouteTable
from .store import MemoryStore
from .tasks import spawn

log = logging.getLogger("edgehub_emu.hub")

MAX_MESSAGE_SIZE = 262_144
_random = random.Random()


def _is_telemetry(topic: str) -> bool:
    """Telemetry topics go through routes also in the broker mode (malformed ones are dropped there)."""
    return topic.startswith("devices/") and "/messages/events" in topic


def new_guid() -> str:
    """A random (version 4) GUID, like edgeHub's edgeMessageId; without a system call per message."""
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))


EDGE_HUB_MODULE = "$edgeHub"


class MethodError(Exception):
    """A direct method call failed the way edgeHub fails it: 404 not connected, 504 timeout, 400 bad."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class MethodResult:
    status: int
    payload: Any


@dataclass
class ClientState:
    """What edgeHub knows about a connected identity."""

    session: Session
    features: set[str]
    token_expiry: int
    changed: asyncio.Event


class ProtocolHead:
    def __init__(
        self,
        *,
        device_id: str,
        hostnames: list[str],
        identities: IdentityRegistry,
        routes: Callable[[], RouteTable],
        store: MemoryStore,
        twins: TwinStore,
        on_queued: Callable[[list[RoutedEndpoint]], None],
    ) -> None:
        self.device_id = device_id
        self.hostnames = hostnames
        self.identities = identities
        self.routes = routes
        self.store = store
        self.twins = twins
        self.on_queued = on_queued
        self.clients: dict[str, ClientState] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._methods: dict[str, asyncio.Future[MethodResult]] = {}
        self.counters: Counter[str] = Counter()
        self.message_sizes = Reservoir()
        self.broker: BrokerMode | None = None
        self.allow_anonymous = False
        # An upstream listens here: who connected (to open their upstream connection), what was reported.
        self.on_connected: list[Callable[[str], None]] = []
        self.on_reported: list[Callable[[str, dict[str, Any]], None]] = []

    def _client(self, session: Session) -> Client:
        """Who a session is, in the authorization policy's terms."""
        identity = session.identity
        if isinstance(identity, Client):
            return identity
        return Client(session.client_id, identity.device_id, identity.module_id)

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
        client = Client(client_id, client_id, None, anonymous=True)
        decision = self.broker.authorize_connect(client)
        if not decision.allowed:
            return AuthResult(codec.NOT_AUTHORIZED, reason=decision.reason)
        return AuthResult(codec.ACCEPTED, identity=(client, None), client_id=assigned)

    # --- CONNECT -------------------------------------------------------------------------------------

    def authenticate(self, connect: Connect, peer: PeerInfo) -> AuthResult:
        if connect.username is None:
            return self._anonymous(connect, peer)
        try:
            username = parse_username(connect.username)
        except UsernameError as exc:
            return AuthResult(codec.SERVER_UNAVAILABLE, reason=str(exc))
        if not connect.client_id.strip():
            return AuthResult(codec.SERVER_UNAVAILABLE, reason="empty client id")
        claimed = username.device_id + (f"/{username.module_id}" if username.module_id else "")
        if connect.client_id != claimed:
            return AuthResult(
                codec.NOT_AUTHORIZED,
                reason=f"client id {connect.client_id!r} is not the identity {claimed!r}",
            )
        identity = self.identities.get(claimed)
        if identity is None:
            return AuthResult(codec.NOT_AUTHORIZED, reason=f"unknown identity {claimed!r}")
        if connect.password is None:
            return AuthResult(codec.NOT_AUTHORIZED, reason="no password (SAS token)")
        try:
            token = validate(
                connect.password.decode("utf-8", errors="replace"),
                device_id=identity.device_id,
                module_id=identity.module_id,
                identity_keys=identity.keys,
                device_keys=self._device_keys(identity),
                hostnames=self.hostnames,
            )
        except SasError as exc:
            self.counters["connect_failed_auth"] += 1
            return AuthResult(codec.NOT_AUTHORIZED, reason=str(exc))
        if self.broker is not None:
            decision = self.broker.authorize_connect(Client(claimed, identity.device_id, identity.module_id))
            if not decision.allowed:
                return AuthResult(codec.NOT_AUTHORIZED, reason=decision.reason)
        return AuthResult(codec.ACCEPTED, identity=(identity, token.expiry), username=username)

    def _device_keys(self, identity: Identity) -> tuple[str, ...]:
        device = self.identities.get(identity.device_id)
        return device.keys if device is not None else ()

    def connected(self, session: Session, present: bool) -> None:
        identity, expiry = session.identity
        session.identity = identity
        if self.broker is not None:
            self.broker.connected(session, present)
        if isinstance(identity, Client):
            log.info("anonymous client %s connected (session present: %s)", identity.client_id, present)
            return
        state = ClientState(session, set(), expiry, asyncio.Event())
        for topic_filter in session.subscriptions:
            state.features.add(classify_subscription(topic_filter))
        self.clients[identity.id] = state
        self.counters["connect_success"] += 1
        log.info("%s connected (session present: %s)", identity.id, present)
        self._notify(identity.id)
        for listener in self.on_connected:
            listener(identity.id)

    def disconnected(self, session: Session, graceful: bool, will: Will | None) -> None:
        identity = session.identity
        if self.broker is not None:
            self.broker.disconnected(session)
        if isinstance(identity, Client):
            if will is not None and not graceful:
                self._publish_will(session, will)
            return
        if not isinstance(identity, Identity):
            return
        state = self.clients.get(identity.id)
        if state is not None and state.session is session:
            del self.clients[identity.id]
        log.info("%s disconnected%s", identity.id, "" if graceful else " (not graceful)")
        if will is not None and not graceful:
            self._publish_will(session, will)
        self._notify(identity.id)

    def _publish_will(self, session: Session, will: Will) -> None:
        packet = Publish(will.topic, will.payload, will.qos, will.retain)
        try:
            if isinstance(session.identity, Client) or (
                self.broker is not None and not _is_telemetry(will.topic)
            ):
                result = self.publish(session, packet)
            else:
                result = self._telemetry(session, packet, extra={"MessageType": "Will"})
        except Exception:
            log.exception("could not route the will of %s", session.client_id)
            return
        if result is not None:
            spawn(result, f"storing the will of {session.client_id}")

    def check_tokens(self, now: float | None = None) -> list[str]:
        """Disconnect clients whose token has expired (edgeHub re-checks every five minutes)."""
        current = time.time() if now is None else now
        expired = [i for i, s in self.clients.items() if s.token_expiry + 300 < current]
        for identity_id in expired:
            connection = self.clients[identity_id].session.connection
            if connection is not None:
                connection.close("SAS token expired")
        return expired

    # --- SUBSCRIBE --------------------------------------------------------------------------------

    def subscribe(self, session: Session, requests: list[tuple[str, int]]) -> list[int]:
        state = self._state(session)
        codes = []
        for topic_filter, qos in requests:
            if self.broker is not None and is_user_filter(topic_filter):
                codes.append(self.broker.subscribe(self._client(session), topic_filter, qos))
                continue
            if not valid_filter(topic_filter) or isinstance(session.identity, Client):
                codes.append(codec.SUBACK_FAILURE)  # anonymous clients have no IoT Hub topics
                continue
            codes.append(min(qos, 1))
            feature = classify_subscription(topic_filter)
            if state is not None:
                state.features.add(feature)
        if state is not None:
            self._notify(state.session.identity.id)
        return codes

    def subscribed(self, session: Session, granted: list[tuple[str, int]]) -> None:
        if self.broker is not None:
            self.broker.subscribed(session, granted)

    def unsubscribe(self, session: Session, filters: list[str]) -> None:
        if self.broker is not None:
            self.broker.unsubscribe(session.client_id, filters)
        state = self._state(session)
        if state is None:
            return
        state.features = {classify_subscription(f) for f in session.subscriptions}
        self._notify(state.session.identity.id)

    def _state(self, session: Session) -> ClientState | None:
        identity = session.identity
        state = self.clients.get(identity.id) if isinstance(identity, Identity) else None
        return state if state is not None and state.session is session else None

    # --- waiting for clients ----------------------------------------------------------------------

    def _notify(self, identity_id: str) -> None:
        event = self._waiters.pop(identity_id, None)
        if event is not None:
            event.set()

    async def wait_for_change(self, identity_id: str, timeout: float) -> None:
        """Until ``identity_id`` connects, disconnects or changes its subscriptions (or ``timeout``)."""
        event = self._waiters.get(identity_id)
        if event is None:
            event = self._waiters[identity_id] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    def client(self, identity_id: str, feature: str | None = None) -> ClientState | None:
        state = self.clients.get(identity_id)
        if state is None or (feature is not None and feature not in state.features):
            return None
        return state

    # --- PUBLISH ----------------------------------------------------------------------------------

    def publish(self, session: Session, packet: Publish) -> Awaitable[Any] | None:
        topic = packet.topic
        if self.broker is not None and not topic.startswith("$iothub/") and not _is_telemetry(topic):
            return self.broker.publish(self._client(session), packet)
        if isinstance(session.identity, Client):
            self.counters["dropped_anonymous"] += 1
            log.warning(
                "dropped %s's message on %r: anonymous clients have no IoT Hub topics",
                session.client_id,
                topic,
            )
            return None
        if topic.startswith("$iothub/twin/"):
            self._twin_request(session, packet)
            return None
        if topic.startswith("$iothub/methods/res/"):
            self._method_response(packet)
            return None
        return self._telemetry(session, packet)

    def _telemetry(
        self, session: Session, packet: Publish, extra: dict[str, str] | None = None
    ) -> Awaitable[Any] | None:
        identity: Identity = session.identity
        try:
            telemetry = parse_telemetry(packet.topic)
        except TopicError as exc:
            self.counters["dropped_bad_topic"] += 1
            log.warning("dropped a message from %s: %s", identity.id, exc)
            return None
        if telemetry.device_id != identity.device_id or telemetry.module_id != identity.module_id:
            self.counters["dropped_spoofed"] += 1
            sender = telemetry.device_id + (f"/{telemetry.module_id}" if telemetry.module_id else "")
            log.warning(
                "dropped a message from %s published as %s (topic %r)", identity.id, sender, packet.topic
            )
            return None
        properties = telemetry.properties
        if packet.retain:
            properties["mqtt-retain"] = "true"
        if packet.dup:
            properties["mqtt-dup"] = "true"
        if extra:
            properties.update(extra)
        system = telemetry.system_properties
        system["edgeMessageId"] = new_guid()
        system["edgeHubOriginInterface"] = (
            "internal" if telemetry.device_id == self.device_id else "downstream"
        )
        model_id = getattr(session.username, "model_id", None)
        if model_id:
            system["modelId"] = model_id
        size = len(packet.payload) + sum(
            len(k) + len(v or "") for d in (properties, system) for k, v in d.items()
        )
        if size > MAX_MESSAGE_SIZE:
            self.counters["dropped_too_large"] += 1
            log.warning(
                "dropped a message of %d bytes from %s (edgeHub's limit is %d)",
                size,
                identity.id,
                MAX_MESSAGE_SIZE,
            )
            return None
        message = Message(body=packet.payload, properties=properties, system_properties=system)
        self.message_sizes.observe(size)
        return self.route(message)

    def route(self, message: Message) -> Awaitable[Any] | None:
        """Route a message and queue it for every endpoint; the result completes when it is stored."""
        self.counters["messages_received"] += 1
        copies = self.routes().route(message)
        if not copies:
            self.counters["dropped_no_route"] += 1
            log.debug("no route for a message from %s", message.source)
            return None
        result = self.store.add(message, copies)
        log.debug(
            "routed a message from %s to %s", message.source, ", ".join(str(c.endpoint) for c in copies)
        )
        self.on_queued(copies)
        return result

    # --- twins --------------------------------------------------------------------------------------

    def _twin_request(self, session: Session, packet: Publish) -> None:
        identity: Identity = session.identity
        try:
            request = parse_twin_request(packet.topic)
        except TopicError as exc:
            raise CloseConnection(str(exc)) from None
        if request.operation == "GET":
            self.counters["get_twin"] += 1
            body = json.dumps(self.twins.twin(identity.id).document()).encode()
            self._respond(session, twin_response_topic(200, request.rid or ""), body)
            return
        status = 204
        try:
            try:
                patch = json.loads(packet.payload)
            except ValueError as exc:
                raise TwinError(500, f"reported patch is not JSON: {exc}") from None
            validate_reported_patch(patch, len(packet.payload))
            self.twins.patch_reported(identity.id, patch)
            self.counters["reported_properties"] += 1
            for listener in self.on_reported:
                listener(identity.id, patch)
            self._route_twin_change(identity, packet.payload)
        except TwinError as exc:
            status = exc.status
            log.warning("refused a reported patch from %s: %s", identity.id, exc)
        if request.rid is not None:
            self._respond(session, twin_response_topic(status, request.rid), b"")

    def _route_twin_change(self, identity: Identity, patch: bytes) -> None:
        system: dict[str, str | None] = {
            "messageType": "twinChangeNotification",
            "connectionDeviceId": self.device_id,
            "connectionModuleId": EDGE_HUB_MODULE,
            "rpSenderDeviceId": identity.device_id,
            "edgeMessageId": new_guid(),
        }
        if identity.module_id is not None:
            system["rpSenderModuleId"] = identity.module_id
        result = self.route(Message(body=patch, system_properties=system))
        if result is not None:
            spawn(result, f"storing the twin change notification of {identity.id}")

    def _respond(self, session: Session, topic: str, body: bytes) -> None:
        """Send to a client only if one of its filters matches (edgeHub discards it otherwise)."""
        qos = session.granted_qos(topic)
        if qos is None:
            log.info("%s has no subscription for %s: response discarded", session.client_id, topic)
            return
        with contextlib.suppress(NotConnected):
            session.publish(topic, body, min(qos, 1))

    def push_desired(self, identity_id: str, patch: dict[str, Any]) -> bool:
        """Send a desired patch to the module if it listens for them (missed patches are not replayed)."""
        state = self.client(identity_id, DESIRED_PROPERTY_UPDATES)
        if state is None:
            return False
        self._respond(state.session, desired_patch_topic(patch["$version"]), json.dumps(patch).encode())
        return True

    # --- direct methods ---------------------------------------------------------------------------

    async def invoke_method(
        self,
        identity_id: str,
        method_name: str,
        payload: Any = None,
        response_timeout: float = 30,
        connect_timeout: float = 0,
    ) -> MethodResult:
        """Call a direct method on a connected module or device, with edgeHub's results."""
        if not method_name or len(method_name) > 100:
            raise MethodError(400, "methodName must be 1 to 100 characters")
        if not 5 <= response_timeout <= 300:
            raise MethodError(400, "responseTimeoutInSeconds must be between 5 and 300")
        if not 0 <= connect_timeout <= 300:
            raise MethodError(400, "connectTimeoutInSeconds must be between 0 and 300")
        deadline = time.monotonic() + connect_timeout
        state = self.client(identity_id, METHODS)
        while state is None and time.monotonic() < deadline:
            await self.wait_for_change(identity_id, deadline - time.monotonic())
            state = self.client(identity_id, METHODS)
        if state is None:
            raise MethodError(404, f"Client {identity_id} not found")
        rid = uuid.uuid4().hex
        future: asyncio.Future[MethodResult] = asyncio.get_running_loop().create_future()
        self._methods[rid] = future
        topic = method_request_topic(method_name, rid)
        body = b"" if payload is None else json.dumps(payload).encode()
        try:
            qos = state.session.granted_qos(topic)
            if qos is None:
                raise MethodError(404, f"Client {identity_id} not found")
            state.session.publish(topic, body, min(qos, 1))
            self.counters["direct_methods"] += 1
            async with asyncio.timeout(response_timeout):
                return await future
        except NotConnected:
            raise MethodError(404, f"Client {identity_id} not found") from None
        except TimeoutError:
            raise MethodError(
                504, f"Timed out waiting for device to respond to method request {rid}"
            ) from None
        finally:
            self._methods.pop(rid, None)

    def _method_response(self, packet: Publish) -> None:
        response = parse_method_response(packet.topic)
        if response is None:
            log.warning("ignored a malformed method response on %r", packet.topic)
            return
        future = self._methods.get(response.rid.lower())
        if future is None or future.done():
            log.info("ignored a method response for unknown request %r", response.rid)
            return
        payload: Any = None
        if packet.payload:
            try:
                payload = json.loads(packet.payload)
            except ValueError:
                payload = packet.payload.decode("utf-8", errors="replace")
        future.set_result(MethodResult(response.status, payload))

    # --- cloud to device ----------------------------------------------------------------------------

    def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: dict[str, str | None] | None = None,
        system_properties: dict[str, str | None] | None = None,
    ) -> asyncio.Future[None] | None:
        """Send a cloud-to-device message to a connected leaf device subscribed to C2D (modules cannot
        receive C2D). Raises MethodError(404) otherwise: C2D is relayed, never stored, by edgeHub."""
        identity = self.identities.get(device_id)
        if identity is None or identity.module_id is not None:
            raise MethodError(404, f"{device_id} is not a device (modules cannot receive C2D messages)")
        state = self.client(device_id, C2D)
        if state is None:
            raise MethodError(404, f"device {device_id} is not connected with a C2D subscription")
        system = {"to": f"/devices/{device_id}/messages/deviceBound", **(system_properties or {})}
        topic = c2d_topic(device_id, properties or {}, system)
        qos = state.session.granted_qos(topic)
        if qos is None:
            raise MethodError(404, f"device {device_id} has no subscription matching {topic}")
        return state.session.publish(topic, body, min(qos, 1))

    def module_subscribed(self, identity_id: str) -> ClientState | None:
        return self.client(identity_id, MODULE_MESSAGES)
