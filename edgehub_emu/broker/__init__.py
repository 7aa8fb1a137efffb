"""IoT Edge 1.2's MQTT broker: user-defined topics under ``mqttBroker.authorizations``, and the
``mqttBroker.bridges`` that carry topics to and from another broker."""

from .bridges import Bridge, BridgeSetting, parse_bridges
from .config import BrokerConfig, parse_broker_config
from .mode import BrokerMode, is_user_filter
from .policy import (
    CONNECT,
    PUBLISH,
    SUBSCRIBE,
    AuthorizationPolicy,
    Client,
    Decision,
    PolicyError,
    Statement,
    parse_authorizations,
)
from .user_topics import Retained, UserTopics

__all__ = [
    "CONNECT",
    "PUBLISH",
    "SUBSCRIBE",
    "AuthorizationPolicy",
    "Bridge",
    "BridgeSetting",
    "BrokerConfig",
    "BrokerMode",
    "Client",
    "Decision",
    "PolicyError",
    "Retained",
    "Statement",
    "UserTopics",
    "is_user_filter",
    "parse_authorizations",
    "parse_bridges",
    "parse_broker_config",
]
