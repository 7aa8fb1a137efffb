"""The workload API of the IoT Edge security daemon, as much of it as modules use to connect.

``IoTHubModuleClient.create_from_edge_environment()`` (Python) and ``ModuleClient.fromEnvironment``
(Node) read ``IOTEDGE_WORKLOADURI`` and call:

- ``GET /trust-bundle?api-version=…`` → ``{"certificate": "<edge CA PEM>"}``;
- ``POST /modules/{module}/genid/{generation}/sign?api-version=…`` with
  ``{"keyId": "primary", "algo": "HMACSHA256", "data": <base64>}`` → ``{"digest": <base64 HMAC-SHA256
  of the data with the module's key>}``.

Served on a unix socket (and optionally TCP), at the root, as the SDKs expect. Unknown modules, wrong
generation ids and malformed requests get a clear error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import TYPE_CHECKING

from aiohttp import web

from ..identity import generation_id

if TYPE_CHECKING:
    from ..hub import EdgeHub

HUB: web.AppKey[EdgeHub] = web.AppKey("workload-hub")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _api_version(request: web.Request) -> web.Response | None:
    if not request.query.get("api-version"):
        return _error(400, "the api-version query parameter is required (the SDKs send it)")
    return None


async def trust_bundle(request: web.Request) -> web.Response:
    if (problem := _api_version(request)) is not None:
        return problem
    hub = request.app[HUB]
    return web.json_response({"certificate": hub.ca_file.read_text()})


async def sign(request: web.Request) -> web.Response:
    if (problem := _api_version(request)) is not None:
        return problem
    hub = request.app[HUB]
    module, genid = request.match_info["module"], request.match_info["genid"]
    identity = hub.identity(f"{hub.device_id}/{module}")
    if identity is None:
        return _error(404, f"module {module!r} is not deployed on edge device {hub.device_id!r}")
    if genid != generation_id(identity.primary_key):
        return _error(
            400, f"generation id {genid!r} is not module {module!r}'s (see edgehub-emu creds {module} --edge)"
        )
    try:
        body = json.loads(await request.read())
        data = base64.b64decode(body["data"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return _error(400, 'the body must be {"keyId": "primary", "algo": "HMACSHA256", "data": <base64>}')
    if body.get("algo", "HMACSHA256") != "HMACSHA256":
        return _error(400, f"algorithm {body.get('algo')!r} is not supported: use HMACSHA256")
    key = identity.secondary_key if body.get("keyId") == "secondary" else identity.primary_key
    digest = hmac.new(base64.b64decode(key), data, hashlib.sha256).digest()
    return web.json_response({"digest": base64.b64encode(digest).decode("ascii")})


def workload_app(hub: EdgeHub) -> web.Application:
    app = web.Application()
    app[HUB] = hub
    app.router.add_get("/trust-bundle", trust_bundle)
    app.router.add_post("/modules/{module}/genid/{genid}/sign", sign)
    return app
