"""``--upstream iothub:…``: the hub's upstream is an IoT hub or a parent edge hub (nested edge).

Like edgeHub, it opens one MQTT-over-TLS connection per identity that has something to do upstream (a
module that connected here, or sent a ``$upstream`` message), as that identity: client id
``{device}/{module}``, a SAS token signed with the edge device's key (what a parent edge hub accepts for
its child's modules; a real IoT hub needs per-identity keys, given with ``keys``) and renewed by
reconnecting before it expires. Over each connection:

- ``$upstream`` messages go out on the identity's telemetry topic, properties in the bag;
- direct-method calls come down, are invoked on the local module, and the result goes back;
- desired-property patches come down and are applied to the local twin (and pushed to the module);
  after a reconnect the upstream twin is read again, and what changed upstream while the connection
  was down is applied too (the first read only sets the baseline: the local deployment's desired
  properties are not replaced by an upstream that never set any);
- reported-property patches the module makes here are sent up; while the upstream is away they are
  merged and sent when it returns.

The local edge device's id is mapped to the connection string's ``DeviceId`` (``edge-device/filter``
is ``child/filter`` upstream); leaf devices keep their ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..identity import make_token
from ..iothub import (
    DESIRED_FILTER,
    DESIRED_PATCH_PREFIX,
    METHODS_FILTER,
    TWIN_RESPONSE_FILTER,
    method_response_topic,
    parse_method_request,
    parse_twin_response,
    reported_patch_topic,
    telemetry_topic,
    twin_get_topic,
)
from ..iothub.twins import combine, diff
from ..mqtt.codec import Publish
from ..routing import Message
from ..routing.message import CONNECTION_DEVICE_ID, CONNECTION_MODULE_ID
from ..tasks import spawn
from .base import Upstream, UpstreamHooks
from .capture import UpstreamCapture
from .config import IotHubUpstreamConfig
from .mqtt_bridge import tls_context
from .mqtt_client import ClientOptions, MqttClient

log = logging.getLogger("edgehub_emu.upstream")

API_VERSION = "2021-04-12"
TOKEN_LIFETIME = 3600
SUBSCRIPTIONS = [(METHODS_FILTER, 1), (DESIRED_FILTER, 1), (TWIN_RESPONSE_FILTER, 1)]
SYNC = "sync"  # request ids of our own twin reads


class IotHubUpstream(Upstream):
    def __init__(
        self,
        config: IotHubUpstreamConfig,
        local_device_id: str,
        capture: UpstreamCapture,
        hooks: UpstreamHooks,
        *,
        ca_file: Path | None = None,
        keys: dict[str, str] | None = None,
        token_lifetime: int = TOKEN_LIFETIME,
    ) -> None:
        super().__init__(capture)
        self.config = config
        self.local_device_id = local_device_id
        self.tls = tls_context(ca_file)
        self.invoke_method = hooks.invoke_method
        self.patch_desired = hooks.patch_desired
        self.keys = keys or {}
        self.token_lifetime = token_lifetime
        self.connections: dict[str, MqttClient] = {}
        self.counters: Counter[str] = Counter()
        self._reported: dict[str, dict[str, Any]] = {}
        self._desired_seen: dict[str, dict[str, Any]] = {}  # the upstream's desired, with $version
        self._rid = 0
        self._stopping = False

    # --- identities ---------------------------------------------------------------------------------

    def upstream_id(self, local_id: str) -> str:
        device, _, module = local_id.partition("/")
        if device == self.local_device_id:
            device = self.config.device_id
        return f"{device}/{module}" if module else device

    def local_id(self, upstream_id: str) -> str:
        device, _, module = upstream_id.partition("/")
        if device == self.config.device_id:
            device = self.local_device_id
        return f"{device}/{module}" if module else device

    def connection(self, local_id: str) -> MqttClient:
        """The upstream connection of a local identity, opened on first use."""
        client = self.connections.get(local_id)
        if client is not None or self._stopping:
            return client  # type: ignore[return-value]
        remote = self.upstream_id(local_id)
        device, _, module = remote.partition("/")
        resource = f"{self.config.hostname}/devices/{device}" + (f"/modules/{module}" if module else "")
        key = self.keys.get(local_id, self.config.key)

        def password() -> bytes:
            return make_token(resource, key, int(time.time()) + self.token_lifetime).encode()

        client = MqttClient(
            ClientOptions(
                self.config.connect_host,
                self.config.port,
                remote,
                username=f"{self.config.hostname}/{remote}/?api-version={API_VERSION}",
                password=password,
                tls=self.tls,
                server_hostname=self.config.connect_host,
                subscriptions=list(SUBSCRIPTIONS),
                reconnect_after=self.token_lifetime - min(600, self.token_lifetime / 5),
            ),
            on_message=lambda packet: self._from_upstream(local_id, packet),
            on_connected=lambda: self._connected(local_id),
            name=f"upstream connection of {remote}",
        )
        self.connections[local_id] = client
        client.start()
        return client

    def identity_connected(self, local_id: str) -> None:
        """A module connected here: open its upstream connection, so that calls can come down."""
        self.connection(local_id)

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*(c.stop() for c in self.connections.values()), return_exceptions=True)
        self.connections.clear()

    def describe(self) -> str:
        return self.config.describe()

    def status(self) -> dict[str, Any]:
        return {
            "target": self.describe(),
            "connections": {
                self.upstream_id(i): {"connected": c.connected.is_set(), "error": c.last_error}
                for i, c in self.connections.items()
            },
        }

    # --- up -----------------------------------------------------------------------------------------

    async def forward(self, message: Message) -> None:
        system = message.system_properties
        device = system.get(CONNECTION_DEVICE_ID) or self.local_device_id
        module = system.get(CONNECTION_MODULE_ID)
        local_id = f"{device}/{module}" if module else device
        remote_device = self.upstream_id(device)
        topic = telemetry_topic(remote_device, module, message.properties, system)
        await self.connection(local_id).publish(topic, message.body, 1)
        self.counters["sent"] += 1

    def reported(self, local_id: str, patch: dict[str, Any]) -> None:
        """A reported-property patch made here: send it up now, or when the connection returns."""
        self._reported[local_id] = combine(self._reported.get(local_id, {}), patch)
        client = self.connection(local_id)
        if client is not None and client.connected.is_set():
            self._flush_reported(local_id)

    def _connected(self, local_id: str) -> None:
        self._flush_reported(local_id)
        self._rid += 1
        topic = twin_get_topic(f"{SYNC}{self._rid}")
        spawn(self._publish_quietly(local_id, topic, b""), f"reading the upstream twin of {local_id}")

    async def _publish_quietly(self, local_id: str, topic: str, body: bytes) -> None:
        try:
            await self.connection(local_id).publish(topic, body, 0)
        except ConnectionError as exc:
            log.info("%s: %s", local_id, exc)

    def _twin_read(self, local_id: str, twin: dict[str, Any]) -> None:
        """The upstream twin after a (re)connect: apply desired changes missed while away."""
        desired = twin.get("desired")
        if not isinstance(desired, dict):
            return
        self.counters["twin_reads"] += 1
        seen = self._desired_seen.get(local_id)
        self._desired_seen[local_id] = desired
        if seen is None or desired.get("$version", 0) == seen.get("$version", 0):
            return
        patch = diff(seen, desired)
        if patch:
            log.info("applying desired properties of %s changed upstream while it was away", local_id)
            self.patch_desired(local_id, patch)
            self.counters["desired"] += 1

    def _flush_reported(self, local_id: str) -> None:
        patch = self._reported.pop(local_id, None)
        if patch is None:
            return
        spawn(self._send_reported(local_id, patch), f"reporting properties of {local_id} upstream")

    async def _send_reported(self, local_id: str, patch: dict[str, Any]) -> None:
        self._rid += 1
        topic = reported_patch_topic(f"up{self._rid}")
        try:
            await self.connection(local_id).publish(topic, json.dumps(patch).encode(), 1)
            self.counters["reported"] += 1
        except ConnectionError as exc:
            log.info("reported properties of %s wait for the upstream: %s", local_id, exc)
            self._reported[local_id] = combine(patch, self._reported.get(local_id, {}))

    # --- down ---------------------------------------------------------------------------------------

    def _from_upstream(self, local_id: str, packet: Publish) -> None:
        topic = packet.topic
        request = parse_method_request(topic)
        if request is not None:
            name, rid = request
            spawn(self._call(local_id, name, rid, packet.payload), f"method {name} on {local_id}")
        elif topic.startswith(DESIRED_PATCH_PREFIX):
            try:
                patch = json.loads(packet.payload)
            except ValueError:
                log.warning("ignored a desired patch for %s that is not JSON", local_id)
                return
            if isinstance(patch, dict):
                version = patch.pop("$version", None)
                seen = self._desired_seen.get(local_id)
                if seen is not None:
                    self._desired_seen[local_id] = {**combine(seen, patch), "$version": version}
                self.patch_desired(local_id, patch)
                self.counters["desired"] += 1
        elif (response := parse_twin_response(topic)) is not None:
            status, rid = response
            if status == 200 and rid.startswith(SYNC):
                try:
                    twin = json.loads(packet.payload)
                except ValueError:
                    return
                if isinstance(twin, dict):
                    self._twin_read(local_id, twin)
        else:
            log.info("ignored %r from upstream for %s", topic, local_id)

    async def _call(self, local_id: str, name: str, rid: str, body: bytes) -> None:
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = body.decode("utf-8", errors="replace")
        status, result = await self.invoke_method(local_id, name, payload, 30.0)
        self.counters["methods"] += 1
        response = b"" if result is None else json.dumps(result).encode()
        try:
            await self.connection(local_id).publish(method_response_topic(status, rid), response, 1)
        except ConnectionError as exc:
            log.warning("could not answer method %s for %s upstream: %s", name, local_id, exc)
