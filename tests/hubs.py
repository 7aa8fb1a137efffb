"""Settings shared by tests in more than one package."""

from __future__ import annotations

from pathlib import Path

from edgehub_emu.settings import Settings


def sdk_port_settings(data_dir: Path, address: str, *, amqp: bool = True) -> Settings:
    """A hub on the ports Microsoft's SDKs always use (MQTT 8883, AMQP 5671, WebSocket 443), bound to
    ``address``, a loopback address of the test's own so that tests can run side by side; the HTTP API
    and metrics on ports the OS chooses. ``amqp=False``: no AMQP listener (the Python SDK speaks MQTT)."""
    return Settings(
        data_dir=data_dir,
        host=address,
        mqtts_port=8883,
        amqps_port=5671 if amqp else 0,
        https_port=443,
        http_port=0,
        metrics_port=0,
    )
