"""Runtime settings of the hub: command-line flags, with ``EDGEHUB_EMU_*`` environment defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MANIFEST = Path("config/deployment.json")
DEFAULT_DEVICE_ID = "edge-device"
DEFAULT_IOTHUB_HOSTNAME = "edgehub-emu.azure-devices.net"
DEFAULT_DATA_DIR = Path(".edgehub-emu")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"EDGEHUB_EMU_{name}", default)


def _env_port(name: str, default: int | None) -> int | None:
    value = os.environ.get(f"EDGEHUB_EMU_{name}")
    if value is None:
        return default
    return None if value.lower() in ("", "off", "none") else int(value)


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in os.environ.get(f"EDGEHUB_EMU_{name}", "").split(",") if v.strip())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Settings:
    """What a hub needs to know about itself.

    ``device_id`` is the edge device's id: modules connect as ``{device_id}/{module}``. ``host`` is the
    address to listen on; ``hostname`` is the gateway host name modules connect to (and that the server
    certificate names); by default the host itself, or ``localhost`` when listening on every address.
    A port of 0 picks a free one; ``None`` turns a listener off.
    """

    manifest: Path = field(default_factory=lambda: Path(_env("MANIFEST", str(DEFAULT_MANIFEST))))
    device_id: str = field(default_factory=lambda: _env("DEVICE_ID", DEFAULT_DEVICE_ID))
    iothub_hostname: str = field(default_factory=lambda: _env("IOTHUB_HOSTNAME", DEFAULT_IOTHUB_HOSTNAME))
    data_dir: Path = field(default_factory=lambda: Path(_env("DATA_DIR", str(DEFAULT_DATA_DIR))))
    host: str = field(default_factory=lambda: _env("HOST", "127.0.0.1"))
    hostname: str | None = field(default_factory=lambda: os.environ.get("EDGEHUB_EMU_HOSTNAME") or None)
    mqtts_port: int | None = field(default_factory=lambda: _env_port("MQTTS_PORT", 8883))
    https_port: int | None = field(default_factory=lambda: _env_port("HTTPS_PORT", 443))
    mqtt_port: int | None = field(default_factory=lambda: _env_port("MQTT_PORT", None))
    http_port: int | None = field(default_factory=lambda: _env_port("HTTP_PORT", 53000))
    metrics_port: int | None = field(default_factory=lambda: _env_port("METRICS_PORT", 9600))
    workload_socket: Path | None = field(
        default_factory=lambda: (
            Path(os.environ["EDGEHUB_EMU_WORKLOAD_SOCKET"])
            if os.environ.get("EDGEHUB_EMU_WORKLOAD_SOCKET")
            else None
        )
    )  # None: DATA_DIR/workload.sock
    workload_port: int | None = field(default_factory=lambda: _env_port("WORKLOAD_PORT", None))
    api_token: str | None = field(default_factory=lambda: os.environ.get("EDGEHUB_EMU_API_TOKEN") or None)
    leaf_devices: tuple[str, ...] = field(default_factory=lambda: _env_list("LEAF_DEVICES"))
    extra_names: tuple[str, ...] = field(default_factory=lambda: _env_list("CERT_NAMES"))
    store: str = field(default_factory=lambda: _env("STORE", "sqlite"))  # "sqlite" (durable) or "memory"
    purge_interval: float = 30.0  # how often expired messages nobody reads are dropped (edgeHub: >= 30 s)
    watch_manifest: bool = False  # reload the manifest file when it changes
    upstream_keep_count: int = field(default_factory=lambda: int(_env("UPSTREAM_KEEP_COUNT", "100000")))
    upstream_keep_seconds: float = field(
        default_factory=lambda: float(_env("UPSTREAM_KEEP_SECONDS", "604800"))
    )
    delivery_window: int = field(default_factory=lambda: int(_env("DELIVERY_WINDOW", "16")))
    https_port_fallback: bool = False  # when the default 443 cannot be had (privileges, in use): a free port
    connect_timeout: float = 60.0
    upstream: str | None = field(default_factory=lambda: os.environ.get("EDGEHUB_EMU_UPSTREAM") or None)
    """None: ``$upstream`` goes to the local capture; else ``mqtt://…``, ``mqtts://…`` or ``iothub:…``."""
    upstream_ca: Path | None = field(
        default_factory=lambda: (
            Path(os.environ["EDGEHUB_EMU_UPSTREAM_CA"]) if os.environ.get("EDGEHUB_EMU_UPSTREAM_CA") else None
        )
    )  # the CA that signed the upstream's certificate (a parent edge hub's); None: the system's
    upstream_identities: tuple[str, ...] = ()
    """Connection strings of single identities for ``iothub:`` (their own keys, as a real IoT hub needs)."""
    dev: bool = field(default_factory=lambda: _env("DEV", "") not in ("", "0", "false"))
    """Broker mode: anonymous clients may connect on the loopback plain-MQTT listener (local tools)."""
    token_check_interval: float = 300.0

    @property
    def workload_socket_path(self) -> Path:
        return (self.workload_socket or self.data_dir / "workload.sock").resolve()

    @property
    def gateway_hostname(self) -> str:
        if self.hostname:
            return self.hostname
        return "localhost" if self.host in ("0.0.0.0", "::", "") else self.host

    def certificate_names(self) -> list[str]:
        names = [self.gateway_hostname, "localhost", "127.0.0.1", "::1"]
        if self.host not in ("0.0.0.0", "::", ""):
            names.append(self.host)
        return list(dict.fromkeys([*names, *self.extra_names]))
