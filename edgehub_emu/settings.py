"""Runtime settings of the hub. ``Settings()`` has fixed defaults (what a library user and the pytest
fixture get, whatever the shell's environment); ``Settings.from_env()`` reads the ``EDGEHUB_EMU_*``
variables on top of them (what the CLI and the container use, before applying command-line flags)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MANIFEST = Path("config/deployment.json")
DEFAULT_DEVICE_ID = "edge-device"
DEFAULT_IOTHUB_HOSTNAME = "edgehub-emu.azure-devices.net"
DEFAULT_DATA_DIR = Path(".edgehub-emu")
ENV_PREFIX = "EDGEHUB_EMU_"


class SettingsError(ValueError):
    """An ``EDGEHUB_EMU_*`` variable has a value that cannot be used; the message names it."""


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

    manifest: Path = DEFAULT_MANIFEST
    device_id: str = DEFAULT_DEVICE_ID
    iothub_hostname: str = DEFAULT_IOTHUB_HOSTNAME
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    hostname: str | None = None
    mqtts_port: int | None = 8883
    amqps_port: int | None = 5671
    https_port: int | None = 443
    mqtt_port: int | None = None
    http_port: int | None = 53000
    metrics_port: int | None = 9600
    workload_socket: Path | None = None  # None: DATA_DIR/workload.sock
    workload_port: int | None = None
    api_token: str | None = None
    leaf_devices: tuple[str, ...] = ()
    extra_names: tuple[str, ...] = ()
    store: str = "durable"  # "durable" (the message log in DATA_DIR/queue) or "memory"
    purge_interval: float = 30.0  # how often expired messages nobody reads are dropped (edgeHub: >= 30 s)
    watch_manifest: bool = False  # reload the manifest file when it changes
    upstream_keep_count: int = 100_000
    upstream_keep_seconds: float = 604_800.0
    delivery_window: int = 64
    delivery_retry_first: float = 1.0  # the first pause of edgeHub's endpoint retry back-off (1 s … 60 s)
    https_port_fallback: bool = False  # when the default 443 cannot be had (privileges, in use): a free port
    connect_timeout: float = 60.0
    session_expiry: float = 7 * 24 * 3600.0
    """A persistent MQTT session of a client that is not an identity of the deployment (broker mode) whose
    client stays away this long (seconds) is forgotten."""
    trace_size: int = 2000
    """Messages the message trace keeps (``edgehub-emu trace``, the dashboard); 0 turns tracing off."""
    http_idle_timeout: float = 60.0
    """HTTP listeners (API, metrics, HTTPS before a WebSocket upgrade): a connection that sends no
    complete request for this long, or stays idle between requests, is closed."""
    upstream: str | None = None
    """None: ``$upstream`` goes to the local capture; else ``mqtt://…``, ``mqtts://…`` or ``iothub:…``."""
    upstream_ca: Path | None = None  # the CA that signed the upstream's certificate; None: the system's
    upstream_identities: tuple[str, ...] = ()
    """Connection strings of single identities for ``iothub:`` (their own keys, as a real IoT hub needs)."""
    dev: bool = False
    """Broker mode: anonymous clients may connect on the loopback plain-MQTT listener (local tools)."""
    token_check_interval: float = 300.0
    max_queued_messages: int = 1000
    """Broker mode: user-topic QoS 1/2 messages kept for a subscriber that lags (QoS 0 are dropped)."""
    reset_damaged: bool = False
    """A damaged file of the data directory is moved aside (``NAME.corrupt-<time>``) instead of stopping
    the start."""
    inputs: tuple[str, ...] = ()
    """iotedgehubdev's single-module mode: the inputs of module ``target`` that /api/v1/messages feeds."""

    def __post_init__(self) -> None:
        # Paths given as text (``Settings(data_dir=".hub")``) work as paths.
        for name in ("manifest", "data_dir", "workload_socket", "upstream_ca"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The defaults, then every ``EDGEHUB_EMU_*`` variable that is set, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (variable, parse) in _ENVIRONMENT.items():
            raw = env.get(ENV_PREFIX + variable)
            if raw is None:
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{ENV_PREFIX}{variable}={raw!r}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return dataclasses.replace(cls(), **values)

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


def _port(raw: str) -> int | None:
    if raw.lower() in ("", "off", "none"):
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ValueError("a port number, 0 for a free one, or 'off'") from None
    if not 0 <= port < 65536:
        raise ValueError("a port number, 0 for a free one, or 'off'")
    return port


def _list(raw: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in raw.split(",") if v.strip())


def _optional(raw: str) -> str | None:
    return raw or None


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw else None


def _flag(raw: str) -> bool:
    return raw.lower() not in ("", "0", "false", "no", "off")


def _store(raw: str) -> str:
    kind = {"sqlite": "durable", "log": "durable"}.get(raw.lower(), raw.lower())
    if kind not in ("durable", "memory"):
        raise ValueError("durable or memory")
    return kind


_ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "manifest": ("MANIFEST", Path),
    "device_id": ("DEVICE_ID", str),
    "iothub_hostname": ("IOTHUB_HOSTNAME", str),
    "data_dir": ("DATA_DIR", Path),
    "host": ("HOST", str),
    "hostname": ("HOSTNAME", _optional),
    "mqtts_port": ("MQTTS_PORT", _port),
    "amqps_port": ("AMQPS_PORT", _port),
    "https_port": ("HTTPS_PORT", _port),
    "mqtt_port": ("MQTT_PORT", _port),
    "http_port": ("HTTP_PORT", _port),
    "metrics_port": ("METRICS_PORT", _port),
    "workload_socket": ("WORKLOAD_SOCKET", _optional_path),
    "workload_port": ("WORKLOAD_PORT", _port),
    "api_token": ("API_TOKEN", _optional),
    "leaf_devices": ("LEAF_DEVICES", _list),
    "extra_names": ("CERT_NAMES", _list),
    "store": ("STORE", _store),
    "upstream_keep_count": ("UPSTREAM_KEEP_COUNT", int),
    "upstream_keep_seconds": ("UPSTREAM_KEEP_SECONDS", float),
    "delivery_window": ("DELIVERY_WINDOW", int),
    "upstream": ("UPSTREAM", _optional),
    "upstream_ca": ("UPSTREAM_CA", _optional_path),
    "dev": ("DEV", _flag),
    "inputs": ("INPUTS", _list),
    "reset_damaged": ("RESET_DAMAGED", _flag),
    "max_queued_messages": ("MAX_QUEUED_MESSAGES", int),
    "http_idle_timeout": ("HTTP_IDLE_TIMEOUT", float),
    "trace_size": ("TRACE_SIZE", int),
    "session_expiry": ("SESSION_EXPIRY", float),
}
"""Setting → (variable after ``EDGEHUB_EMU_``, how to read its value)."""

ENVIRONMENT_VARIABLES = {name: ENV_PREFIX + variable for name, (variable, _) in _ENVIRONMENT.items()}
