"""Direct methods between modules: the HTTPS endpoint edgeHub serves modules on its gateway port.

``ModuleClient.invoke_method`` (SDKs, from the edge environment) posts to
``/twins/{device}/modules/{module}/methods`` (or ``/twins/{device}/methods`` for a leaf device) with
the caller's SAS token in ``Authorization`` and ``x-ms-edge-moduleId: {device}/{caller}``. As edgeHub:
a missing or malformed ``x-ms-edge-moduleId`` is 400, a caller from another device or a bad token 401,
bad arguments 400, a target that is not connected and subscribed 404 ``{"message": "Client … not
found"}``, no answer in time 504; otherwise 200 ``{"status": …, "payload": …}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..identity import SasError, validate
from ..protocol_head import MethodError

if TYPE_CHECKING:
    from ..hub import EdgeHub

HUB: web.AppKey[EdgeHub] = web.AppKey("methods-hub")


def _message(status: int, text: str) -> web.Response:
    return web.json_response({"message": text}, status=status)


async def invoke(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    caller_id = request.headers.get("x-ms-edge-moduleId", "")
    caller_device, sep, caller_module = caller_id.partition("/")
    if not sep or not caller_device or not caller_module:
        return _message(400, "the x-ms-edge-moduleId header must be {deviceId}/{moduleId}")
    if caller_device != hub.settings.device_id:
        return _message(401, f"caller {caller_id!r} is not on edge device {hub.settings.device_id!r}")
    caller = hub.identities.get(caller_id)
    if caller is None:
        return _message(401, f"unknown caller {caller_id!r}")
    device = hub.identities.get(caller.device_id)
    try:
        validate(
            request.headers.get("Authorization", ""),
            device_id=caller.device_id,
            module_id=caller.module_id,
            identity_keys=caller.keys,
            device_keys=device.keys if device else (),
            hostnames=[hub.settings.iothub_hostname, hub.settings.gateway_hostname],
        )
    except SasError as exc:
        return _message(401, f"unauthorized: {exc}")
    try:
        body: Any = json.loads(await request.read())
        name = body["methodName"]
        response_timeout = float(body.get("responseTimeoutInSeconds", 30))
        connect_timeout = float(body.get("connectTimeoutInSeconds", 0))
    except (ValueError, KeyError, TypeError):
        return _message(400, 'the body must be JSON with a "methodName"')
    target_device = request.match_info["device"]
    target_module = request.match_info.get("module")
    target = f"{target_device}/{target_module}" if target_module else target_device
    try:
        result = await hub.head.invoke_method(
            target, name, body.get("payload"), response_timeout, connect_timeout
        )
    except MethodError as exc:
        return _message(exc.status, str(exc))
    return web.json_response({"status": result.status, "payload": result.payload})


def add_module_method_routes(app: web.Application, hub: EdgeHub) -> None:
    app[HUB] = hub
    app.router.add_post("/twins/{device}/modules/{module}/methods", invoke)
    app.router.add_post("/twins/{device}/methods", invoke)
