"""Direct methods between modules: the HTTPS endpoint edgeHub serves modules on its gateway port.

``ModuleClient.invoke_method`` (SDKs, from the edge environment) posts to
``/twins/{device}/modules/{module}/methods`` (or ``/twins/{device}/methods`` for a leaf device) with
the caller's SAS token in ``Authorization`` and ``x-ms-edge-moduleId: {device}/{caller}``. As edgeHub:
a missing or malformed ``x-ms-edge-moduleId`` is 400, a caller from another device or a bad token 401,
bad arguments 400, a target that is not connected and subscribed 404 ``{"message": "Client … not
found"}``, no answer in time 504; otherwise 200 ``{"status": …, "payload": …}``. A call without
``x-ms-edge-moduleId`` signed with the ``iothubowner`` policy is the cloud side's (``service.py``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..core import AuthenticationError, MethodError
from . import service

if TYPE_CHECKING:
    from ..hub import EdgeHub

HUB: web.AppKey[EdgeHub] = web.AppKey("methods-hub")


def _message(status: int, text: str) -> web.Response:
    return web.json_response({"message": text}, status=status)


async def invoke(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    if "x-ms-edge-moduleId" not in request.headers and "skn=" in request.headers.get("Authorization", ""):
        return await service.invoke(request)  # the cloud side, signed with the iothubowner policy
    caller_id = request.headers.get("x-ms-edge-moduleId", "")
    caller_device, sep, caller_module = caller_id.partition("/")
    if not sep or not caller_device or not caller_module:
        return _message(400, "the x-ms-edge-moduleId header must be {deviceId}/{moduleId}")
    if caller_device != hub.device_id:
        return _message(401, f"caller {caller_id!r} is not on edge device {hub.device_id!r}")
    try:
        hub.authenticate(caller_id, request.headers.get("Authorization", ""))
    except AuthenticationError as exc:
        return _message(401, f"unauthorized: {exc}")
    try:
        body: Any = json.loads(await request.read())
        name = body["methodName"]
        response_timeout = float(body.get("responseTimeoutInSeconds", 30))
        connect_timeout = float(body.get("connectTimeoutInSeconds", 0))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return _message(400, 'the body must be a JSON object with a "methodName"')
    try:
        result = await service.call_method(
            hub, request, name, body.get("payload"), response_timeout, connect_timeout
        )
    except MethodError as exc:
        return _message(exc.status, str(exc))
    return web.json_response({"status": result.status, "payload": result.payload})


def add_module_method_routes(app: web.Application, hub: EdgeHub) -> None:
    app[HUB] = hub
    app.router.add_post("/twins/{device}/modules/{module}/methods", invoke)
    app.router.add_post("/twins/{device}/methods", invoke)
