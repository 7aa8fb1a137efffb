"""``$upstream`` sinks: the local capture (the cloud on your laptop), an IoT hub or parent edge hub
(``iothub:``), or another MQTT broker (``mqtt://``), with ``mqttBroker.bridges``."""

from .capture import UpstreamCapture, UpstreamRecord
from .config import (
    IotHubUpstreamConfig,
    MqttUpstreamConfig,
    UpstreamConfig,
    UpstreamError,
    parse_connection_string,
    parse_upstream,
)
from .iothub_upstream import IotHubUpstream, merge_patch, twin_diff
from .mqtt_bridge import MqttBridge
from .mqtt_client import ClientOptions, ConnectionRefused, MqttClient

__all__ = [
    "ClientOptions",
    "ConnectionRefused",
    "IotHubUpstream",
    "IotHubUpstreamConfig",
    "MqttBridge",
    "MqttClient",
    "MqttUpstreamConfig",
    "UpstreamCapture",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamRecord",
    "merge_patch",
    "parse_connection_string",
    "parse_upstream",
    "twin_diff",
]
