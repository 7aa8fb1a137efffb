"""``$upstream``: the local capture (the cloud on your laptop), an IoT hub or parent edge hub
(``iothub:``), or another MQTT broker (``mqtt://``), with ``mqttBroker.bridges``. Each is an
``Upstream``; ``make_upstream`` chooses from the ``--upstream`` value."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .base import Upstream, UpstreamHooks
from .capture import UpstreamCapture, UpstreamRecord
from .config import (
    IotHubUpstreamConfig,
    MqttUpstreamConfig,
    UpstreamConfig,
    UpstreamError,
    parse_connection_string,
    parse_upstream,
)
from .iothub_upstream import IotHubUpstream
from .mqtt_bridge import MqttBridge
from .mqtt_client import ClientOptions, ConnectionRefused, MqttClient

__all__ = [
    "ClientOptions",
    "ConnectionRefused",
    "IotHubUpstream",
    "IotHubUpstreamConfig",
    "MqttBridge",
    "MqttClient",
    "MqttUpstreamConfig",
    "Upstream",
    "UpstreamCapture",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamHooks",
    "UpstreamRecord",
    "make_upstream",
    "parse_connection_string",
    "parse_upstream",
]


def make_upstream(
    spec: str | None,
    device_id: str,
    capture: UpstreamCapture,
    hooks: UpstreamHooks,
    *,
    ca_file: Path | None = None,
    identities: Sequence[str] = (),
) -> Upstream:
    """The upstream ``--upstream`` names (``None``: the local capture alone). ``identities`` are
    connection strings of single identities, for an ``iothub:`` upstream that needs their own keys.
    Raises UpstreamError naming the option that is wrong."""
    if not spec:
        return Upstream(capture)
    config = parse_upstream(spec)
    if ca_file is not None and not ca_file.is_file():
        raise UpstreamError(f"--upstream-ca: no file {ca_file}")
    if isinstance(config, MqttUpstreamConfig):
        return MqttBridge(config, device_id, capture, hooks, ca_file=ca_file)
    upstream = IotHubUpstream(config, device_id, capture, hooks, ca_file=ca_file)
    for text in identities:
        try:
            fields = parse_connection_string(text)
        except UpstreamError as exc:
            raise UpstreamError(f"--upstream-identity: {exc}") from None
        if not fields.get("DeviceId") or not fields.get("SharedAccessKey"):
            raise UpstreamError("--upstream-identity: a connection string with DeviceId and SharedAccessKey")
        remote = fields["DeviceId"] + (f"/{fields['ModuleId']}" if fields.get("ModuleId") else "")
        upstream.keys[upstream.local_id(remote)] = fields["SharedAccessKey"]
    return upstream
