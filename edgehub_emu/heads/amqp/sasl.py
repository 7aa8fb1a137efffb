"""The SASL layer in front of the AMQP engine, as edgeHub serves it (sans-IO: bytes in, bytes out).

A client opens with one of two protocol headers:

- ``AMQP 0 1 0 0``: no SASL at all (the Node SDK does this); everything goes to the AMQP engine and
  the client authenticates later, per identity, with CBS put-token.
- ``AMQP 3 1 0 0``: SASL. The hub offers ANONYMOUS, MSSBCBS and PLAIN, in that order. ANONYMOUS and
  MSSBCBS succeed without a principal (CBS follows). PLAIN carries ``[authzid] NUL authcid NUL
  password`` where the password is a SAS token: the connection then serves only that identity. A
  malformed PLAIN response gets outcome ``auth`` (1), a failed check ``sys`` (2), as edgeHub answers.

Any other header is answered with the AMQP header and the connection closes. Proton's own SASL server
cannot serve PLAIN or MSSBCBS this way, so the few SASL frames are handled here, encoded and decoded
with proton's AMQP type codec.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from proton import UNDESCRIBED, Array, Data, DataException, Described, symbol, ubyte, ulong

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
MECHANISMS = ("ANONYMOUS", "MSSBCBS", "PLAIN")
_SASL_MECHANISMS, _SASL_INIT, _SASL_OUTCOME = 0x40, 0x41, 0x44
OK, AUTH, SYS = 0, 1, 2
MAX_SASL_FRAME = 64 * 1024


class Stage(enum.Enum):
    HEADER = "header"
    INIT = "init"  # mechanisms offered, waiting for sasl-init
    AMQP_HEADER = "amqp-header"  # outcome ok sent, waiting for the AMQP header that follows SASL
    DONE = "done"  # the rest of the stream is AMQP
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a SASL PLAIN exchange authenticated: the connection serves only this identity."""

    identity_id: str
    token: str


PlainCheck = Callable[[str, str], Principal]
"""``check(authcid, password)``: the principal, or ValueError saying why not."""


class SaslLayer:
    def __init__(self, check_plain: PlainCheck) -> None:
        self._check_plain = check_plain
        self._buffer = b""
        self.stage = Stage.HEADER
        self.principal: Principal | None = None
        self.used_sasl = False
        self.mechanism: str | None = None
        self.failure: str | None = None  # why the connection is refused (for the log)

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Take bytes from the client: (bytes to send back, bytes for the AMQP engine). Once ``stage``
        is DONE every further byte is the engine's; FAILED means send what is returned, then close."""
        if self.stage is Stage.DONE:
            return b"", data
        if self.stage is Stage.FAILED:
            return b"", b""
        self._buffer += data
        out = b""
        while self.stage not in (Stage.DONE, Stage.FAILED):
            reply, progressed = self._step()
            out += reply
            if not progressed:
                break
        if self._stage_now() is Stage.DONE:  # (a call: mypy narrows self.stage across the loop)
            rest, self._buffer = self._buffer, b""
            return out, rest
        return out, b""

    def _stage_now(self) -> Stage:
        return self.stage

    def _step(self) -> tuple[bytes, bool]:
        if self.stage is Stage.HEADER or self.stage is Stage.AMQP_HEADER:
            if len(self._buffer) < 8:
                return b"", False
            header = self._buffer[:8]
            if header == AMQP_HEADER:
                self.stage = Stage.DONE  # the header stays in the buffer: the engine reads it
                return b"", True
            if header == SASL_HEADER and self.stage is Stage.HEADER:
                self._buffer = self._buffer[8:]
                self.used_sasl = True
                self.stage = Stage.INIT
                return SASL_HEADER + _frame(_SASL_MECHANISMS, [_symbols(MECHANISMS)]), True
            self.stage = Stage.FAILED
            self.failure = f"unsupported protocol header {header!r}"
            return AMQP_HEADER, True
        # Stage.INIT: one SASL frame, sasl-init
        if len(self._buffer) < 8:
            return b"", False
        size, doff, kind = struct.unpack_from(">IBB", self._buffer)
        if kind != 1 or doff < 2 or size < doff * 4 or size > MAX_SASL_FRAME:
            return self._fail(SYS, f"not a SASL frame (size {size}, type {kind})")
        if len(self._buffer) < size:
            return b"", False
        body, self._buffer = self._buffer[doff * 4 : size], self._buffer[size:]
        try:
            descriptor, fields = _decode(body)
        except (ValueError, TypeError, KeyError, IndexError, DataException) as exc:
            return self._fail(SYS, f"undecodable SASL frame: {exc}")
        if descriptor not in (_SASL_INIT, "amqp:sasl-init:list") or not fields:
            return self._fail(SYS, f"expected sasl-init, got {descriptor!r}")
        mechanism = str(fields[0])
        raw = fields[1] if len(fields) > 1 else None
        response = bytes(raw) if isinstance(raw, bytes | bytearray | memoryview) else b""

        self.mechanism = mechanism
        if mechanism in ("ANONYMOUS", "MSSBCBS"):
            return self._succeed()
        if mechanism != "PLAIN":
            return self._fail(AUTH, f"SASL mechanism {mechanism} is not offered")
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            return self._fail(AUTH, "malformed SASL PLAIN response")
        try:
            self.principal = self._check_plain(
                parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
            )
        except ValueError as exc:
            return self._fail(SYS, str(exc))
        return self._succeed()

    def _succeed(self) -> tuple[bytes, bool]:
        self.stage = Stage.AMQP_HEADER
        return _frame(_SASL_OUTCOME, [ubyte(OK), b"Welcome!"]), True

    def _fail(self, code: int, why: str) -> tuple[bytes, bool]:
        self.stage = Stage.FAILED
        self.failure = why
        return _frame(_SASL_OUTCOME, [ubyte(code)]), True


def _symbols(names: tuple[str, ...]) -> Array:
    return Array(UNDESCRIBED, Data.SYMBOL, *(symbol(n) for n in names))


def _frame(descriptor: int, fields: list[object]) -> bytes:
    data = Data()
    data.put_object(Described(ulong(descriptor), fields))
    body = bytes(data.encode())
    return struct.pack(">IBBH", 8 + len(body), 2, 1, 0) + body


def _decode(body: bytes) -> tuple[object, list[object]]:
    data = Data()
    data.decode(body)
    data.rewind()
    if not data.next():
        raise ValueError("empty frame body")
    value = data.get_object()
    if not isinstance(value, Described) or not isinstance(value.value, list):
        raise ValueError("not a described list")
    descriptor = value.descriptor
    # Binary values are views into the decoder's buffer, which goes with it: copy them out now.
    fields = [bytes(v) if isinstance(v, memoryview) else v for v in value.value]
    return (int(descriptor) if isinstance(descriptor, int) else str(descriptor)), fields


def encode_init(mechanism: str, response: bytes) -> bytes:
    """A client's sasl-init frame (for tests and tools)."""
    return _frame(_SASL_INIT, [symbol(mechanism), response])


def decode_frame(frame: bytes) -> tuple[object, list[object]]:
    """A SASL frame's performative: (descriptor code, fields) (for tests and tools)."""
    size, doff = struct.unpack_from(">IB", frame)
    return _decode(frame[doff * 4 : size])


def parse_authcid(authcid: str, iothub_hostname: str) -> str:
    """The identity a PLAIN ``authcid`` names: ``{d}@sas.{hub}`` or ``{d}/modules/{m}@sas.{hub}`` (``sas.``
    optional), ``{hub}`` being the first label of the IoT hub's host name (any case); ids URL-decoded.
    Raises ValueError otherwise."""
    who, at, hub = authcid.rpartition("@")
    if not at or not who:
        raise ValueError(f"SASL PLAIN user {authcid!r} is not {{device}}[/modules/{{module}}]@sas.{{hub}}")
    if hub.lower().startswith("sas."):
        hub = hub[4:]
    expected = iothub_hostname.split(".", 1)[0]
    if hub.lower() != expected.lower():
        raise ValueError(f"SASL PLAIN user {authcid!r}: the hub {hub!r} is not {expected!r}")
    device, _, module = who.partition("/modules/")
    if not device or "/" in device or (module and "/" in module) or (who.endswith("/modules/")):
        raise ValueError(f"SASL PLAIN user {authcid!r} is not {{device}}[/modules/{{module}}]@sas.{{hub}}")
    device, module = unquote(device), unquote(module)
    return f"{device}/{module}" if module else device
