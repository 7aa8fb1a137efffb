"""The hub's HTTP applications, one per listener, built from the hub they serve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from . import management
from .management import management_app
from .module_methods import add_module_method_routes
from .service import add_service_routes
from .workload import workload_app

if TYPE_CHECKING:
    from ..hub import EdgeHub


@dataclass(frozen=True, slots=True)
class Apps:
    module_methods: web.Application  # on the HTTPS port, beside MQTT/AMQP over WebSocket: the module
    # methods endpoint and IoT Hub's service API for cloud-side code
    management: web.Application
    metrics: web.Application
    workload: web.Application


def hub_apps(hub: EdgeHub, api_token: str | None) -> Apps:
    methods = web.Application()
    # With a token the metrics listener may face the network too: it asks for the token as the API does.
    metrics = web.Application(middlewares=[management.bearer_only(api_token)] if api_token else [])
    add_module_method_routes(methods, hub)
    add_service_routes(methods, hub)
    metrics.router.add_get("/metrics", management.metrics)
    metrics[management.HUB] = hub
    return Apps(methods, management_app(hub, api_token), metrics, workload_app(hub))
