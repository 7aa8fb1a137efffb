"""What an AMQP link address means to edgeHub: which identity, and which kind of link.

edgeHub matches the target (a link the client sends on) or the source (a link the hub sends on)
against its templates: ``amqps://host/path`` counts by its path alone, each ``{id}`` is ``[^/]*``, the
match is anchored at the end only and ignores case (so ``devicebound`` matches ``deviceBound``, and
``//devices/d/messages/events`` is valid), and ids are URL-decoded with ``+`` read as a space.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit


class LinkKind(enum.Enum):
    CBS = "Cbs"
    EVENTS = "Events"  # the client sends telemetry and outputs
    MODULE_MESSAGES = "ModuleMessages"  # the hub sends a module's inputs
    C2D = "C2D"  # the hub sends cloud-to-device messages
    TWIN_RECEIVING = "TwinReceiving"  # the client sends twin requests
    TWIN_SENDING = "TwinSending"  # the hub sends twin replies and desired patches
    METHOD_RECEIVING = "MethodReceiving"  # the client sends method responses
    METHOD_SENDING = "MethodSending"  # the hub sends method requests


_IDENTITY = r"/devices/(?P<device>[^/]*)(?:/modules/(?P<module>[^/]*))?"
_TEMPLATES: list[tuple[re.Pattern[str], LinkKind | None, LinkKind | None]] = [
    # (path, kind when the client sends, kind when the client receives)
    (re.compile(r"/\$cbs\Z", re.I), LinkKind.CBS, LinkKind.CBS),
    (re.compile(_IDENTITY + r"/messages/events\Z", re.I), LinkKind.EVENTS, LinkKind.MODULE_MESSAGES),
    (re.compile(_IDENTITY + r"/messages/devicebound\Z", re.I), None, LinkKind.C2D),
    (re.compile(_IDENTITY + r"/twin\Z", re.I), LinkKind.TWIN_RECEIVING, LinkKind.TWIN_SENDING),
    (
        re.compile(_IDENTITY + r"/methods/devicebound\Z", re.I),
        LinkKind.METHOD_RECEIVING,
        LinkKind.METHOD_SENDING,
    ),
]


class AddressError(ValueError):
    """The address matches no link edgeHub serves (refused with ``amqp:not-allowed``)."""


@dataclass(frozen=True, slots=True)
class LinkAddress:
    kind: LinkKind
    identity_id: str | None  # None for $cbs


def parse_address(address: str | None, client_sends: bool) -> LinkAddress:
    """What a link on ``address`` is; ``client_sends``: the client is the link's sender."""
    if not address:
        raise AddressError("Link target/source address is null or empty")
    path = urlsplit(address).path if "://" in address else address
    if not path.startswith("/"):
        path = "/" + path
    for pattern, when_sending, when_receiving in _TEMPLATES:
        match = pattern.search(path)
        if match is None:
            continue
        kind = when_sending if client_sends else when_receiving
        if kind is None:
            break
        if kind is LinkKind.CBS:
            return LinkAddress(kind, None)
        device = unquote_plus(match.group("device"))
        module = match.group("module")
        if kind is LinkKind.MODULE_MESSAGES and module is None:
            break  # a device has no inputs: its events address is send-only
        identity = f"{device}/{unquote_plus(module)}" if module is not None else device
        return LinkAddress(kind, identity)
    raise AddressError(f"Matching template not found for uri {address}")
