"""The AMQP 1.0 protocol head (edgeHub's ``Microsoft.Azure.Devices.Edge.Hub.Amqp``): SASL, CBS,
edgeHub's link addresses, message conversion and flow control, on python-qpid-proton's engine."""

from .connection import AmqpConnection
from .head import AmqpHead

__all__ = ["AmqpConnection", "AmqpHead"]
