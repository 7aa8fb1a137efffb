"""``--upstream``: where ``$upstream`` goes when it is not the local capture.

- ``mqtt://[user[:password]@]host[:port][?client_id=ID]`` or ``mqtts://…`` (TLS, CA from
  ``--upstream-ca`` or the system's): any MQTT 3.1.1 broker; ``$upstream`` messages are published on
  the IoT Hub telemetry topic of their sender, and ``mqttBroker.bridges`` apply.
- ``iothub:HostName=…;DeviceId=…;SharedAccessKey=…[;GatewayHostName=…][;Port=…]``: an IoT hub, or a
  parent edge hub (``GatewayHostName``, as a nested edge device). ``Port`` (default 8883) is an
  edgehub-emu addition, for parents on other ports.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


class UpstreamError(ValueError):
    """The ``--upstream`` value cannot be used; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class MqttUpstreamConfig:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    client_id: str | None = None

    def describe(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class IotHubUpstreamConfig:
    hostname: str
    device_id: str
    key: str
    gateway: str | None = None
    port: int = 8883

    @property
    def connect_host(self) -> str:
        return self.gateway or self.hostname

    def describe(self) -> str:
        via = f" via {self.gateway}:{self.port}" if self.gateway else f":{self.port}"
        return f"IoT hub {self.hostname}{via} as {self.device_id}"


UpstreamConfig = MqttUpstreamConfig | IotHubUpstreamConfig


def _port(text: str, what: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise UpstreamError(f"{what}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise UpstreamError(f"{what}: port {port} is out of range")
    return port


def parse_connection_string(text: str) -> dict[str, str]:
    """``Key=value;Key=value`` (values may contain ``=``, as base64 keys do)."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise UpstreamError(f"connection string part {part!r} is not Key=value")
        fields[key.strip()] = value.strip()
    return fields


def parse_upstream(text: str) -> UpstreamConfig:
    text = text.strip()
    if text.startswith("iothub:"):
        fields = parse_connection_string(text[len("iothub:") :])
        missing = [k for k in ("HostName", "DeviceId", "SharedAccessKey") if not fields.get(k)]
        if missing:
            raise UpstreamError(f"iothub connection string: missing {', '.join(missing)}")
        if fields.get("ModuleId"):
            raise UpstreamError(
                "iothub connection string: use the edge device's, not a module's (no ModuleId)"
            )
        try:
            base64.b64decode(fields["SharedAccessKey"], validate=True)
        except (binascii.Error, ValueError):
            raise UpstreamError("iothub connection string: SharedAccessKey is not base64") from None
        port = _port(fields["Port"], "iothub connection string") if "Port" in fields else 8883
        return IotHubUpstreamConfig(
            fields["HostName"],
            fields["DeviceId"],
            fields["SharedAccessKey"],
            fields.get("GatewayHostName"),
            port,
        )
    if text.startswith(("mqtt://", "mqtts://")):
        url = urlsplit(text)
        if not url.hostname:
            raise UpstreamError(f"{text!r}: no host")
        tls = url.scheme == "mqtts"
        try:
            port = url.port or (8883 if tls else 1883)
        except ValueError:
            raise UpstreamError(f"{text!r}: the port is not a number in range") from None
        query = parse_qs(url.query)
        unknown = set(query) - {"client_id"}
        if unknown:
            raise UpstreamError(
                f"{text!r}: unknown option(s) {', '.join(sorted(unknown))} (known: client_id)"
            )
        return MqttUpstreamConfig(
            url.hostname,
            port,
            tls,
            unquote(url.username) if url.username else None,
            unquote(url.password) if url.password else None,
            query.get("client_id", [None])[0],
        )
    raise UpstreamError(
        f"{text!r}: use mqtt://host:port, mqtts://host:port or iothub:<edge device connection string>"
    )
