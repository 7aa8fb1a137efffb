"""The property bag at the end of IoT Hub MQTT topics: ``k=v&k2=v2``, URL-encoded.

Decoding follows the Azure IoT C# SDK's ``UrlEncodedDictionarySerializer`` that edgeHub uses, quirks
included: ``+`` is not a space, a key without ``=`` or with nothing after it has a null value, the last
duplicate wins, and a leading, doubled or trailing ``&``, a leading ``=`` or an ``=`` inside a value is a
format error (edgeHub then drops the message and still acknowledges it). Encoding is
``Uri.EscapeDataString`` of each key and value (RFC 3986 unreserved characters kept, upper-case hex).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, unquote


class PropertyBagError(ValueError):
    """The bag is malformed; the message says where."""


def decode(bag: str) -> dict[str, str | None]:
    """Decode a property bag (without the leading ``/``); raise PropertyBagError if malformed."""
    result: dict[str, str | None] = {}
    if bag == "":
        return result
    for index, pair in enumerate(bag.split("&")):
        if pair == "":
            where = "leading" if index == 0 else "doubled or trailing"
            raise PropertyBagError(f"{where} '&' in property bag {bag!r}")
        key, sep, value = pair.partition("=")
        if key == "":
            raise PropertyBagError(f"'=' without a name in property bag {bag!r}")
        if "=" in value:
            raise PropertyBagError(f"'=' inside the value of {key!r} in property bag {bag!r}")
        result[unquote(key)] = unquote(value) if sep and value else None
    return result


@lru_cache(maxsize=8192)
def escape(text: str) -> str:
    """``Uri.EscapeDataString``: everything but RFC 3986 unreserved characters, percent-encoded."""
    return quote(text, safe="")


@lru_cache(maxsize=8192)
def encode_pair(key: str, value: str | None) -> str:
    """One ``key=value`` of a bag (the bare key for a ``None`` value), escaped."""
    return escape(key) if value is None else f"{escape(key)}={escape(value)}"


def encode(pairs: Iterable[tuple[str, str | None]]) -> str:
    """Encode ``(key, value)`` pairs; a ``None`` value is written as the bare key."""
    return "&".join([encode_pair(k, v) for k, v in pairs])
