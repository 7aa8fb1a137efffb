"""proton's ``Message`` for the hot path: the sections the head uses written and read by type.

proton's own ``Message`` converts every section through ``Data.put_object``/``get_object`` (type
dispatch, key-checking dict wrappers) and encodes into a 16-byte buffer doubled until the message fits,
re-encoding it each time: some 70 µs per routed message between decode and encode. Here the same engine
calls its binding makes (``pn_data_put_symbol``, ``pn_data_get_string``, ``pn_message_encode``) are
made directly for the shapes edgeHub's messages have (string-keyed maps of strings, a Data body), and
the buffer starts big enough. The binding is pinned (``python-qpid-proton<0.41``) for this reason.
Everything else about the message (its properties section) is proton's, unchanged.
"""

from __future__ import annotations

from typing import Any

from cproton_ffi import ffi, lib  # the engine's C calls, as proton's own binding makes them
from proton import Message as AmqpMessage
from proton._message import PN_OVERFLOW, pn_message_encode

_STRING, _SYMBOL, _MAP, _BINARY = lib.PN_STRING, lib.PN_SYMBOL, lib.PN_MAP, lib.PN_BINARY


def _text(value: str) -> tuple[int, Any]:
    data = ffi.from_buffer(value.encode())
    return len(data), data


class WireMessage(AmqpMessage):
    """A message whose annotations and application properties are plain dicts of strings (``None`` for a
    value of another type, as this head reads them anyway), and whose body is a Data section."""

    annotation_dict: dict[str, str | None] | None  # proton's attribute behind ``annotations``
    properties: dict[str, Any] | None
    body: Any

    def reset(self) -> WireMessage:
        """Empty again, to be filled and encoded once more (one message per connection, not per send)."""
        lib.pn_message_clear(self._msg)
        self.instructions = None
        self.annotation_dict = None
        self.properties = None
        self.body = None
        return self

    def _pre_encode(self) -> None:
        message = self._msg
        lib.pn_data_clear(lib.pn_message_instructions(message))
        annotations = lib.pn_message_annotations(message)
        lib.pn_data_clear(annotations)
        if self.annotation_dict:
            lib.pn_data_put_map(annotations)
            lib.pn_data_enter(annotations)
            for key, value in self.annotation_dict.items():
                lib.pn_data_put_symbol(annotations, _text(key))
                if value is None:
                    lib.pn_data_put_null(annotations)
                else:
                    lib.pn_data_put_string(annotations, _text(value))
            lib.pn_data_exit(annotations)
        properties = lib.pn_message_properties(message)
        lib.pn_data_clear(properties)
        if self.properties:
            lib.pn_data_put_map(properties)
            lib.pn_data_enter(properties)
            for key, value in self.properties.items():
                lib.pn_data_put_string(properties, _text(key))
                if value is None:
                    lib.pn_data_put_null(properties)
                else:
                    lib.pn_data_put_string(properties, _text(value))
            lib.pn_data_exit(properties)
        body = lib.pn_message_body(message)
        lib.pn_data_clear(body)
        if self.body is not None:
            data = ffi.from_buffer(self.body)
            lib.pn_data_put_binary(body, (len(data), data))

    def encode(self) -> bytes:
        self._pre_encode()
        size = len(self.body or b"") + 512 + 96 * len(self.properties or ())
        while True:
            error, data = pn_message_encode(self._msg, size)
            if error != PN_OVERFLOW:
                self._check(error)
                return bytes(data)
            size *= 2

    def _post_decode(self) -> None:
        message = self._msg
        self.instructions = None
        self.annotation_dict = _string_map(lib.pn_message_annotations(message))
        self.properties = _string_map(lib.pn_message_properties(message))
        body = lib.pn_message_body(message)
        if not lib.pn_data_next(body):
            self.body = None
        elif lib.pn_data_type(body) == _BINARY:
            value = lib.pn_data_get_binary(body)
            self.body = ffi.unpack(value.start, value.size)
        else:
            lib.pn_data_rewind(body)
            super()._post_decode()  # not a Data section: proton reads it (the head refuses it)


def _string_map(data: Any) -> dict[str, str | None] | None:
    """A map section with string or symbol keys; values that are not strings read as ``None``."""
    if not lib.pn_data_next(data):
        return None
    if lib.pn_data_type(data) != _MAP:
        return {}
    out: dict[str, str | None] = {}
    lib.pn_data_enter(data)
    while lib.pn_data_next(data):
        kind = lib.pn_data_type(data)
        if kind == _STRING:
            raw = lib.pn_data_get_string(data)
        elif kind == _SYMBOL:
            raw = lib.pn_data_get_symbol(data)
        else:
            raw = None
        if not lib.pn_data_next(data):
            break
        if raw is None:
            continue
        key = ffi.unpack(raw.start, raw.size).decode("utf-8", "replace")
        kind = lib.pn_data_type(data)
        if kind == _STRING:
            value = lib.pn_data_get_string(data)
        elif kind == _SYMBOL:
            value = lib.pn_data_get_symbol(data)
        else:
            out[key] = None
            continue
        out[key] = ffi.unpack(value.start, value.size).decode("utf-8", "replace")
    lib.pn_data_exit(data)
    return out
