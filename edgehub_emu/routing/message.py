"""The message that flows through the hub: body bytes, application and system properties, enqueue time.

One ``Message`` is made per inbound publish and shared by the router, the store and delivery. Property
names are looked up case-insensitively, as edgeHub's dictionaries do, while values stay as sent. The
router's lookups and the parsed JSON body are cached on the message, so that twenty routes that read
``$body.temp`` parse the body once.

System property names are edgeHub's internal ones (``messageId``, ``cid``, ``contentType``,
``connectionDeviceId``, ``outputName``, ...), not the ``$.x`` wire names: the IoT Hub topic codec
translates between the two.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

# Internal system property names (edgeHub's SystemProperties).
CONNECTION_DEVICE_ID: Final = "connectionDeviceId"
CONNECTION_MODULE_ID: Final = "connectionModuleId"
OUTPUT_NAME: Final = "outputName"
MESSAGE_TYPE: Final = "messageType"
CONTENT_TYPE: Final = "contentType"
CONTENT_ENCODING: Final = "contentEncoding"
MESSAGE_ID: Final = "messageId"
CORRELATION_ID: Final = "cid"
EDGE_MESSAGE_ID: Final = "edgeMessageId"
EDGE_HUB_ORIGIN_INTERFACE: Final = "edgeHubOriginInterface"
MODEL_ID: Final = "modelId"
RP_SENDER_DEVICE_ID: Final = "rpSenderDeviceId"
RP_SENDER_MODULE_ID: Final = "rpSenderModuleId"
TO: Final = "to"
TWIN_CHANGE_NOTIFICATION: Final = "twinChangeNotification"

_JSON_ENCODINGS: Final = {"utf-8": "utf-8", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}

_NOT_QUERYABLE: Any = object()


def _fold(mapping: dict[str, str | None]) -> dict[str, str | None]:
    return {key.lower(): value for key, value in mapping.items()}


_CANONICAL: Final = frozenset(
    {
        CONNECTION_DEVICE_ID,
        CONNECTION_MODULE_ID,
        OUTPUT_NAME,
        MESSAGE_TYPE,
        CONTENT_TYPE,
        CONTENT_ENCODING,
        MESSAGE_ID,
        CORRELATION_ID,
        EDGE_MESSAGE_ID,
        EDGE_HUB_ORIGIN_INTERFACE,
        MODEL_ID,
        TO,
    }
)
"""System property names as the heads write them: when a message has no others, the names its source
depends on can be looked up as they are, without folding case."""


@dataclass(slots=True, eq=False, init=False)
class Message:
    """A routed message. ``properties`` are application properties; values may be ``None`` (a key
    sent without a value). ``enqueued_time`` is seconds since the epoch.

    ``properties`` may be shared by many messages (a head decodes a topic's bag once): build a new
    dictionary rather than change it in place."""

    body: bytes
    properties: dict[str, str | None]
    system_properties: dict[str, str | None]
    enqueued_time: float
    _props_ci: dict[str, str | None] | None = field(repr=False)
    _sys_ci: dict[str, str | None] | None = field(repr=False)
    _json_root: Any = field(repr=False)

    def __init__(
        self,
        body: bytes = b"",
        properties: dict[str, str | None] | None = None,
        system_properties: dict[str, str | None] | None = None,
        enqueued_time: float | None = None,
    ) -> None:
        self.body = body
        self.properties = {} if properties is None else properties
        self.system_properties = {} if system_properties is None else system_properties
        self.enqueued_time = time.time() if enqueued_time is None else enqueued_time
        self._props_ci = self._sys_ci = self._json_root = None

    # --- lookups used by compiled conditions ---------------------------------------------------

    def app_properties_ci(self) -> dict[str, str | None]:
        """Application properties keyed by lower-cased name."""
        folded = self._props_ci
        if folded is None:
            folded = self._props_ci = _fold(self.properties)
        return folded

    def system_properties_ci(self) -> dict[str, str | None]:
        """System properties keyed by lower-cased name."""
        folded = self._sys_ci
        if folded is None:
            folded = self._sys_ci = _fold(self.system_properties)
        return folded

    def system_property(self, name: str) -> str | None:
        return self.system_properties_ci().get(name.lower())

    @property
    def source(self) -> str:
        """edgeHub's message source: what a route's ``FROM`` is matched against (names in any case)."""
        system = self.system_properties
        if _CANONICAL.issuperset(system):
            message_type, module, output = (
                system.get(MESSAGE_TYPE),
                system.get(CONNECTION_MODULE_ID),
                system.get(OUTPUT_NAME),
            )
        else:
            folded = self.system_properties_ci()
            message_type = folded.get("messagetype")
            module, output = folded.get("connectionmoduleid"), folded.get("outputname")
        if message_type == TWIN_CHANGE_NOTIFICATION:
            return "/twinChangeNotifications"
        if module:
            return f"/messages/modules/{module}/outputs/{output}" if output else f"/messages/modules/{module}"
        return "/messages"

    def json_root(self) -> Any:
        """The parsed JSON body if ``$body`` queries may read it, else ``None``.

        edgeHub reads the body only when ``contentType`` is exactly ``application/json`` (any case, no
        parameters) and ``contentEncoding`` is utf-8, utf-16 or utf-32 (required), and the body is a
        JSON object. The result is cached on the message.
        """
        root = self._json_root
        if root is None:
            root = self._json_root = self._parse_json_body()
        return None if root is _NOT_QUERYABLE else root

    def _parse_json_body(self) -> Any:
        sys = self.system_properties_ci()
        content_type = sys.get("contenttype")
        encoding = _JSON_ENCODINGS.get((sys.get("contentencoding") or "").lower())
        if content_type is None or content_type.lower() != "application/json" or encoding is None:
            return _NOT_QUERYABLE
        try:
            text = self.body.decode(encoding, errors="replace").lstrip("\ufeff")
            root = json.loads(text)
        except (ValueError, RecursionError):
            return _NOT_QUERYABLE
        return root if isinstance(root, dict) else _NOT_QUERYABLE

    def body_query_reason(self) -> str | None:
        """Why ``$body`` queries are undefined for this message, or None if they can read it."""
        sys = self.system_properties_ci()
        content_type = sys.get("contenttype")
        encoding = sys.get("contentencoding")
        if content_type is None:
            return "the message has no contentType ($.ct); $body needs application/json"
        if content_type.lower() != "application/json":
            return f"contentType is {content_type!r}; $body needs exactly 'application/json'"
        if encoding is None:
            return "the message has no contentEncoding ($.ce); $body needs utf-8, utf-16 or utf-32"
        if encoding.lower() not in _JSON_ENCODINGS:
            return f"contentEncoding is {encoding!r}; $body needs utf-8, utf-16 or utf-32"
        if self.json_root() is None:
            return "the body is not a JSON object"
        return None


def json_body(value: Any) -> bytes:
    """Encode a Python value as a compact UTF-8 JSON body (a helper for tools and tests)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
