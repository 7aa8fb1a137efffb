"""Direct methods: a request to a connected client through its proxy, and its response, as edgeHub
answers them (``InvokeMethodHandler``):

- arguments checked first: a method name of 1 to 100 characters, a response timeout of 5 to 300 s, a
  connect timeout of 0 to 300 s; otherwise 400;
- a client that is not connected, or connected but not subscribed to methods, is waited for up to the
  connect timeout (0 by default), then 404 ``Client {id} not found``;
- no response within the response timeout: 504; a response's status is the client's own (400000 when
  it is not a number), its payload JSON when it parses;
- when the hub stops, calls still waiting are answered at once (404), so a stop is never held up by a
  silent module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..iothub import METHODS
from .connections import ConnectionManager

log = logging.getLogger("edgehub_emu.methods")


class MethodError(Exception):
    """A direct method call failed the way edgeHub fails it: 404 not connected, 504 timeout, 400 bad."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class MethodResult:
    status: int
    payload: Any


def decode_payload(payload: bytes) -> Any:
    """A response payload: JSON if it parses, else text (None when empty)."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", errors="replace")


class MethodCalls:
    def __init__(self, connections: ConnectionManager, counters: Counter[str]) -> None:
        self.connections = connections
        self.counters = counters
        self._pending: dict[str, tuple[str, asyncio.Future[MethodResult]]] = {}

    async def invoke(
        self,
        identity_id: str,
        method_name: str,
        payload: Any = None,
        response_timeout: float = 30,
        connect_timeout: float = 0,
    ) -> MethodResult:
        """Call a direct method on a connected module or device, with edgeHub's results."""
        if not isinstance(method_name, str) or not 1 <= len(method_name) <= 100:
            raise MethodError(400, "methodName must be a string of 1 to 100 characters")
        if not 5 <= response_timeout <= 300:
            raise MethodError(400, "responseTimeoutInSeconds must be between 5 and 300")
        if not 0 <= connect_timeout <= 300:
            raise MethodError(400, "connectTimeoutInSeconds must be between 0 and 300")
        connection = self.connections.get(identity_id, METHODS)
        if connection is None and connect_timeout > 0:
            connection = await self.connections.wait_for(identity_id, METHODS, connect_timeout)
        if connection is None:
            raise MethodError(404, self._not_found(identity_id))
        request_id = str(uuid.uuid4())
        future: asyncio.Future[MethodResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (identity_id, future)
        body = b"" if payload is None else json.dumps(payload).encode()
        try:
            if not connection.proxy.send_method_request(method_name, request_id, body):
                raise MethodError(404, self._not_found(identity_id))
            self.counters["direct_methods"] += 1
            async with asyncio.timeout(response_timeout):
                return await future
        except TimeoutError:
            raise MethodError(
                504, f"Timed out waiting for device to respond to method request {request_id}"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    def _not_found(self, identity_id: str) -> str:
        """edgeHub's message, and what the client is missing when it is connected after all."""
        message = f"Client {identity_id} not found"
        connection = self.connections.get(identity_id)
        if connection is not None:
            how = {"amqp": "has no methods link"}.get(connection.proxy.transport.split("-")[0])
            message += (
                f" (it is connected, but {how})"
                if how
                else " (it is connected, but not subscribed to methods: $iothub/methods/POST/#)"
            )

        return message

    def respond(self, request_id: str, status: int, payload: bytes) -> None:
        """A client's response; one for an unknown (or already answered) request is ignored."""
        pending = self._pending.get(request_id.lower())
        if pending is None or pending[1].done():
            log.info("ignored a method response for unknown request %r", request_id)
            return
        pending[1].set_result(MethodResult(status, decode_payload(payload)))

    def fail_all(self, status: int, message: str) -> int:
        """Answer every call still waiting (the hub stops); returns how many there were."""
        failed = 0
        for identity_id, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(MethodError(status, message.format(identity_id=identity_id)))
                failed += 1
        return failed
