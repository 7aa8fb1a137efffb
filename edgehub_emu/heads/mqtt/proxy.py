"""An MQTT client's outbound side: the core's device proxy over IoT Hub's MQTT topics.

Deliveries go out on the topic edgeHub uses, at QoS 1 capped by the client's matching subscription
(QoS 0: delivered once written); a message no subscription matches is rejected, so its sender drops
it, as edgeHub does. The proxy belongs to the MQTT session: a persistent session keeps its proxy across
reconnects, and what was in flight is resent by the session itself (with DUP).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, Final

from ...core import SendOutcome, Settle
from ...iothub import c2d_topic, desired_patch_topic, method_request_topic, outbound_bag
from ...mqtt.session import NotConnected, Session
from ...routing import Message

log = logging.getLogger("edgehub_emu.mqtt")

TRANSPORTS: Final = {"tls": "mqtt", "tcp": "mqtt (plain)", "websocket": "mqtt over websocket"}


class MqttProxy:
    __slots__ = ("_inputs", "device_id", "module_id", "session", "transport")

    def __init__(self, session: Session, device_id: str, module_id: str | None) -> None:
        self.session = session
        self.device_id = device_id
        self.module_id = module_id
        self.transport = "mqtt"
        self._inputs: dict[str, str] = {}  # input name -> the address of its deliveries

    def send_to_input(self, input_name: str, message: Message, token: Any, settle: Settle) -> SendOutcome:
        session = self.session
        if session.connection is None or self.module_id is None:
            return SendOutcome.UNAVAILABLE
        address = self._inputs.get(input_name)
        if address is None:
            address = self._inputs[input_name] = (
                f"devices/{self.device_id}/modules/{self.module_id}/inputs/{input_name}"
            )
        bag = outbound_bag(message.properties, message.system_properties)
        qos = session.subscriptions.granted_qos_at(address, bag)
        if qos is None:
            return SendOutcome.REJECTED
        topic = f"{address}/{bag}" if bag else address
        if qos == 0:
            session.publish(topic, message.body, 0)
            return SendOutcome.DELIVERED
        session.publish(topic, message.body, 1, False, token, settle)
        return SendOutcome.SENT

    def abandon(self, tokens: Collection[Any]) -> None:
        self.session.abandon(tokens)

    def _respond(self, topic: str, body: bytes) -> bool:
        """Send if one of the client's filters matches the topic (edgeHub discards it otherwise)."""
        qos = self.session.granted_qos(topic)
        if qos is None:
            log.info("%s has no subscription for %s: not sent", self.session.client_id, topic)
            return False
        try:
            self.session.publish(topic, body, min(qos, 1))
        except NotConnected:
            return False
        return True

    def push_desired(self, version: int, patch: bytes) -> None:
        self._respond(desired_patch_topic(version), patch)

    def send_method_request(self, method_name: str, request_id: str, payload: bytes) -> bool:
        return self._respond(method_request_topic(method_name, request_id), payload)

    def send_c2d(self, message: Message) -> bool:
        topic = c2d_topic(self.device_id, message.properties, message.system_properties)
        return self._respond(topic, message.body)

    def respond(self, topic: str, body: bytes) -> None:
        """A twin response on the client's own request."""
        self._respond(topic, body)

    def close(self, reason: str) -> None:
        connection = self.session.connection
        if connection is not None:
            connection.close(reason)

    def subscriptions(self) -> list[str]:
        return sorted(self.session.subscriptions)
