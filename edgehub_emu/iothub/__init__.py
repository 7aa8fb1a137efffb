"""IoT Hub conventions over MQTT, as edgeHub implements them: topics, property bags, user names.

Sans-IO: strings in, strings out. The MQTT server and the hub use these to turn publishes into
``routing.Message`` objects and deliveries back into topics.
"""

from . import property_bag
from .property_bag import PropertyBagError
from .topics import (
    C2D,
    DESIRED_PROPERTY_UPDATES,
    METHODS,
    MODULE_MESSAGES,
    TWIN_RESPONSE,
    UNKNOWN,
    MethodResponse,
    Telemetry,
    TopicError,
    TwinAddress,
    TwinRequest,
    Username,
    UsernameError,
    c2d_topic,
    classify_subscription,
    desired_patch_topic,
    method_request_topic,
    module_input_topic,
    outbound_bag,
    parse_method_response,
    parse_telemetry,
    parse_twin_address,
    parse_twin_request,
    parse_username,
    telemetry_topic,
    twin_response_topic,
)

__all__ = [
    "C2D",
    "DESIRED_PROPERTY_UPDATES",
    "METHODS",
    "MODULE_MESSAGES",
    "TWIN_RESPONSE",
    "UNKNOWN",
    "MethodResponse",
    "PropertyBagError",
    "Telemetry",
    "TopicError",
    "TwinAddress",
    "TwinRequest",
    "Username",
    "UsernameError",
    "c2d_topic",
    "classify_subscription",
    "desired_patch_topic",
    "method_request_topic",
    "module_input_topic",
    "outbound_bag",
    "parse_method_response",
    "parse_telemetry",
    "parse_twin_address",
    "parse_twin_request",
    "parse_username",
    "property_bag",
    "telemetry_topic",
    "twin_response_topic",
]
