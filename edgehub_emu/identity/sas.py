"""Shared access signatures, made and checked as IoT Hub and edgeHub do.

A token is ``SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>[&skn=<name>]``; the
signature is ``base64(HMAC-SHA256(base64decode(key), sr + "\\n" + se))`` over ``sr`` exactly as the
client encoded it. edgeHub accepts it when the signature matches the identity's primary or secondary
key, it has not expired more than five minutes ago, and its audience (``sr`` decoded) is
``{host}/devices/{device}`` or ``{host}/devices/{device}/modules/{module}`` with ``{host}`` the IoT hub
or the edge device host name (any case) and the ids those of the connecting identity (any case);
a module may present a device-scope token signed with its device's key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

MAX_CLOCK_SKEW_SECS = 300
PREFIX = "SharedAccessSignature"


class SasError(ValueError):
    """The token is not acceptable; the message says why (for the log, not for the client)."""


def sign(key: str, resource: str, expiry: int | str) -> str:
    """The base64 HMAC-SHA256 signature of ``resource + "\\n" + expiry`` with a base64 key."""
    digest = hmac.new(base64.b64decode(key), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def make_token(resource_uri: str, key: str, expiry: int, key_name: str | None = None) -> str:
    """A token for ``resource_uri`` (e.g. ``host/devices/d/modules/m``), as the SDKs make them."""
    sr = quote(resource_uri, safe="")
    token = f"{PREFIX} sr={sr}&sig={quote(sign(key, sr, expiry), safe='')}&se={expiry}"
    return token + (f"&skn={key_name}" if key_name else "")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    raw_resource: str
    signature: str
    expiry: int
    key_name: str | None

    @property
    def audience(self) -> str:
        return unquote(self.raw_resource)


def parse_token(token: str) -> ParsedToken:
    parts = token.split()
    if len(parts) != 2 or parts[0] != PREFIX:
        raise SasError("not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for item in parts[1].split("&"):
        name, sep, value = item.partition("=")
        if not sep:
            raise SasError(f"malformed token field {item!r}")
        fields[name.lower()] = value
    missing = [f for f in ("sr", "sig", "se") if f not in fields]
    if missing:
        raise SasError(f"token lacks {', '.join(missing)}")
    try:
        expiry = int(unquote(fields["se"]))
    except ValueError:
        raise SasError("token expiry 'se' is not a number") from None
    skn = unquote(fields["skn"]) if "skn" in fields else None
    return ParsedToken(fields["sr"], unquote(fields["sig"]), expiry, skn)


@dataclass(frozen=True, slots=True)
class Audience:
    host: str
    device_id: str
    module_id: str | None


def parse_audience(audience: str) -> Audience:
    parts = audience.split("/")
    if len(parts) == 3 and parts[1] == "devices":
        return Audience(parts[0], unquote(parts[2]), None)
    if len(parts) == 5 and parts[1] == "devices" and parts[3] == "modules":
        return Audience(parts[0], unquote(parts[2]), unquote(parts[4]))
    raise SasError(f"token audience {audience!r} is not host/devices/<device>[/modules/<module>]")


def _matches(signature: str, keys: Iterable[str], raw_resource: str, expiry: int) -> bool:
    for key in keys:
        try:
            expected = sign(key, raw_resource, expiry)
        except (binascii.Error, ValueError):
            continue
        # As bytes: compare_digest refuses str with non-ASCII characters, which a client may send.
        if hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
            return True
    return False


def validate(
    token: str,
    *,
    device_id: str,
    module_id: str | None,
    identity_keys: tuple[str, ...],
    device_keys: tuple[str, ...] = (),
    hostnames: Iterable[str],
    now: float | None = None,
) -> ParsedToken:
    """Check a token for an identity; return it parsed, or raise SasError saying why not."""
    parsed = parse_token(token)
    current = time.time() if now is None else now
    if parsed.expiry + MAX_CLOCK_SKEW_SECS < current:
        raise SasError("token has expired")
    audience = parse_audience(parsed.audience)
    if audience.host.lower() not in {h.lower() for h in hostnames}:
        raise SasError(f"token host {audience.host!r} is neither the IoT hub nor the edge device host name")
    if audience.device_id.lower() != device_id.lower():
        raise SasError(f"token is for device {audience.device_id!r}, not {device_id!r}")
    if module_id is None:
        if audience.module_id is not None:
            raise SasError(f"token is for module {audience.module_id!r}, not device {device_id!r}")
        keys = identity_keys
    elif audience.module_id is None:
        keys = device_keys  # a device-scope token for a module: signed with the device's key
    else:
        if audience.module_id.lower() != module_id.lower():
            raise SasError(f"token is for module {audience.module_id!r}, not {module_id!r}")
        keys = (*identity_keys, *device_keys)  # edgeHub lets a module sign with its device's key
    if not _matches(parsed.signature, keys, parsed.raw_resource, parsed.expiry):
        raise SasError("token signature does not match the identity's keys")
    return parsed
