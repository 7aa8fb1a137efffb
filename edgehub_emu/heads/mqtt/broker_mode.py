"""Switching the MQTT head's broker mode with the deployment (``mqttBroker``: on, reconfigured, or off),
and reaching its user topics from the hub: publishing as another client would, watching what clients
publish, and handing over what a bridge brings in."""

from __future__ import annotations

import logging

from ...broker import BrokerConfig, BrokerMode, UserTopics
from ...broker.user_topics import MAX_QUEUED_MESSAGES, Forward, Listener
from ...mqtt.server import MqttServer
from .head import MqttHead

log = logging.getLogger("edgehub_emu.hub")


def configure(
    head: MqttHead,
    server: MqttServer,
    config: BrokerConfig | None,
    device_id: str,
    hub_hostname: str,
    forward: Forward,
    max_queued: int = MAX_QUEUED_MESSAGES,
) -> None:
    """Turn the broker mode on (QoS 2 with it), apply new rules to it, or turn it off."""
    if config is None:
        head.broker = None
    elif head.broker is None:
        head.broker = BrokerMode(config, server.sessions, device_id, hub_hostname, max_queued)
        head.broker.topics.forward = forward
    else:
        head.broker.reconfigure(config)
    server.qos2 = config is not None


def user_topics(head: MqttHead) -> UserTopics:
    if head.broker is None:
        raise RuntimeError(
            "the broker mode is off: the deployment's $edgeHub has no mqttBroker (schema 1.2 or later)"
        )
    return head.broker.topics


def watch(head: MqttHead, listener: Listener) -> None:
    """``listener(topic, payload, qos, retain)`` for every user-topic publish from now on."""
    user_topics(head).listeners.append(listener)


def publish_bridged(head: MqttHead, topic: str, payload: bytes, qos: int) -> None:
    """A remote message a bridge brings in: to the local subscribers of the topic."""
    if head.broker is None:
        log.warning("dropped a bridged message on %r: the broker mode is off (no mqttBroker)", topic)
        return
    head.broker.topics.publish(topic, payload, qos, from_bridge=True)
