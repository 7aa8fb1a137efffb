"""The MQTT protocol head: IoT Hub's MQTT conventions over the MQTT server, as calls on the core."""

from . import broker_mode
from .head import Attached, MqttHead
from .proxy import MqttProxy
from .topics import TopicKind, features, is_user_subscription, publish_kind

__all__ = [
    "Attached",
    "MqttHead",
    "MqttProxy",
    "TopicKind",
    "broker_mode",
    "features",
    "is_user_subscription",
    "publish_kind",
]
