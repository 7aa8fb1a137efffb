"""HTTP faces of the hub (aiohttp): the management API, metrics, and MQTT over WebSocket."""

from .apps import Apps, hub_apps
from .management import management_app
from .websocket import WebSocketTransport, websocket_handler

__all__ = ["Apps", "WebSocketTransport", "hub_apps", "management_app", "websocket_handler"]
