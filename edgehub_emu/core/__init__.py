"""The hub's protocol-neutral core, on edgeHub's own seams: protocol heads authenticate clients and
register them with a device proxy (their outbound side); the core hands back a device listener (their
inbound side) and reaches clients only through their proxies. The core never imports a head."""

from .authentication import Authenticated, AuthenticationError, Authenticator
from .connections import Connection, ConnectionManager, DeviceProxy, SendOutcome, Settle
from .hub_core import HubCore
from .listener import DeviceListener
from .methods import MethodCalls, MethodError, MethodResult
from .telemetry import MAX_MESSAGE_SIZE, Ingest, MessageRefused, log_store_failure, message_size, new_guid
from .trace import DELIVERED, REJECTED, RETRIED, MessageTrace
from .twins import TwinService

__all__ = [
    "DELIVERED",
    "MAX_MESSAGE_SIZE",
    "REJECTED",
    "RETRIED",
    "Authenticated",
    "AuthenticationError",
    "Authenticator",
    "Connection",
    "ConnectionManager",
    "DeviceListener",
    "DeviceProxy",
    "HubCore",
    "Ingest",
    "MessageRefused",
    "MessageTrace",
    "MethodCalls",
    "MethodError",
    "MethodResult",
    "SendOutcome",
    "Settle",
    "TwinService",
    "log_store_failure",
    "message_size",
    "new_guid",
]
