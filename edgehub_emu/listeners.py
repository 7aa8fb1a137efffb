"""Where the hub listens: MQTT and AMQP over TLS, plain MQTT for local tools, the HTTPS port (WebSocket
and the module-methods API), the management API, metrics and the workload API. Each listener that
starts registers its own shutdown on the hub's exit stack, so a failed start unwinds exactly what
started; a port that cannot be had is a ``HubError`` that says which listener and why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from aiohttp import web

from .api import Apps, server_options, websocket_handler
from .data_files import write_json
from .heads.amqp import AmqpHead
from .mqtt.server import MqttConnection, MqttServer
from .settings import Settings, is_loopback

log = logging.getLogger("edgehub_emu.hub")

MAX_UNIX_SOCKET_PATH = 107  # bytes of sun_path, less the terminating NUL (Linux)
T = TypeVar("T")


class HubError(Exception):
    """The hub cannot start as configured (a port in use, a bad manifest); the message says which."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the hub listens (ports are the ones actually bound, also when 0 was asked for)."""

    host: str
    hostname: str
    mqtts_port: int | None
    https_port: int | None
    mqtt_port: int | None
    ca_file: Path
    http_port: int | None = None
    metrics_port: int | None = None
    workload_uri: str | None = None
    http_host: str = "127.0.0.1"
    mqtt_host: str = "127.0.0.1"
    workload_tcp_port: int | None = None
    amqps_port: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "hostname": self.hostname,
            "mqtts_port": self.mqtts_port,
            "amqps_port": self.amqps_port,
            "https_port": self.https_port,
            "mqtt_port": self.mqtt_port,
            "mqtt_host": self.mqtt_host,
            "http_port": self.http_port,
            "metrics_port": self.metrics_port,
            "workload_uri": self.workload_uri,
            "workload_tcp_port": self.workload_tcp_port,
            "http_host": self.http_host,
            "ca_file": str(self.ca_file),
        }


def server_tls(chain: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(chain, key)
    return context


class Listeners:
    """Binds every listener and records where each one ended up."""

    def __init__(self, settings: Settings, stack: contextlib.AsyncExitStack) -> None:
        self.settings = settings
        self.stack = stack

    async def bind(
        self, tls: ssl.SSLContext, ca_file: Path, mqtt: MqttServer, amqp: AmqpHead, apps: Apps
    ) -> Endpoints:
        s = self.settings
        loop = asyncio.get_running_loop()
        mqtts_port = mqtt_port = amqps_port = None
        if s.mqtts_port is not None:
            server = await self._bind(
                "MQTT over TLS",
                s.mqtts_port,
                loop.create_server(lambda: _asyncio(mqtt.protocol("tls")), s.host, s.mqtts_port, ssl=tls),
            )
            self._close_on_exit(server)
            mqtts_port = server.sockets[0].getsockname()[1]
        if s.amqps_port is not None:
            server = await self._bind(
                "AMQP over TLS",
                s.amqps_port,
                loop.create_server(lambda: amqp.protocol("amqp"), s.host, s.amqps_port, ssl=tls),
            )
            self._close_on_exit(server)
            amqps_port = server.sockets[0].getsockname()[1]
        plain_host = s.host if is_loopback(s.host) else "127.0.0.1"
        if s.mqtt_port is not None:
            server = await self._bind(
                "plain MQTT",
                s.mqtt_port,
                loop.create_server(lambda: _asyncio(mqtt.protocol("tcp")), plain_host, s.mqtt_port),
            )
            self._close_on_exit(server)
            mqtt_port = server.sockets[0].getsockname()[1]
        https_port = (
            await self._https(tls, mqtt, amqp, apps.module_methods) if s.https_port is not None else None
        )
        http_port = await self._http("management API", s.http_port, apps.management)
        metrics_port = await self._http("metrics", s.metrics_port, apps.metrics)
        workload_tcp_port = await self._workload(apps.workload)
        return Endpoints(
            s.host,
            s.gateway_hostname,
            mqtts_port,
            https_port,
            mqtt_port,
            ca_file,
            http_port,
            metrics_port,
            f"unix://{s.workload_socket_path}",
            self.api_host(),
            plain_host,
            workload_tcp_port,
            amqps_port,
        )

    def _close_on_exit(self, server: asyncio.AbstractServer) -> None:
        async def close() -> None:
            server.close()
            await server.wait_closed()

        self.stack.push_async_callback(close)

    async def _runner(self, app: web.Application) -> web.AppRunner:
        runner = web.AppRunner(app, **server_options(self.settings.http_idle_timeout))
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        return runner

    async def _https(
        self, tls: ssl.SSLContext, mqtt: MqttServer, amqp: AmqpHead, app: web.Application
    ) -> int:
        """The module-facing HTTPS port: MQTT and AMQP over WebSocket, direct methods between modules."""
        s = self.settings
        app.router.add_get("/{tail:.*}", websocket_handler(mqtt, amqp))

        runner = await self._runner(app)
        assert s.https_port is not None
        try:
            await self._bind(
                "HTTPS (MQTT and AMQP over WebSocket)",
                s.https_port,
                web.TCPSite(runner, s.host, s.https_port, ssl_context=tls).start(),
            )
        except HubError as exc:
            if not s.https_port_fallback:
                raise
            log.warning(
                "%s; MQTT and AMQP over WebSocket take a free port instead (the SDKs' websocket option needs "
                "port 443: pass --https-port 443 where it is allowed)",
                exc,
            )
            await web.TCPSite(runner, s.host, 0, ssl_context=tls).start()
        return int(runner.addresses[0][1])

    def api_host(self) -> str:
        """Where clients reach the HTTP listeners: the host when it is loopback (or the API has a token),
        else 127.0.0.1."""
        s = self.settings
        host = s.host if is_loopback(s.host) or s.api_token is not None else "127.0.0.1"
        return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    async def _http(self, what: str, port: int | None, app: web.Application) -> int | None:
        """Serve ``app`` over plain HTTP; only on loopback unless an API token protects it."""
        if port is None:
            return None
        s = self.settings
        host = s.host
        if not is_loopback(host) and s.api_token is None:
            host = "127.0.0.1"
            log.warning("the %s listens on 127.0.0.1 only: set an API token to serve it on %s", what, s.host)
        runner = await self._runner(app)
        await self._bind(what, port, web.TCPSite(runner, host, port).start())
        return int(runner.addresses[0][1])

    async def _workload(self, app: web.Application) -> int | None:
        """The workload API on a unix socket (and on TCP when a port is set), for the edge environment."""
        runner = await self._runner(app)
        path = self.settings.workload_socket_path
        if len(os.fsencode(path)) > MAX_UNIX_SOCKET_PATH:
            raise HubError(
                f"the workload API socket path is {len(os.fsencode(path))} bytes, over the "
                f"{MAX_UNIX_SOCKET_PATH} a Unix socket allows: {path} (choose a shorter one with "
                f"--workload-socket or EDGEHUB_EMU_WORKLOAD_SOCKET, or a shorter --data-dir)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        await self._bind("the workload API", 0, web.UnixSite(runner, str(path)).start())
        self.stack.callback(path.unlink, missing_ok=True)
        port = self.settings.workload_port
        if port is None:
            return None
        await self._bind("the workload API", port, web.TCPSite(runner, "127.0.0.1", port).start())
        return int(runner.addresses[-1][1])

    async def _bind(self, what: str, port: int, starting: Awaitable[T]) -> T:
        try:
            return await starting
        except PermissionError:
            raise HubError(
                f"cannot listen for {what} on {self.settings.host}:{port}: permission denied "
                f"(ports below 1024 need privileges; pick another port, or 0 for a free one)"
            ) from None
        except OSError as exc:
            raise HubError(
                f"cannot listen for {what} on {self.settings.host}:{port}: {exc.strerror or exc}"
            ) from None


def write_endpoints(
    path: Path, endpoints: Endpoints, stack: contextlib.AsyncExitStack, about: dict[str, Any] | None = None
) -> None:
    """``endpoints.json`` says a hub runs on this data directory, and where (and ``about`` it: its device
    id and manifest, for the CLI's other commands); it goes when the hub stops."""
    write_json(path, {**endpoints.as_dict(), **(about or {}), "pid": os.getpid()}, indent=2)
    stack.callback(path.unlink, missing_ok=True)


def _asyncio(connection: MqttConnection) -> asyncio.Protocol:
    """An MQTT connection as the asyncio protocol it is: it has every method a transport calls, but does
    not subclass ``asyncio.Protocol`` (so that mypyc compiles it as a native class)."""
    return cast(asyncio.Protocol, connection)
