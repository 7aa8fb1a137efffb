"""AMQP messages to the hub's messages and back, with edgeHub's mapping (``AmqpMessageConverter``).

Properties section ↔ system properties (message-id, correlation-id, to, user-id, content-type,
content-encoding, absolute-expiry-time); message annotations carry ``dt-subject``, the interface id and,
outbound, the sender's ids, the input name and the lock token; application properties carry the
mapped ``iothub-*`` names and every user property. Lookups check types as edgeHub's do: a mapped value
of the wrong type counts as absent, and a user property that is not a string arrives as a key without a
value. The body is the Data section; a message whose body is only an amqp-value has none and is refused.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from proton import Message as AmqpMessage
from proton import symbol

from ...routing import Message
from ...routing.message import (
    CONNECTION_DEVICE_ID,
    CONNECTION_MODULE_ID,
    CONTENT_ENCODING,
    CONTENT_TYPE,
    CORRELATION_ID,
    MESSAGE_ID,
    OUTPUT_NAME,
    RP_SENDER_DEVICE_ID,
    RP_SENDER_MODULE_ID,
    TO,
)
from .wire import WireMessage

USER_ID = "userId"
EXPIRY = "absolute-expiry-time"
INTERFACE_ID = "iothub-interface-id"
SUBJECT = "dt-subject"
INPUT_NAME_ANNOTATION = "x-opt-input-name"
LOCK_TOKEN_ANNOTATION = "x-opt-lock-token"
DEVICE_ANNOTATION = "iothub-connection-device-id"
MODULE_ANNOTATION = "iothub-connection-module-id"

_APP_TO_SYSTEM = {  # application property -> system property, both ways (outputName only inbound)
    "iothub-message-schema": "messageSchema",
    "iothub-creation-time-utc": "creationTime",
    "iothub-operation": "operation",
}
_OUTPUT_NAME_PROPERTY = "iothub-outputname"


class NoBody(ValueError):
    """The message has no Data section (edgeHub rejects it)."""


def id_text(value: Any) -> str | None:
    """An AMQP message-id or correlation-id as edgeHub keeps it: a string (uuids lower-case)."""
    if value is None:
        return None
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def _iso(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def _seconds(iso: str) -> float | None:
    try:
        moment = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _symbol_text(value: Any) -> str | None:
    """content-type and content-encoding: proton reads an absent one as ``symbol('None')``."""
    if value is None or (isinstance(value, symbol) and value == "None"):
        return None
    return str(value) if isinstance(value, str) else None


def from_amqp(amqp: AmqpMessage) -> Message:
    """A message a client sent on its events link (the sender's ids are added by the core)."""
    body = amqp.body
    if not amqp.inferred or not isinstance(body, bytes | memoryview):
        raise NoBody("the message has no Data body")
    system: dict[str, str | None] = {}
    for name, value in (
        (MESSAGE_ID, id_text(amqp.id)),
        (CORRELATION_ID, id_text(amqp.correlation_id)),
        (TO, amqp.address if isinstance(amqp.address, str) else None),
        (CONTENT_TYPE, _symbol_text(amqp.content_type)),
        (CONTENT_ENCODING, _symbol_text(amqp.content_encoding)),
    ):
        if value is not None:
            system[name] = value
    if amqp.user_id:
        system[USER_ID] = bytes(amqp.user_id).decode("utf-8", "replace")
    if amqp.expiry_time:
        system[EXPIRY] = _iso(float(amqp.expiry_time))
    for key, value in (amqp.annotations or {}).items():
        if str(key) in (INTERFACE_ID, SUBJECT) and isinstance(value, str):
            system[str(key)] = value
    properties: dict[str, str | None] = {}
    for key, value in (amqp.properties or {}).items():
        name = str(key)
        mapped = OUTPUT_NAME if name == _OUTPUT_NAME_PROPERTY else _APP_TO_SYSTEM.get(name)
        if mapped is not None:
            if isinstance(value, str):
                system[mapped] = value
            continue
        properties[name] = value if isinstance(value, str) else None
    return Message(body=bytes(body), properties=properties, system_properties=system)


def to_amqp(
    message: Message,
    input_name: str | None = None,
    lock_token: str | None = None,
    into: WireMessage | None = None,
) -> WireMessage:
    """A message for a module input (``input_name``, ``lock_token``) or a device's C2D link; filled
    ``into`` a message that is reused, if given."""
    system = message.system_properties
    amqp = into.reset() if into is not None else WireMessage()
    amqp.body = message.body
    amqp.inferred = True
    if system.get(MESSAGE_ID) is not None:
        amqp.id = system[MESSAGE_ID]
    if system.get(CORRELATION_ID) is not None:
        amqp.correlation_id = system[CORRELATION_ID]
    if system.get(TO) is not None:
        amqp.address = system[TO]
    if system.get(USER_ID):
        amqp.user_id = str(system[USER_ID]).encode()
    if system.get(CONTENT_TYPE) is not None:
        amqp.content_type = system[CONTENT_TYPE]
    if system.get(CONTENT_ENCODING) is not None:
        amqp.content_encoding = system[CONTENT_ENCODING]
    expiry = system.get(EXPIRY)
    if expiry and (seconds := _seconds(expiry)) is not None:
        amqp.expiry_time = seconds
    annotations: dict[str, str | None] = {}  # symbols on the wire
    device = system.get(RP_SENDER_DEVICE_ID) or system.get(CONNECTION_DEVICE_ID)
    module = system.get(RP_SENDER_MODULE_ID) or system.get(CONNECTION_MODULE_ID)
    if device:
        annotations[DEVICE_ANNOTATION] = device
    if module:
        annotations[MODULE_ANNOTATION] = module
    subject = system.get(SUBJECT)
    if subject is not None:
        annotations[SUBJECT] = subject
    if input_name is not None:
        annotations[INPUT_NAME_ANNOTATION] = input_name
    if lock_token is not None:
        annotations[LOCK_TOKEN_ANNOTATION] = lock_token
    amqp.annotation_dict = annotations
    properties: dict[str, Any] = {}
    for app_name, system_name in _APP_TO_SYSTEM.items():
        if system.get(system_name) is not None:
            properties[app_name] = system[system_name]
    properties.update(message.properties)  # user properties last: they win over mapped names
    amqp.properties = properties
    return amqp


def lock_token_tag(token: str) -> bytes:
    """The delivery tag edgeHub uses: the lock-token GUID's 16 bytes in .NET's order."""
    return uuid.UUID(token).bytes_le


def new_lock_token() -> tuple[str, bytes]:
    """A fresh lock token and its delivery tag."""
    token = uuid.uuid4()
    return str(token), token.bytes_le
