"""The dashboard: a page served at the management API's root that shows the deployment live.

Everything it needs ships in the package (``static/``): no CDN, it works offline. The page and its
assets hold no data, so they are served without the API token (the Host and Origin checks still
apply); every data request the page makes goes through the API with the same rules as any client.

Live updates are one Server-Sent Events stream (``/dashboard/stream``): once a second, the whole state
in one event (connections, queue depths, per-route counts, what each route made of the last message
from its source) and a sample of the latest messages (at most ``SAMPLE`` per second). The page's
cost does not grow with the message rate: at 10,000 msg/s it gets the same one event a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..views import to_svg

if TYPE_CHECKING:
    from ..hub import EdgeHub

log = logging.getLogger("edgehub_emu.api")

INTERVAL = 1.0
SAMPLE = 30
STATIC = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}
PUBLIC_PATHS = frozenset({"/", *(f"/static/{name}" for name in STATIC)})
"""What is served without the API token: the page and its assets, which hold no data."""


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


async def page(request: web.Request) -> web.Response:
    return web.Response(
        text=_asset("index.html"), content_type="text/html", headers={"Cache-Control": "no-cache"}
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound(text=f"no dashboard asset {name!r}")
    return web.Response(text=_asset(name), content_type=STATIC[name], headers={"Cache-Control": "no-cache"})


def graph_svg(hub: EdgeHub) -> web.Response:
    return web.Response(text=to_svg(hub.graph()), content_type="image/svg+xml")


def state(hub: EdgeHub, status: dict[str, Any], after: float) -> dict[str, Any]:
    """One update of the page: the hub's status, the route verdicts, and the latest messages."""
    return {
        "time": time.time(),
        "status": status,
        "verdicts": hub.route_verdicts(),
        "messages": hub.recent_messages(after, SAMPLE),
        "tracing": hub.tracing,
    }


async def stream(
    request: web.Request,
    hub: EdgeHub,
    status_of: Callable[[EdgeHub], dict[str, Any]],
    streams: set[asyncio.Task[Any]],
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    task = asyncio.current_task()
    assert task is not None
    streams.add(task)
    after = time.time() - 60  # the first update shows what came in the last minute
    try:
        while True:
            update = state(hub, status_of(hub), after)
            if update["messages"]:
                after = update["messages"][-1]["time"]
            await response.write(f"event: state\ndata: {json.dumps(update)}\n\n".encode())
            await asyncio.sleep(INTERVAL)
    except asyncio.CancelledError:
        return response  # the hub is stopping
    except ConnectionError:
        log.info("a dashboard stream ended: its page went away")
    finally:
        streams.discard(task)
    return response
