"""IoT Hub MQTT topics as edgeHub reads and writes them (sans-IO: strings in, strings out).

- Inbound telemetry: edgeHub's eight ``messages/events`` templates, tried in order, first match wins,
  anchored at the end only; the ids come from the topic and the bag's ``$.x`` names become system
  properties (``$.cid`` is ``cid``, ``ack`` and ``iothub-operation`` need no ``$.``).
- Outbound: module inputs, C2D, twin responses, desired patches and method requests, with the property
  bag built as edgeHub builds it (user properties first, then mapped system properties; ``$.on`` never).
- Twin and method addresses, CONNECT user names, and how a SUBSCRIBE filter is classified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Final
from urllib.parse import unquote

from . import property_bag

# --- templates ------------------------------------------------------------------------------------

INBOUND_TEMPLATES: Final = (
    "devices/{deviceId}/messages/events/{params}/",
    "devices/{deviceId}/messages/events/",
    "devices/{deviceId}/modules/{moduleId}/messages/events/{params}/",
    "devices/{deviceId}/modules/{moduleId}/messages/events/",
    "devices/{deviceId}/messages/events/{params}",
    "devices/{deviceId}/messages/events",
    "devices/{deviceId}/modules/{moduleId}/messages/events/{params}",
    "devices/{deviceId}/modules/{moduleId}/messages/events",
)

OUTBOUND_TEMPLATES: Final = {
    "ModuleEndpoint": "devices/{deviceId}/modules/{moduleId}/inputs/{inputName}",
    "C2D": "devices/{deviceId}/messages/devicebound",
    "TwinEndpoint": "$iothub/twin/res/{statusCode}/?$rid={correlationId}",
    "TwinDesiredPropertyUpdate": "$iothub/twin/PATCH/properties/desired/?$version={version}",
}

_VARIABLE: Final = re.compile(r"\{(\w+)\}")


@cache
def _template_regex(template: str) -> re.Pattern[str]:
    parts = []
    pos = 0
    for m in _VARIABLE.finditer(template):
        parts.append(re.escape(template[pos : m.start()]))
        parts.append(f"(?P<{m.group(1)}>[^/]*)")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    # edgeHub's template engine anchors the end only (Regex.Match finds the pattern anywhere).
    return re.compile("".join(parts) + r"\Z")


def match_template(template: str, topic: str) -> dict[str, str] | None:
    """The template's variables bound from ``topic``, or None if it does not match."""
    m = _template_regex(template).search(topic)
    return None if m is None else m.groupdict()


def match_templates(templates: tuple[str, ...] | list[str], topic: str) -> dict[str, str] | None:
    """The first template that matches wins."""
    for template in templates:
        bound = match_template(template, topic)
        if bound is not None:
            return bound
    return None


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Bind a template's variables (inserted as they are, without URL-encoding, as edgeHub does)."""
    return _VARIABLE.sub(lambda m: values[m.group(1)], template)


# --- telemetry in -------------------------------------------------------------------------------

# Wire name -> edgeHub's internal system property name.
INCOMING_SYSTEM_PROPERTIES: Final = {
    "$.mid": "messageId",
    "$.cid": "cid",
    "$.to": "to",
    "$.uid": "userId",
    "$.ct": "contentType",
    "$.ce": "contentEncoding",
    "$.on": "outputName",
    "$.schema": "messageSchema",
    "$.ctime": "creationTime",
    "$.exp": "absolute-expiry-time",
    "$.ifid": "iothub-interface-id",
    "$.sub": "dt-subject",
    "ack": "ack",
    "iothub-operation": "operation",
}

# Internal system property name -> wire name, in edgeHub's order; outputName is never sent.
OUTGOING_SYSTEM_PROPERTIES: Final = {
    "absolute-expiry-time": "$.exp",
    "cid": "$.cid",
    "messageId": "$.mid",
    "to": "$.to",
    "userId": "$.uid",
    "ack": "ack",
    "contentType": "$.ct",
    "contentEncoding": "$.ce",
    "messageSchema": "$.schema",
    "operation": "iothub-operation",
    "creationTime": "$.ctime",
    "connectionDeviceId": "$.cdid",
    "connectionModuleId": "$.cmid",
    "dt-subject": "$.sub",
}


class TopicError(ValueError):
    """A topic edgeHub cannot use; ``drop`` says whether edgeHub drops the message and still PUBACKs."""

    def __init__(self, message: str, *, drop: bool = True) -> None:
        super().__init__(message)
        self.drop = drop


@dataclass(slots=True)
class Telemetry:
    """What a telemetry topic says: the sender ids from the topic, and the properties of its bag."""

    device_id: str
    module_id: str | None
    system_properties: dict[str, str | None] = field(default_factory=dict)
    properties: dict[str, str | None] = field(default_factory=dict)


def _bind_fast(topic: str) -> dict[str, str] | None:
    """The template variables for the common, well-formed shapes, without regular expressions.

    Exactly what ``match_templates(INBOUND_TEMPLATES, topic)`` gives for these shapes: with ``devices`` as
    the first level and no other level equal to ``devices``, no earlier template can match (each needs
    ``devices/`` just before the id that precedes ``messages/events``). Anything else takes the general
    path."""
    parts = topic.split("/")
    n = len(parts)
    if parts[0] != "devices" or "devices" in parts[1:]:
        return None
    if n >= 6 and parts[2] == "modules" and parts[4] == "messages" and parts[5] == "events":
        if n == 6:
            return {"deviceId": parts[1], "moduleId": parts[3]}
        if n == 7:
            return (
                {"deviceId": parts[1], "moduleId": parts[3], "params": parts[6]}
                if parts[6]
                else {"deviceId": parts[1], "moduleId": parts[3]}
            )
        if n == 8 and parts[7] == "":
            return {"deviceId": parts[1], "moduleId": parts[3], "params": parts[6]}
        return None
    if n >= 4 and parts[2] == "messages" and parts[3] == "events" and "modules" not in parts[1:]:
        if n == 4:
            return {"deviceId": parts[1]}
        if n == 5:
            return {"deviceId": parts[1], "params": parts[4]} if parts[4] else {"deviceId": parts[1]}
        if n == 6 and parts[5] == "":
            return {"deviceId": parts[1], "params": parts[4]}
    return None


_TELEMETRY_CACHE: dict[str, Telemetry | str] = {}
_TELEMETRY_CACHE_SIZE: Final = 4096


def parse_telemetry_cached(topic: str) -> Telemetry:
    """``parse_telemetry`` for the topics a client publishes again and again (its outputs, with the same
    properties): decoded once. The result is shared: copy its dictionaries before changing them."""
    found = _TELEMETRY_CACHE.get(topic)
    if found is None:
        try:
            found = parse_telemetry(topic)
        except TopicError as exc:
            found = str(exc)
        if len(_TELEMETRY_CACHE) >= _TELEMETRY_CACHE_SIZE:
            _TELEMETRY_CACHE.clear()
        _TELEMETRY_CACHE[topic] = found
    if isinstance(found, str):
        raise TopicError(found)
    return found


def parse_telemetry(topic: str) -> Telemetry:
    """Decode a ``messages/events`` topic; raise TopicError (drop) if it matches no template or its bag
    is malformed."""
    bound = _bind_fast(topic) or match_templates(INBOUND_TEMPLATES, topic)
    if bound is None:
        raise TopicError(f"topic {topic!r} is not a telemetry topic")
    try:
        bag = property_bag.decode(bound.get("params", ""))
    except property_bag.PropertyBagError as exc:
        raise TopicError(str(exc)) from None
    system: dict[str, str | None] = {}
    user: dict[str, str | None] = {}
    for key, value in bag.items():
        internal = INCOMING_SYSTEM_PROPERTIES.get(key)
        if internal is None:
            user[key] = value
        else:
            system[internal] = value
    system["connectionDeviceId"] = bound["deviceId"]
    module = bound.get("moduleId")
    if module is not None:
        system["connectionModuleId"] = module
    return Telemetry(bound["deviceId"], module, system, user)


# --- outbound -------------------------------------------------------------------------------------


_SYSTEM_PAIRS: dict[tuple[str, str | None], str] = {}
_SYSTEM_PAIRS_SIZE: Final = 4096


def _system_pair(name: str, value: str | None) -> str:
    """A system property's encoded pair, kept: most repeat from message to message (the sender's ids,
    the content type); unique ones (a message id each) are bounded by clearing."""
    if len(_SYSTEM_PAIRS) >= _SYSTEM_PAIRS_SIZE:
        _SYSTEM_PAIRS.clear()
    encoded = _SYSTEM_PAIRS[(name, value)] = property_bag.encode_pair(OUTGOING_SYSTEM_PROPERTIES[name], value)
    return encoded


def outbound_bag(properties: Mapping[str, str | None], system_properties: Mapping[str, str | None]) -> str:
    """edgeHub's outbound bag: user properties in order, then each mapped system property; a system
    value replaces a user property of the same wire name in that property's place."""
    outgoing = OUTGOING_SYSTEM_PROPERTIES
    if not properties:  # the common case, on every delivery: only system properties, pairs kept
        known = _SYSTEM_PAIRS
        parts = []
        for item in system_properties.items():
            if item[0] in outgoing:
                parts.append(known.get(item) or _system_pair(*item))
        return "&".join(parts)
    pair = property_bag.encode_pair
    encoded = {key: pair(key, value) for key, value in properties.items()}
    for name, value in system_properties.items():
        wire = outgoing.get(name)
        if wire is not None:
            encoded[wire] = pair(wire, value)
    return "&".join(encoded.values())


_TELEMETRY_WIRE_NAMES: Final = {internal: wire for wire, internal in INCOMING_SYSTEM_PROPERTIES.items()}


def telemetry_topic(
    device_id: str,
    module_id: str | None,
    properties: Mapping[str, str | None],
    system_properties: Mapping[str, str | None],
) -> str:
    """The topic a device or module sends telemetry on, with its properties in the bag as the SDKs write
    them (what an edge hub sends upstream on its behalf; the output name included, for the parent's
    routes)."""
    address = f"devices/{device_id}/" + (f"modules/{module_id}/" if module_id else "") + "messages/events/"
    pairs: dict[str, str | None] = dict(properties)
    for name, value in system_properties.items():
        wire = _TELEMETRY_WIRE_NAMES.get(name)
        if wire is not None and value is not None:
            pairs[wire] = value
    return address + property_bag.encode(pairs.items())


def with_bag(address: str, bag: str) -> str:
    """``address`` plus ``/bag``; no trailing slash when the bag is empty."""
    return f"{address.rstrip('/')}/{bag}" if bag else address


def module_input_topic(
    device_id: str,
    module_id: str,
    input_name: str,
    properties: Mapping[str, str | None],
    system_properties: Mapping[str, str | None],
) -> str:
    # OUTBOUND_TEMPLATES["ModuleEndpoint"], filled directly: this runs for every delivery.
    address = f"devices/{device_id}/modules/{module_id}/inputs/{input_name}"
    return with_bag(address, outbound_bag(properties, system_properties))


def c2d_topic(
    device_id: str, properties: Mapping[str, str | None], system_properties: Mapping[str, str | None]
) -> str:
    address = fill_template(OUTBOUND_TEMPLATES["C2D"], {"deviceId": device_id})
    return with_bag(address, outbound_bag(properties, system_properties))


def twin_response_topic(status: int | str, rid: str) -> str:
    return fill_template(
        OUTBOUND_TEMPLATES["TwinEndpoint"], {"statusCode": str(status), "correlationId": rid}
    )


def desired_patch_topic(version: int | str) -> str:
    return fill_template(OUTBOUND_TEMPLATES["TwinDesiredPropertyUpdate"], {"version": str(version)})


def method_request_topic(method_name: str, rid: str) -> str:
    return f"$iothub/methods/POST/{method_name}/?$rid={rid}"


# --- the device side: what a client publishes and subscribes to --------------------------------

METHODS_FILTER: Final = "$iothub/methods/POST/#"
DESIRED_FILTER: Final = "$iothub/twin/PATCH/properties/desired/#"
TWIN_RESPONSE_FILTER: Final = "$iothub/twin/res/#"
METHOD_REQUEST_PREFIX: Final = "$iothub/methods/POST/"
DESIRED_PATCH_PREFIX: Final = "$iothub/twin/PATCH/properties/desired/"
TWIN_RESPONSE_PREFIX: Final = "$iothub/twin/res/"


def twin_get_topic(rid: str) -> str:
    return f"$iothub/twin/GET/?$rid={rid}"


def reported_patch_topic(rid: str) -> str:
    return f"$iothub/twin/PATCH/properties/reported/?$rid={rid}"


def method_response_topic(status: int, rid: str) -> str:
    return f"$iothub/methods/res/{status}/?$rid={rid}"


def parse_method_request(topic: str) -> tuple[str, str] | None:
    """(method name, request id) of a ``$iothub/methods/POST/{name}/?$rid={rid}`` topic."""
    if not topic.startswith(METHOD_REQUEST_PREFIX):
        return None
    name, _, query = topic[len(METHOD_REQUEST_PREFIX) :].partition("/?")
    return name, query.removeprefix("$rid=")


def parse_twin_response(topic: str) -> tuple[int, str] | None:
    """(status, request id) of a ``$iothub/twin/res/{status}/?$rid={rid}`` topic."""
    if not topic.startswith(TWIN_RESPONSE_PREFIX):
        return None
    status, _, query = topic[len(TWIN_RESPONSE_PREFIX) :].partition("/?")
    rid = _query(query).get("$rid", "")
    try:
        return int(status), rid
    except ValueError:
        return None


# --- twin and method addresses ----------------------------------------------------------------

TWIN_PREFIX: Final = "$iothub/twin/"
METHOD_RESPONSE_PREFIX: Final = "$iothub/methods/res/"
_METHOD_RESPONSE: Final = re.compile(
    r"^\$iothub/methods/res/(?P<status>[^/]*)/\?\$rid=(?P<rid>.*)\Z", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class TwinAddress:
    operation: str  # TwinGetState | TwinPatchReportedState | DirectMethodResponse
    subresource: str
    properties: dict[str, str]


def _query(text: str) -> dict[str, str]:
    # TwinAddressHelper: '&'-separated, values not URL-decoded, empty keys and values allowed.
    result: dict[str, str] = {}
    for pair in text.split("&"):
        if pair == "":
            continue
        key, _, value = pair.partition("=")
        result[key] = value
    return result


def parse_twin_address(topic: str) -> TwinAddress:
    """Parse a ``$iothub`` address a client publishes to; raise TopicError(drop=False) if edgeHub would
    close the connection over it."""
    for operation, prefix in (
        ("TwinGetState", "$iothub/twin/GET/"),
        ("TwinPatchReportedState", "$iothub/twin/PATCH/properties/reported/"),
    ):
        if topic.startswith(prefix):
            rest = topic[len(prefix) :]
            if rest and not rest.startswith("?"):
                raise TopicError(f"unknown twin operation {topic!r}", drop=False)
            return TwinAddress(operation, "", _query(rest[1:]))
    if topic.startswith(METHOD_RESPONSE_PREFIX):
        status, sep, rest = topic[len(METHOD_RESPONSE_PREFIX) :].partition("/")
        if sep and (rest == "" or rest.startswith("?")):
            return TwinAddress("DirectMethodResponse", status, _query(rest[1:]))
    raise TopicError(f"unknown $iothub operation {topic!r}", drop=False)


@dataclass(frozen=True, slots=True)
class TwinRequest:
    """A twin request a client published: ``GET`` needs a request id, a reported ``PATCH`` may omit it."""

    operation: str  # "GET" | "PATCH_REPORTED"
    rid: str | None


def parse_twin_request(topic: str) -> TwinRequest:
    """Raise TopicError(drop=False) for anything edgeHub answers by closing the connection."""
    address = parse_twin_address(topic)
    rid = address.properties.get("$rid") or None
    if address.operation == "TwinGetState":
        if rid is None:
            raise TopicError(f"twin GET without a $rid: {topic!r}", drop=False)
        return TwinRequest("GET", rid)
    if address.operation == "TwinPatchReportedState":
        return TwinRequest("PATCH_REPORTED", rid)
    raise TopicError(f"not a twin request: {topic!r}", drop=False)


@dataclass(frozen=True, slots=True)
class MethodResponse:
    status: int
    rid: str


def parse_method_response(topic: str) -> MethodResponse | None:
    """``$iothub/methods/res/{status}/?$rid={rid}``: the rid runs to the end of the topic (edgeHub's
    template); a status that is not an integer becomes 400000. None if the topic does not match."""
    m = _METHOD_RESPONSE.match(topic)
    if m is None:
        return None
    try:
        status = int(m.group("status"))
    except ValueError:
        status = 400000
    return MethodResponse(status, m.group("rid"))


# --- CONNECT user name --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Username:
    host: str
    device_id: str
    module_id: str  # "" for a device
    device_client_type: str
    model_id: str | None


class UsernameError(ValueError):
    """edgeHub cannot parse the user name (CONNACK 3)."""


def _username_query(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        values.setdefault(unquote(key), unquote(value))  # the first occurrence wins
    return values


def parse_username(username: str) -> Username:
    """Parse an MQTT CONNECT user name as edgeHub's MqttUsernameParser does."""
    parts = username.split("/")
    # The legacy Azure ML form: host/device[/module]/api-version=…/DeviceClientType=…(may contain '/')
    for index in (2, 3):
        if (
            len(parts) > index + 1
            and parts[index].startswith("api-version=")
            and parts[index + 1].startswith("DeviceClientType=")
        ):
            query = parts[index] + "&" + "/".join(parts[index + 1 :])
            parts = [*parts[:index], query]
            break
    if len(parts) not in (3, 4):
        raise UsernameError(f"user name {username!r} is not {{host}}/{{device}}[/{{module}}]/?api-version=…")
    last = parts[-1]
    if last.startswith("?"):
        query = last[1:]
    elif "api-version=" in last:
        query = last
    else:
        raise UsernameError(f"user name {username!r} has no api-version")
    values = _username_query(query)
    if not values.get("api-version"):
        raise UsernameError(f"user name {username!r} has no api-version")
    return Username(
        host=parts[0],
        device_id=parts[1],
        module_id=parts[2] if len(parts) == 4 else "",
        device_client_type=values.get("DeviceClientType", ""),
        model_id=values.get("model-id"),
    )


# --- SUBSCRIBE classification -------------------------------------------------------------------

METHODS: Final = "Methods"
DESIRED_PROPERTY_UPDATES: Final = "DesiredPropertyUpdates"
C2D: Final = "C2D"
TWIN_RESPONSE: Final = "TwinResponse"
MODULE_MESSAGES: Final = "ModuleMessages"
UNKNOWN: Final = "Unknown"
_MODULE_MESSAGES: Final = re.compile(r"^devices/.+/modules/.+/#\Z", re.DOTALL)


def classify_subscription(topic_filter: str) -> str:
    """Which edgeHub feature a SUBSCRIBE filter turns on (the first rule that applies wins)."""
    if topic_filter.startswith("$iothub/methods/POST/"):
        return METHODS
    if topic_filter.startswith("$iothub/twin/PATCH/properties/desired/"):
        return DESIRED_PROPERTY_UPDATES
    if topic_filter.endswith("messages/devicebound/#"):
        return C2D
    if topic_filter == "$iothub/twin/res/#":
        return TWIN_RESPONSE
    if _MODULE_MESSAGES.match(topic_filter):
        return MODULE_MESSAGES
    return UNKNOWN
