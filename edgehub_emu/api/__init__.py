"""HTTP faces of the hub (aiohttp): the management API, metrics, and MQTT over WebSocket."""

from .management import management_app
from .websocket import WebSocketTransport, websocket_handler
from .workload import edge_environment

__all__ = ["WebSocketTransport", "edge_environment", "management_app", "websocket_handler"]
