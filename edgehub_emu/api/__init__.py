"""HTTP faces of the hub (aiohttp): the management API, metrics, and MQTT over WebSocket."""

from .apps import Apps, hub_apps
from .http_server import server_options
from .management import management_app
from .websocket import WebSocketTransport, websocket_handler

__all__ = ["Apps", "WebSocketTransport", "hub_apps", "management_app", "server_options", "websocket_handler"]
