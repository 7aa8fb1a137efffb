"""The management API: the cloud side of the hub over HTTP (aiohttp), for tools, tests and curl.

Paths mirror IoT Hub's service REST API where one exists. JSON in and out; every error is
``{"error": {"code": ..., "message": ...}}`` with a message that says what to fix. Handlers are small:
validate, call the hub, shape the answer. Loopback only unless the hub has an API token, which every
request must then carry as ``Authorization: Bearer <token>``.

Message properties travel in headers, as in IoT Hub's HTTPS device API: ``iothub-app-<name>`` for
application properties, ``iothub-messageid``, ``iothub-correlationid``, ``content-type``,
``content-encoding`` for the system ones. Bodies are taken byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from ..core import MessageRefused, MethodError
from ..iothub import TwinError
from ..manifest import TARGET
from ..metrics import render
from ..routing import Message
from ..settings import is_loopback
from ..snapshot import HubSnapshot
from . import dashboard
from .http_server import size_refusal
from .openapi import OPENAPI

log = logging.getLogger("edgehub_emu.api")

if TYPE_CHECKING:
    from ..hub import EdgeHub
    from ..upstream import UpstreamRecord

HUB: web.AppKey[EdgeHub] = web.AppKey("hub")
TOKEN: web.AppKey[str | None] = web.AppKey("token")
NAMES: web.AppKey[frozenset[str]] = web.AppKey("names")  # host names the API answers to, besides loopback
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")

APP_PREFIX = "iothub-app-"
SYSTEM_HEADERS = {
    "iothub-messageid": "messageId",
    "iothub-correlationid": "cid",
    "content-type": "contentType",
    "content-encoding": "contentEncoding",
    "iothub-contenttype": "contentType",
    "iothub-contentencoding": "contentEncoding",
}


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _loopback_or_named(host: str, names: frozenset[str]) -> bool:
    """A Host (or Origin) name this API answers to: a loopback address, ``localhost``, or a name
    the hub was given (its host, gateway host name, certificate names)."""
    name = host.lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    return name in names or is_loopback(name)


def _refusal(request: web.Request) -> web.Response | None:
    """What a web page in the developer's own browser could send: a request from another origin (a
    cross-site POST), or one for another host name that resolves here (DNS rebinding). Clients outside
    a browser send neither an Origin nor a foreign Host."""
    names = request.app[NAMES]
    origin = request.headers.get("Origin")
    if origin is not None:
        parsed = urlsplit(origin)
        if parsed.scheme not in ("http", "https") or not _loopback_or_named(parsed.netloc, names):
            log.warning(
                "refused a %s %s from origin %s: another site's page", request.method, request.path, origin
            )
            return error(403, "Forbidden", f"requests from origin {origin!r} are refused: this API is local")
    if request.app[TOKEN] is None and not _loopback_or_named(request.host, names):
        log.warning("refused a request for host %r: not a name of this hub (DNS rebinding?)", request.host)
        return error(403, "Forbidden", f"host {request.host!r} is not a name of this hub")
    return None


@web.middleware
async def errors_and_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
):
    refused = _refusal(request)
    if refused is not None:
        return refused
    too_long = size_refusal(request)
    if too_long is not None:
        log.info("refused a request to %s: %s", request.path[:100], too_long[2])
        return error(*too_long)
    token = request.app[TOKEN]
    if token is not None and request.path not in dashboard.PUBLIC_PATHS:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given, f"Bearer {token}"):
            return error(401, "Unauthorized", "send the hub's API token as 'Authorization: Bearer <token>'")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return error(exc.status, exc.reason.replace(" ", ""), exc.text or exc.reason)
        raise


def bearer_only(token: str) -> Any:
    """A middleware that asks for ``Authorization: Bearer <token>`` and nothing else (the metrics)."""

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
            return error(401, "Unauthorized", "send the hub's API token as 'Authorization: Bearer <token>'")
        return await handler(request)

    return check


async def _json(request: web.Request) -> Any:
    if request.content_type != "application/json":  # (a page's cross-site form or text/plain POST)
        raise web.HTTPUnsupportedMediaType(
            text=f"send the body as application/json (got {request.content_type or 'no content type'})"
        )
    try:
        return await request.json(loads=json.loads)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"the request body is not JSON: {exc}") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="the request body is JSON nested too deep") from None


def _module_id(request: web.Request) -> str:
    hub = request.app[HUB]
    device, module = request.match_info["device"], request.match_info["module"]
    identity_id = f"{device}/{module}"
    if hub.identity(identity_id) is None:
        raise web.HTTPNotFound(text=f"no module {identity_id!r}: the deployment has {', '.join(hub.modules)}")
    return identity_id


async def invoke_method(request: web.Request) -> web.Response:
    identity_id = _module_id(request)
    body = await _json(request)
    if not isinstance(body, dict) or not isinstance(body.get("methodName"), str):
        return error(400, "BadRequest", "the body needs a string 'methodName' (and optionally 'payload')")
    try:
        response_timeout = float(body.get("responseTimeoutInSeconds", 30))
        connect_timeout = float(body.get("connectTimeoutInSeconds", 0))
    except (TypeError, ValueError):
        return error(
            400, "BadRequest", "responseTimeoutInSeconds and connectTimeoutInSeconds must be numbers"
        )
    try:
        result = await request.app[HUB].invoke_method(
            identity_id,
            body["methodName"],
            body.get("payload"),
            response_timeout=response_timeout,
            connect_timeout=connect_timeout,
        )
    except MethodError as exc:
        code = {404: "DeviceNotOnline", 504: "GatewayTimeout", 400: "BadRequest"}.get(exc.status, "Error")
        return error(exc.status, code, str(exc))
    return web.json_response({"status": result.status, "payload": result.payload})


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


def _twin(hub: EdgeHub, identity_id: str) -> dict[str, Any]:
    document = hub.twin(identity_id, metadata=True)
    for side in ("desired", "reported"):
        updated = document[side]["$metadata"]["$lastUpdated"]
        document[side]["$metadata"]["$lastUpdated"] = _iso(updated)
    device, _, module = identity_id.partition("/")
    return {"deviceId": device, "moduleId": module, "properties": document}


async def get_twin(request: web.Request) -> web.Response:
    identity_id = _module_id(request)
    return web.json_response(_twin(request.app[HUB], identity_id))


async def patch_twin(request: web.Request) -> web.Response:
    identity_id = _module_id(request)
    body = await _json(request)
    desired = body.get("properties", {}).get("desired") if isinstance(body, dict) else None
    if not isinstance(desired, dict):
        return error(400, "BadRequest", 'the body needs {"properties": {"desired": {...}}}')
    try:
        request.app[HUB].patch_desired(identity_id, desired)
    except TwinError as exc:
        return error(exc.status, "BadRequest", str(exc))
    return web.json_response(_twin(request.app[HUB], identity_id))


PROPERTIES_HEADER = "edgehub-properties"
SYSTEM_PROPERTIES_HEADER = "edgehub-system-properties"


def _json_header(request: web.Request, header: str) -> dict[str, str | None]:
    raw = request.headers.get(header)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"header {header} is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str | None) for v in value.values()):
        raise web.HTTPBadRequest(
            text=f'header {header} must be a JSON object of strings, e.g. {{"alert": "true"}}'
        )
    return value


def _properties(request: web.Request) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Application and system properties from headers. HTTP may change the case of header names, so
    ``edgehub-properties`` / ``edgehub-system-properties`` (JSON objects) carry names exactly."""
    app: dict[str, str | None] = {}
    system: dict[str, str | None] = {}
    for name, value in request.headers.items():
        lower = name.lower()
        if lower.startswith(APP_PREFIX):
            app[name[len(APP_PREFIX) :]] = value
        elif lower in SYSTEM_HEADERS:
            system[SYSTEM_HEADERS[lower]] = value
    if system.get("contentType") == "application/octet-stream":
        del system["contentType"]  # what HTTP clients send by default is no message content type
    app.update(_json_header(request, PROPERTIES_HEADER))
    system.update(_json_header(request, SYSTEM_PROPERTIES_HEADER))
    return app, system


async def inject_input(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    module, input_name = request.match_info["module"], request.match_info["input"]
    if module not in hub.modules:
        raise web.HTTPNotFound(text=f"no module {module!r}: the deployment has {', '.join(hub.modules)}")
    app, system = _properties(request)
    message = Message(body=await request.read(), properties=app, system_properties=system)
    try:
        queued = await hub.send_to_input(module, input_name, message)
    except MessageRefused as exc:
        return error(exc.status, "BadRequest" if exc.status == 400 else "MessageTooLarge", str(exc))
    return web.json_response(
        {"queued": queued.endpoint_id, "timeToLiveSecs": queued.time_to_live_secs}, status=202
    )


async def iotedgehubdev_message(request: web.Request) -> web.Response:
    """iotedgehubdev's ``POST /api/v1/messages {"inputName": …, "data": …}``: a message for an input of
    module ``target`` in the single-module mode (``run --inputs``)."""
    hub = request.app[HUB]
    inputs = hub.settings.inputs
    if not inputs:
        return error(
            404,
            "NotFound",
            "/api/v1/messages serves iotedgehubdev's single-module mode: start the hub with --inputs "
            "input1,input2 (or use POST /modules/{module}/inputs/{input}/messages)",
        )
    body = await _json(request)
    if not isinstance(body, dict) or not isinstance(body.get("inputName"), str):
        return error(400, "BadRequest", "the body needs a string 'inputName' and the message as 'data'")
    if body["inputName"] not in inputs:
        return error(
            400,
            "BadRequest",
            f"no input {body['inputName']!r}: the inputs are {', '.join(inputs)} (--inputs)",
        )
    data = body.get("data", "")
    payload = data.encode() if isinstance(data, str) else json.dumps(data).encode()
    try:
        queued = await hub.send_to_input(TARGET, body["inputName"], Message(body=payload))
    except MessageRefused as exc:
        return error(exc.status, "BadRequest" if exc.status == 400 else "MessageTooLarge", str(exc))
    return web.json_response({"queued": queued.endpoint_id, "timeToLiveSecs": queued.time_to_live_secs})


async def send_c2d(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    app, system = _properties(request)
    try:
        hub.send_c2d(request.match_info["device"], await request.read(), app, system)
    except MethodError as exc:
        return error(exc.status, "DeviceNotOnline", str(exc))
    return web.json_response({"sent": True}, status=202)


def record_json(record: UpstreamRecord) -> dict[str, Any]:
    body = record.message.body
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "sequence": record.sequence,
        "origin": record.origin,
        "enqueuedTime": _iso(record.message.enqueued_time),
        "receivedTime": _iso(record.received_at),
        "properties": record.message.properties,
        "systemProperties": record.message.system_properties,
        "body": text,
        "bodyBase64": base64.b64encode(body).decode("ascii"),
    }


MAX_QUERY_INT = 2**63 - 1  # what SQLite (the upstream capture) can hold


def _int(request: web.Request, name: str, default: int) -> int:
    try:
        value = int(request.query.get(name, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be a whole number") from None
    if not 0 <= value <= MAX_QUERY_INT:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be between 0 and {MAX_QUERY_INT}")
    return value


async def upstream_messages(request: web.Request) -> web.Response:
    since = _int(request, "since", 0)
    limit = _int(request, "limit", 100)
    records = request.app[HUB].upstream.messages(since, limit)
    return web.json_response({"messages": [record_json(r) for r in records]})


async def upstream_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one ``message`` event per upstream message, as they arrive."""
    since = _int(request, "since", request.app[HUB].upstream.last_sequence)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    upstream = request.app[HUB].upstream
    streams = request.app[STREAMS]
    task = asyncio.current_task()
    assert task is not None
    streams.add(task)
    try:
        while True:
            try:
                record = await upstream.wait_for(timeout=15, since=since)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            since = record.sequence
            event = f"id: {record.sequence}\nevent: message\ndata: {json.dumps(record_json(record))}\n\n"
            await response.write(event.encode())
    except asyncio.CancelledError:
        return response  # the hub is stopping: end the stream
    except ConnectionError:  # the client went away (monitor stopped): nothing to report
        log.info("an upstream event stream ended: its client went away")
        return response
    finally:
        streams.discard(task)


async def _end_streams(app: web.Application) -> None:
    """On shutdown, end open event streams instead of waiting for their next keep-alive."""
    streams: set[asyncio.Task[Any]] = app[STREAMS]
    for task in list(streams):
        task.cancel()


def status_json(snapshot: HubSnapshot) -> dict[str, Any]:
    """``GET /status``: who is connected, what waits, the routes, the upstream, the broker mode."""
    return {
        "deviceId": snapshot.device_id,
        "identities": [
            {
                "id": i.id,
                "kind": i.kind,
                "connected": i.connected,
                "transport": i.transport,
                "subscriptions": list(i.subscriptions),
                "features": list(i.features),
            }
            for i in snapshot.identities
        ],
        "queues": [
            {
                "endpoint": q.endpoint_id,
                "priority": q.priority,
                "messages": q.messages,
                "nextExpiry": _iso(q.next_expiry) if q.next_expiry is not None else None,
            }
            for q in snapshot.queues
        ],
        "routes": [
            {
                "name": r.name,
                "route": r.text,
                "priority": r.priority,
                "timeToLiveSecs": r.time_to_live_secs,
                "hits": r.hits,
            }
            for r in snapshot.routes
        ],
        "messages": {
            "received": snapshot.received,
            "delivered": snapshot.delivered,
            "dropped": snapshot.dropped,
        },
        "modules": snapshot.modules,
        "upstream": snapshot.upstream,
        "broker": snapshot.broker,
    }


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_json(request.app[HUB].snapshot()))


MAX_TRACE = 1000


async def trace(request: web.Request) -> web.Response:
    """What became of messages: ``?id=EDGE_MESSAGE_ID``, or the last ``limit`` (``?module=``, ``?output=``
    narrow them)."""
    limit = _int(request, "limit", 10)
    if not 1 <= limit <= MAX_TRACE:
        return error(400, "BadRequest", f"query parameter 'limit' must be between 1 and {MAX_TRACE}")
    query = request.query
    messages = request.app[HUB].trace(query.get("id"), query.get("module"), query.get("output"), limit)
    return web.json_response({"messages": messages, "tracing": request.app[HUB].tracing})


async def set_tracing(request: web.Request) -> web.Response:
    """``PUT /trace {"enabled": false}`` pauses the message trace, ``true`` resumes it."""
    body = await _json(request)
    if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
        return error(400, "BadRequest", 'the body needs {"enabled": true} or {"enabled": false}')
    hub = request.app[HUB]
    if hub.settings.trace_size <= 0:
        return error(409, "Conflict", "the hub runs with tracing off (--trace-size 0)")
    hub.set_tracing(body["enabled"])
    return web.json_response({"tracing": hub.tracing})


async def dashboard_page(request: web.Request) -> web.Response:
    return await dashboard.page(request)


async def dashboard_asset(request: web.Request) -> web.Response:
    return await dashboard.static(request)


async def graph_svg(request: web.Request) -> web.Response:
    return dashboard.graph_svg(request.app[HUB])


async def dashboard_state(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    after = float(_int(request, "after", 0))
    return web.json_response(dashboard.state(hub, status_json(hub.snapshot()), after))


async def dashboard_stream(request: web.Request) -> web.StreamResponse:
    return await dashboard.stream(
        request, request.app[HUB], lambda hub: status_json(hub.snapshot()), request.app[STREAMS]
    )


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render(request.app[HUB].metrics), content_type="text/plain")


ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    ("POST", "/twins/{device}/modules/{module}/methods", invoke_method),
    ("GET", "/twins/{device}/modules/{module}", get_twin),
    ("PATCH", "/twins/{device}/modules/{module}", patch_twin),
    ("POST", "/modules/{module}/inputs/{input}/messages", inject_input),
    ("POST", "/devices/{device}/messages/devicebound", send_c2d),
    ("POST", "/api/v1/messages", iotedgehubdev_message),
    ("GET", "/upstream/messages", upstream_messages),
    ("GET", "/upstream/stream", upstream_stream),
    ("GET", "/status", status),
    ("GET", "/trace", trace),
    ("PUT", "/trace", set_tracing),
    ("GET", "/health", health),
    ("GET", "/", dashboard_page),
    ("GET", "/static/{name}", dashboard_asset),
    ("GET", "/graph.svg", graph_svg),
    ("GET", "/dashboard/state", dashboard_state),
    ("GET", "/dashboard/stream", dashboard_stream),
    ("GET", "/openapi.json", openapi),
    ("GET", "/metrics", metrics),
]


def management_app(hub: EdgeHub, token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[errors_and_auth])
    app[HUB] = hub
    app[TOKEN] = token
    s = hub.settings
    app[NAMES] = frozenset(n.lower() for n in ("localhost", s.host, s.gateway_hostname, *s.extra_names) if n)
    app[STREAMS] = set()
    app.on_shutdown.append(_end_streams)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
