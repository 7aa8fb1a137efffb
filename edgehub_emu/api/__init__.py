"""HTTP faces of the hub (aiohttp): MQTT over WebSocket today."""

from .websocket import WebSocketTransport, websocket_handler

__all__ = ["WebSocketTransport", "websocket_handler"]
