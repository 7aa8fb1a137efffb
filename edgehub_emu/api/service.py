"""IoT Hub's service API, as far as cloud-side code needs it against an edge deployment: what Microsoft's
``azure-iot-hub`` package (``IoTHubRegistryManager``) calls, on the hub's HTTPS port.

Requests carry ``Authorization: SharedAccessSignature sr={host}&sig=…&se=…&skn=iothubowner`` signed with
the hub's ``iothubowner`` key (``edgehub-emu creds --service``). Served, with IoT Hub's JSON shapes:

- ``GET /twins/{device}/modules/{module}``, ``PATCH`` (desired properties merged), ``PUT`` (replaced);
- ``GET /twins/{device}`` (a device's twin: the edge device or a leaf device);
- ``POST /twins/{device}/modules/{module}/methods`` and ``/twins/{device}/methods`` (shared with the
  module-to-module endpoint, which callers tell apart by ``x-ms-edge-moduleId``);
- ``GET /devices/{device}/modules/{module}`` and ``GET /devices/{device}/modules``.

Errors are IoT Hub's: ``{"Message": "ErrorCode:…;…", "ExceptionMessage": …}`` with its status codes.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..core import MethodError, MethodResult
from ..identity import SasError, check_service_token
from ..iothub import TwinError

if TYPE_CHECKING:
    from ..hub import EdgeHub

HUB: web.AppKey[EdgeHub] = web.AppKey("service-hub")


def hub_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"Message": f"ErrorCode:{code};{message}", "ExceptionMessage": message}, status=status
    )


def authorized(request: web.Request) -> web.Response | None:
    """None if the request carries a valid iothubowner token for this host, else the 401 to answer."""
    hub = request.app[HUB]
    host = request.host
    hosts = {host, host.rsplit(":", 1)[0] if host.endswith(":443") else host, hub.settings.iothub_hostname}
    try:
        check_service_token(request.headers.get("Authorization", ""), hub.service_key, hosts)
    except SasError as exc:
        return hub_error(401, "IotHubUnauthorizedAccess", f"Unauthorized: {exc}")
    return None


def _identity_id(request: web.Request) -> str | None:
    hub = request.app[HUB]
    device, module = request.match_info["device"], request.match_info.get("module")
    identity_id = f"{device}/{module}" if module else device
    return identity_id if hub.identity(identity_id) is not None else None


def _iso_times(section: Any) -> Any:
    """``$metadata`` with IoT Hub's ISO 8601 times (the hub keeps seconds since the epoch)."""
    if isinstance(section, dict):
        return {
            k: dt.datetime.fromtimestamp(v, dt.UTC).isoformat().replace("+00:00", "Z")
            if k == "$lastUpdated" and isinstance(v, int | float)
            else _iso_times(v)
            for k, v in section.items()
        }
    return section


def _twin_json(hub: EdgeHub, identity_id: str) -> dict[str, Any]:
    device, _, module = identity_id.partition("/")
    twin = _iso_times(hub.twin(identity_id, metadata=True))
    version = twin["desired"].get("$version", 1) + twin["reported"].get("$version", 1)
    document: dict[str, Any] = {
        "deviceId": device,
        "etag": f"AAAAAAAAAA{version}=",
        "deviceEtag": "AAAAAAAAAAE=",
        "status": "enabled",
        "statusUpdateTime": "0001-01-01T00:00:00Z",
        "connectionState": "Connected" if hub.is_connected(identity_id) else "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": "sas",
        "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
        "modelId": "",
        "version": version,
        "properties": twin,
    }
    if module:
        document["moduleId"] = module
    return document


def _module_json(hub: EdgeHub, identity_id: str) -> dict[str, Any]:
    identity = hub.identity(identity_id)
    assert identity is not None and identity.module_id is not None
    return {
        "moduleId": identity.module_id,
        "deviceId": identity.device_id,
        "managedBy": "iotEdge",
        "generationId": "0",
        "etag": "AAAAAAAAAAE=",
        "connectionState": "Connected" if hub.is_connected(identity_id) else "Disconnected",
        "connectionStateUpdatedTime": "0001-01-01T00:00:00Z",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": {"primaryKey": identity.primary_key, "secondaryKey": identity.secondary_key},
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            "type": "sas",
        },
    }


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, RecursionError):
        return hub_error(400, "ArgumentInvalid", "the body is not JSON")
    if not isinstance(body, dict):
        return hub_error(400, "ArgumentInvalid", "the body must be a JSON object")
    return body


async def twin(request: web.Request) -> web.Response:
    if (refused := authorized(request)) is not None:
        return refused
    hub = request.app[HUB]
    identity_id = _identity_id(request)
    if identity_id is None:
        return hub_error(404, "DeviceNotFound", f"no device or module {request.path.split('/', 2)[2]!r}")
    if request.method in ("PATCH", "PUT"):
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        desired = (body.get("properties") or {}).get("desired")
        if desired is not None and not isinstance(desired, dict):
            return hub_error(400, "ArgumentInvalid", "properties.desired must be an object")
        try:
            if request.method == "PUT":
                hub.replace_desired(identity_id, desired or {})
            elif desired:
                hub.patch_desired(identity_id, desired)
        except TwinError as exc:
            return hub_error(400, "ArgumentInvalid", str(exc))
    return web.json_response(_twin_json(hub, identity_id))


async def module(request: web.Request) -> web.Response:
    if (refused := authorized(request)) is not None:
        return refused
    hub = request.app[HUB]
    identity_id = _identity_id(request)
    if identity_id is None:
        return hub_error(404, "ModuleNotFound", f"no module {request.match_info['module']!r}")
    return web.json_response(_module_json(hub, identity_id))


async def modules(request: web.Request) -> web.Response:
    if (refused := authorized(request)) is not None:
        return refused
    hub = request.app[HUB]
    device = request.match_info["device"]
    if device != hub.device_id:
        return web.json_response([])  # leaf devices have no modules here
    return web.json_response([_module_json(hub, hub.identity_id(m)) for m in hub.modules])


async def call_method(
    hub: EdgeHub,
    request: web.Request,
    name: str,
    payload: Any,
    response_timeout: float,
    connect_timeout: float,
) -> MethodResult:
    """Call a direct method on the device or module the request's path names (``{device}`` and, for a
    module, ``{module}``): what this API and the module-to-module endpoint both do, each answering in
    its own words. Raises ``MethodError``."""
    device, module = request.match_info["device"], request.match_info.get("module")
    return await hub.invoke_method(
        f"{device}/{module}" if module else device,
        name,
        payload,
        response_timeout=response_timeout,
        connect_timeout=connect_timeout,
    )


async def invoke(request: web.Request) -> web.Response:
    """A direct method from the cloud side (the module-to-module endpoint hands these over)."""
    if (refused := authorized(request)) is not None:
        return refused
    body = await _json_object(request)
    if isinstance(body, web.Response):
        return body
    name = body.get("methodName")
    if not isinstance(name, str):
        return hub_error(400, "ArgumentInvalid", "the body needs a string 'methodName'")
    try:
        response_timeout = float(body.get("responseTimeoutInSeconds") or 30)
        connect_timeout = float(body.get("connectTimeoutInSeconds") or 0)
    except (TypeError, ValueError):
        return hub_error(400, "ArgumentInvalid", "the time-outs must be numbers of seconds")
    try:
        result = await call_method(
            request.app[HUB], request, name, body.get("payload"), response_timeout, connect_timeout
        )
    except MethodError as exc:
        code = {404: "DeviceNotOnline", 504: "GatewayTimeoutException"}.get(exc.status, "ArgumentInvalid")
        return hub_error(exc.status, code, str(exc))
    return web.json_response({"status": result.status, "payload": result.payload})


def add_service_routes(app: web.Application, hub: EdgeHub) -> None:
    """On the HTTPS app, before its WebSocket catch-all (the method routes are the module-methods app's)."""
    app[HUB] = hub
    for method in ("GET", "PATCH", "PUT"):
        app.router.add_route(method, "/twins/{device}/modules/{module}", twin)
        app.router.add_route(method, "/twins/{device}", twin)
    app.router.add_get("/devices/{device}/modules/{module}", module)
    app.router.add_get("/devices/{device}/modules", modules)
