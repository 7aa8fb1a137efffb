"""HTTP faces of the hub (aiohttp): the management API, metrics, and MQTT over WebSocket."""

from .management import management_app
from .websocket import WebSocketTransport, websocket_handler

__all__ = ["WebSocketTransport", "management_app", "websocket_handler"]
