"""The ``$cbs`` node: put-token requests, as edgeHub answers them (``CbsNode``).

A request carries application properties ``operation`` = ``put-token``, ``type`` =
``azure-devices.net:sastoken`` or ``servicebus.windows.net:sastoken`` (any case) and a non-empty
``name``, and the token as an amqp-value string. The identity comes from the token's ``sr`` (which must
end in ``/devices/{d}`` or ``/devices/{d}/modules/{m}``), not from ``name``. The token must parse and
not be expired; its signature is checked later, when a link for that identity attaches, as edgeHub
does. The reply: ``status-code`` (AMQP int) 200 ``OK``, or 400 with the reason.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from proton import Message as AmqpMessage
from proton import int32

from ...identity import SasError, parse_token

TOKEN_TYPES = ("azure-devices.net:sastoken", "servicebus.windows.net:sastoken")
CLOCK_SKEW = 300
_RESOURCE = re.compile(r"/devices/([^/]+)(?:/modules/([^/]+))?\Z")


@dataclass(frozen=True, slots=True)
class PutToken:
    identity_id: str
    token: str
    expiry: int


class CbsError(ValueError):
    """A put-token request edgeHub answers with 400."""


def put_token(request: AmqpMessage, now: float | None = None) -> PutToken:
    """The token a put-token request stores, or CbsError saying why it is refused."""
    properties = request.properties or {}
    if properties.get("operation") != "put-token":
        raise CbsError(f"unsupported operation {properties.get('operation')!r}")
    kind = properties.get("type")
    if not isinstance(kind, str) or kind.lower() not in TOKEN_TYPES:
        raise CbsError(f"unsupported token type {kind!r}")
    if not isinstance(properties.get("name"), str) or not properties["name"]:
        raise CbsError("the request has no name")
    token = request.body
    if not isinstance(token, str) or request.inferred:
        raise CbsError("the token is not a string")
    try:
        parsed = parse_token(token)
    except SasError as exc:
        raise CbsError(f"invalid token: {exc}") from None
    match = _RESOURCE.search(unquote(parsed.raw_resource))
    if match is None:
        raise CbsError(f"the token's resource {parsed.audience!r} names no device or module")
    if parsed.expiry + CLOCK_SKEW < (time.time() if now is None else now):
        raise CbsError("the token has expired")
    device, module = unquote(match.group(1)), match.group(2)  # the ids are URL-encoded inside ``sr``
    return PutToken(f"{device}/{unquote(module)}" if module else device, token, parsed.expiry)


def reply(request_id: Any, status: int, description: str) -> AmqpMessage:
    """The answer on the client's ``$cbs`` receiver: correlated by the request's message id."""
    message = AmqpMessage(correlation_id=request_id)
    message.properties = {"status-code": int32(status), "status-description": description}
    return message
