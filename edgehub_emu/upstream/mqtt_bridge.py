"""``--upstream mqtt://…``: the hub's upstream is another MQTT broker (the team's, or mosquitto).

Two kinds of traffic go over one connection:

- ``$upstream`` messages (from routes) are published on the IoT Hub telemetry topic of their sender
  (``devices/{d}/modules/{m}/messages/events/{bag}``), QoS 1, from the ``$upstream`` queue.
- ``mqttBroker.bridges`` settings: a local user-topic publish that an ``out`` setting matches is queued
  durably (the ``bridge`` endpoint) before its publisher gets the PUBACK, then published on the remote
  topic; remote messages that an ``in`` setting matches are published locally to the subscribers
  the policy let subscribe. A ``both`` setting would echo our own messages back from the remote; those
  echoes are recognised and dropped, and messages that came in are never sent out again.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

from ..broker import Bridge
from ..iothub import telemetry_topic
from ..mqtt.codec import Publish
from ..routing import Message
from ..routing.message import CONNECTION_DEVICE_ID, CONNECTION_MODULE_ID
from .base import Stored, Upstream, UpstreamHooks
from .capture import UpstreamCapture
from .config import MqttUpstreamConfig
from .mqtt_client import ClientOptions, MqttClient

log = logging.getLogger("edgehub_emu.upstream")

TOPIC_PROPERTY = "mqtt-topic"
QOS_PROPERTY = "mqtt-qos"
_ECHO_MEMORY = 10_000


def _echo_key(topic: str, payload: bytes) -> tuple[str, bytes]:
    """What recognises a message of ours when the remote broker sends it back."""
    return topic, hashlib.blake2b(payload, digest_size=16).digest()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class MqttBridge(Upstream):
    def __init__(
        self,
        config: MqttUpstreamConfig,
        device_id: str,
        capture: UpstreamCapture,
        hooks: UpstreamHooks,
        *,
        ca_file: Path | None = None,
    ) -> None:
        super().__init__(capture)
        self.config = config
        self.enqueue = hooks.enqueue_bridged
        self.publish_local = hooks.publish_local
        self.bridge_sink = self._send_bridged
        self.bridges: tuple[Bridge, ...] = ()
        self.counters: Counter[str] = Counter()
        self._echoes: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        password = config.password.encode() if config.password is not None else None
        self.client = MqttClient(
            ClientOptions(
                config.host,
                config.port,
                config.client_id or f"edgehub-emu-{device_id}",
                username=config.username,
                password=lambda: password,
                tls=tls_context(ca_file) if config.tls else None,
                server_hostname=config.host,
            ),
            on_message=self._remote_message,
            name=f"upstream {config.describe()}",
        )

    def describe(self) -> str:
        return self.config.describe()

    async def start(self) -> None:
        self.client.start()

    async def stop(self) -> None:
        await self.client.stop()

    def status(self) -> dict[str, Any]:
        client = self.client
        return {
            "target": self.describe(),
            "connections": {
                client.options.client_id: {"connected": client.connected.is_set(), "error": client.last_error}
            },
            "counters": dict(self.counters),
        }

    def configure_bridges(self, bridges: tuple[Bridge, ...]) -> None:
        """Apply the manifest's bridges; new remote subscriptions take effect at once (the connection
        is made again when they change)."""
        self.bridges = bridges
        wanted = [(f, 1) for b in bridges for f in b.remote_subscriptions]
        if wanted != self.client.options.subscriptions:
            self.client.options.subscriptions = wanted
            self.client.reconnect()

    # --- out ----------------------------------------------------------------------------------------

    async def forward(self, message: Message) -> None:
        """A ``$upstream`` message: on its sender's telemetry topic."""
        system = message.system_properties
        device = system.get(CONNECTION_DEVICE_ID) or "unknown"
        topic = telemetry_topic(device, system.get(CONNECTION_MODULE_ID), message.properties, system)
        await self.client.publish(topic, message.body, 1)
        self.counters["sent_upstream"] += 1

    def bridge_out(self, topic: str, payload: bytes, qos: int, retain: bool, stored: Stored) -> bool:
        """A user-topic publish on the local broker: queue it if a bridge carries it out."""
        for bridge in self.bridges:
            remote = bridge.to_remote(topic)
            if remote is not None:
                message = Message(body=payload, properties={TOPIC_PROPERTY: remote, QOS_PROPERTY: str(qos)})
                self.counters["queued_out"] += 1
                return self.enqueue(message, stored)
        return True

    async def _send_bridged(self, message: Message) -> None:
        """From the bridge queue to the remote broker."""
        topic = message.properties.get(TOPIC_PROPERTY) or ""
        qos = min(int(message.properties.get(QOS_PROPERTY) or 1), 1)
        key = _echo_key(topic, message.body)
        self._echoes[key] = self._echoes.get(key, 0) + 1
        while len(self._echoes) > _ECHO_MEMORY:
            self._echoes.popitem(last=False)
        try:
            await self.client.publish(topic, message.body, qos)
        except BaseException:
            self._forget_echo(key)
            raise
        self.counters["forwarded_out"] += 1

    def _forget_echo(self, key: tuple[str, bytes]) -> bool:
        count = self._echoes.get(key, 0)
        if count <= 0:
            return False
        if count == 1:
            del self._echoes[key]
        else:
            self._echoes[key] = count - 1
        return True

    # --- in -----------------------------------------------------------------------------------------

    def _remote_message(self, packet: Publish) -> None:
        if self._forget_echo(_echo_key(packet.topic, packet.payload)):
            self.counters["echo_dropped"] += 1
            return
        for bridge in self.bridges:
            local = bridge.to_local(packet.topic)
            if local is not None:
                self.counters["received_in"] += 1
                self.publish_local(local, packet.payload, packet.qos)
                return
        self.counters["unmatched_in"] += 1
