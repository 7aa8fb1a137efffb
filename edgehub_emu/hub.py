"""The composition root: ``EdgeHub(settings)`` wires manifest, identities, certificates, routing,
queues, twins, the MQTT server and its listeners, and offers the hub's Python API.

    async with EdgeHub(settings) as hub:
        print(hub.connection_string("filtermodule"))
        result = await hub.invoke_method("filtermodule", "reset", {"hard": True})
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .api import edge_environment, management, management_app, websocket_handler
from .api.module_methods import add_module_method_routes
from .api.workload import workload_app
from .broker import BrokerMode
from .delivery import Deliveries
from .identity import IdentityRegistry, connection_environment, connection_string, ensure_certificates
from .iothub.twins import TwinStore
from .manifest import Deployment, ManifestError, compile_routes, load_deployment
from .metrics import registry_for
from .mqtt.server import MqttServer
from .mqtt.session import SessionStore
from .protocol_head import MethodError, MethodResult, ProtocolHead
from .routing import BridgeEndpoint, Message, ModuleEndpoint, RoutedEndpoint, RouteTable, UpstreamEndpoint
from .runner import LocalModule, ModuleRunner, Plan
from .settings import Settings, is_loopback
from .store import MemoryStore, SqliteStore
from .tasks import spawn
from .upstream import (
    IotHubUpstream,
    IotHubUpstreamConfig,
    MqttBridge,
    UpstreamCapture,
    UpstreamError,
    parse_connection_string,
    parse_upstream,
)

log = logging.getLogger("edgehub_emu.hub")

MAX_UNIX_SOCKET_PATH = 107  # bytes of sun_path, less the terminating NUL (Linux)
BRIDGE = BridgeEndpoint()


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "hostname": self.hostname,
            "mqtts_port": self.mqtts_port,
            "https_port": self.https_port,
            "mqtt_port": self.mqtt_port,
            "http_port": self.http_port,
            "metrics_port": self.metrics_port,
            "workload_uri": self.workload_uri,
            "http_host": self.http_host,
            "ca_file": str(self.ca_file),
        }


class HubError(Exception):
    """The hub cannot start as configured (a port in use, a bad manifest); the message says which."""


class EdgeHub:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        deployment: Deployment | None = None,
        loader: Callable[[], Deployment] | None = None,
        local_modules: Sequence[LocalModule] = (),
    ) -> None:
        self.settings = settings or Settings()
        self._deployment = deployment
        self._loader = loader or (lambda: load_deployment(self.settings.manifest))
        self.deployment: Deployment | None = None
        self.route_table: RouteTable | None = None
        self.upstream = UpstreamCapture()
        self.store: MemoryStore | SqliteStore | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._runner: web.AppRunner | None = None
        self._http_runners: list[web.AppRunner] = []
        self.workload_tcp_port: int | None = None
        self._tasks: list[asyncio.Future[Any]] = []
        self.endpoints: Endpoints | None = None
        self.metrics = registry_for(self)
        self.local_modules = tuple(local_modules)
        self.runner: ModuleRunner | None = None
        self.bridge: IotHubUpstream | MqttBridge | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> EdgeHub:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> EdgeHub:
        s = self.settings
        deployment = self._deployment or load_deployment(s.manifest)
        self.deployment = deployment
        unknown = [m.name for m in self.local_modules if m.name not in deployment.edge_agent.modules]
        if unknown:
            raise HubError(
                f"local module(s) {', '.join(unknown)} not in the deployment "
                f"(it has: {', '.join(deployment.module_names)})"
            )
        self.route_table = compile_routes(deployment, s.device_id)
        data = s.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.identities = IdentityRegistry(
            s.device_id, deployment.module_names, list(s.leaf_devices), data / "identities.json"
        )
        self.certificates = ensure_certificates(data / "certs", s.certificate_names())
        self.twins = TwinStore(data / "twins.json")
        if s.store == "sqlite":  # durable hubs keep what reached the local cloud across restarts
            self.upstream = UpstreamCapture(
                data / "upstream.sqlite",
                keep_count=s.upstream_keep_count,
                keep_seconds=s.upstream_keep_seconds,
            )
        if s.store == "memory":
            self.store = MemoryStore()
        elif s.store == "sqlite":
            self.store = SqliteStore(data / "store.sqlite")
        else:
            raise HubError(f"unknown store {s.store!r}: use 'sqlite' (durable) or 'memory'")
        for module in deployment.module_names:
            self.twins.seed_desired(f"{s.device_id}/{module}", deployment.module_twins.get(module, {}))
        self.head = ProtocolHead(
            device_id=s.device_id,
            hostnames=[s.iothub_hostname, s.gateway_hostname],
            identities=self.identities,
            routes=lambda: self.route_table,  # type: ignore[return-value,arg-type]
            store=self.store,  # type: ignore[arg-type]
            twins=self.twins,
            on_queued=self._queued,
        )
        self.bridge = self._make_upstream()
        sink = self.upstream.send if self.bridge is None else self._send_upstream
        self.deliveries = Deliveries(self.head, self.store, sink, max(1, s.delivery_window))
        self.mqtt = MqttServer(
            self.head, session_store=SessionStore(data / "sessions.json"), connect_timeout=s.connect_timeout
        )
        self.head.allow_anonymous = s.dev
        if isinstance(self.bridge, MqttBridge):
            self.deliveries.sinks[BRIDGE.id] = self.bridge.forward
        elif isinstance(self.bridge, IotHubUpstream):
            self.head.on_connected.append(self.bridge.identity_connected)
            self.head.on_reported.append(self.bridge.report)
        self._configure_broker(deployment)
        try:
            await self._listen()
        except BaseException:
            await self.stop()
            raise
        self._tasks = [
            spawn(self._check_tokens(), "checking SAS tokens"),
            spawn(self._purge_expired(), "purging expired messages"),
        ]
        if s.watch_manifest:
            self._tasks.append(spawn(self._watch_manifest(), "watching the manifest"))
        self._resume_deliveries()
        if isinstance(self.bridge, MqttBridge):
            self.bridge.start()
        self._write_endpoints()
        if self.local_modules:
            await self._start_local_modules(deployment)
        log.debug("started: %s", self.endpoints)
        return self

    async def _start_local_modules(self, deployment: Deployment) -> None:
        agent = f"{self.settings.device_id}/$edgeAgent"
        plans = []
        for module in self.local_modules:
            spec = deployment.edge_agent.modules[module.name]
            plans.append(Plan(module, spec.status, spec.restartPolicy, spec.startupOrder))
        self.runner = ModuleRunner(
            plans,
            lambda name, edge: self.module_environment(name, edge=edge),
            lambda patch: self.twins.patch_reported(agent, patch),
        )
        await self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:  # modules first, while the hub still serves their goodbyes
            await self.runner.stop()
            self.runner = None
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if hasattr(self, "mqtt"):
            self.mqtt.close_all()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        log.debug("stop: MQTT listeners closed")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for runner in self._http_runners:
            await runner.cleanup()
        self._http_runners = []
        log.debug("stop: HTTPS listener closed")
        if hasattr(self, "deliveries"):
            await self.deliveries.stop()
        log.debug("stop: deliveries stopped")
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None
        if self.store is not None:
            self.store.close()
            self.store = None
        self.upstream.close()
        if self.endpoints is not None:  # endpoints.json says a hub is running: not any more
            (self.settings.data_dir / "endpoints.json").unlink(missing_ok=True)
            self.endpoints = None

    def _tls(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificates.server_chain, self.certificates.server_key)
        return context

    async def _listen(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        tls = self._tls()
        mqtts = mqtt = https = None
        if s.mqtts_port is not None:
            server = await self._bind(
                "MQTT over TLS",
                s.mqtts_port,
                loop.create_server(lambda: self.mqtt.protocol("tls"), s.host, s.mqtts_port, ssl=tls),
            )
            self._servers.append(server)
            mqtts = server.sockets[0].getsockname()[1]
        if s.mqtt_port is not None:
            plain_host = s.host if is_loopback(s.host) else "127.0.0.1"
            server = await self._bind(
                "plain MQTT",
                s.mqtt_port,
                loop.create_server(lambda: self.mqtt.protocol("tcp"), plain_host, s.mqtt_port),
            )
            self._servers.append(server)
            mqtt = server.sockets[0].getsockname()[1]
        if s.https_port is not None:
            app = web.Application()
            add_module_method_routes(app, self)
            app.router.add_get("/{tail:.*}", websocket_handler(self.mqtt))
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, s.host, s.https_port, ssl_context=tls)
            try:
                await self._bind("HTTPS (MQTT over WebSocket)", s.https_port, site.start())
            except HubError as exc:
                if not s.https_port_fallback:
                    raise
                log.warning(
                    "%s; MQTT over WebSocket takes a free port instead (the SDKs' websocket option needs "
                    "port 443: pass --https-port 443 where it is allowed)",
                    exc,
                )
                site = web.TCPSite(self._runner, s.host, 0, ssl_context=tls)
                await site.start()
            https = self._runner.addresses[0][1]
        http = await self._serve_http("management API", s.http_port, management_app(self, s.api_token))
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", management.metrics)
        metrics_app[management.HUB] = self
        metrics_port = await self._serve_http("metrics", s.metrics_port, metrics_app)
        await self._serve_workload()
        self.endpoints = Endpoints(
            s.host,
            s.gateway_hostname,
            mqtts,
            https,
            mqtt,
            self.certificates.ca_cert.resolve(),
            http,
            metrics_port,
            f"unix://{s.workload_socket_path}",
            self._api_host(),
        )

    async def _serve_workload(self) -> None:
        """The workload API on a unix socket (and on TCP when a port is set), for the edge environment."""
        runner = web.AppRunner(workload_app(self), access_log=None, handle_signals=False)
        await runner.setup()
        self._http_runners.append(runner)
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
        if self.settings.workload_port is not None:
            await self._bind(
                "the workload API",
                self.settings.workload_port,
                web.TCPSite(runner, "127.0.0.1", self.settings.workload_port).start(),
            )
            self.workload_tcp_port = runner.addresses[-1][1]

    def _api_host(self) -> str:
        """Where clients reach the HTTP listeners: the host when it is loopback (or the API has a token),
        else 127.0.0.1."""
        s = self.settings
        host = s.host if is_loopback(s.host) or s.api_token is not None else "127.0.0.1"
        return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    async def _serve_http(self, what: str, port: int | None, app: web.Application) -> int | None:
        """Serve ``app`` over plain HTTP; only on loopback unless an API token protects it."""
        if port is None:
            return None
        s = self.settings
        host = s.host
        if not is_loopback(host) and s.api_token is None:
            host = "127.0.0.1"
            log.warning("the %s listens on 127.0.0.1 only: set an API token to serve it on %s", what, s.host)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._http_runners.append(runner)
        await self._bind(what, port, web.TCPSite(runner, host, port).start())
        return runner.addresses[0][1]

    async def _bind(self, what: str, port: int, starting: Any) -> Any:
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

    def _write_endpoints(self) -> None:
        assert self.endpoints is not None
        path = self.settings.data_dir / "endpoints.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.endpoints.as_dict(), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    async def _check_tokens(self) -> None:
        while True:
            await asyncio.sleep(self.settings.token_check_interval)
            for identity_id in self.head.check_tokens():
                log.info("disconnected %s: its SAS token expired", identity_id)

    async def _purge_expired(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_interval)
            assert self.store is not None
            purged = self.store.purge_expired()
            if purged:
                log.info("dropped %d messages whose time-to-live ran out", purged)

    def _endpoints_by_id(self) -> dict[str, ModuleEndpoint | UpstreamEndpoint | BridgeEndpoint]:
        assert self.route_table is not None
        known: dict[str, ModuleEndpoint | UpstreamEndpoint | BridgeEndpoint] = {
            r.endpoint.id: r.endpoint for r in self.route_table.routes
        }
        if isinstance(self.bridge, MqttBridge):
            known[BRIDGE.id] = BRIDGE
        return known

    # --- upstream -----------------------------------------------------------------------------------

    def _make_upstream(self) -> IotHubUpstream | MqttBridge | None:
        s = self.settings
        if not s.upstream:
            return None
        try:
            config = parse_upstream(s.upstream)
        except UpstreamError as exc:
            raise HubError(f"--upstream: {exc}") from None
        if s.upstream_ca is not None and not s.upstream_ca.is_file():
            raise HubError(f"--upstream-ca: no file {s.upstream_ca}")
        if isinstance(config, IotHubUpstreamConfig):
            upstream = IotHubUpstream(
                config,
                s.device_id,
                ca_file=s.upstream_ca,
                invoke_method=self._invoke_for_upstream,
                patch_desired=self.patch_desired,
            )
            for text in s.upstream_identities:
                try:
                    fields = parse_connection_string(text)
                except UpstreamError as exc:
                    raise HubError(f"--upstream-identity: {exc}") from None
                if not fields.get("DeviceId") or not fields.get("SharedAccessKey"):
                    raise HubError(
                        "--upstream-identity: a connection string with DeviceId and SharedAccessKey"
                    )
                remote = fields["DeviceId"] + (f"/{fields['ModuleId']}" if fields.get("ModuleId") else "")
                upstream.keys[upstream.local_id(remote)] = fields["SharedAccessKey"]
            return upstream
        return MqttBridge(
            config,
            s.device_id,
            ca_file=s.upstream_ca,
            enqueue=self._enqueue_bridged,
            publish_local=self._bridged_in,
        )

    async def _send_upstream(self, message: Message) -> None:
        """To the configured upstream; then also into the local capture, which shows what went up."""
        assert self.bridge is not None
        await self.bridge.send(message)
        await self.upstream.send(message)

    async def _invoke_for_upstream(
        self, identity_id: str, method_name: str, payload: Any, timeout: float
    ) -> tuple[int, Any]:
        try:
            result = await self.head.invoke_method(identity_id, method_name, payload, timeout)
        except MethodError as exc:
            return exc.status, {"message": str(exc)}
        return result.status, result.payload

    def _enqueue_bridged(self, message: Message) -> Any:
        """A local user-topic message a bridge carries out: into the durable bridge queue."""
        assert self.store is not None and self.deployment is not None
        copy = RoutedEndpoint(BRIDGE, 0, self.deployment.global_ttl_secs, "mqttBroker.bridges")
        result = self.store.add(message, [copy])
        self.deliveries.ensure(BRIDGE)
        return result

    def _bridged_in(self, topic: str, payload: bytes, qos: int) -> None:
        """A remote message a bridge brings in: to the local subscribers of the topic."""
        if self.head.broker is None:
            log.warning("dropped a bridged message on %r: the broker mode is off (no mqttBroker)", topic)
            return
        self.head.broker.topics.publish(topic, payload, qos, from_bridge=True)

    def _resume_deliveries(self) -> None:
        """After a start or a reload: deliver what waits in queues of endpoints the routes still name;
        say which queues no route names any more (they keep their messages until the time-to-live)."""
        assert self.store is not None
        known = self._endpoints_by_id()
        self.deliveries.retain(set(known))
        for endpoint_id in self.store.endpoints():
            endpoint = known.get(endpoint_id)
            if endpoint is not None:
                self.deliveries.ensure(endpoint)
            else:
                depth = sum(self.store.depth(endpoint_id).values())
                log.warning(
                    "%d messages wait for endpoint %s, which no route names any more: they stay until their "
                    "time-to-live runs out",
                    depth,
                    endpoint_id,
                )

    async def _watch_manifest(self) -> None:
        path = self.settings.manifest
        last = path.stat().st_mtime_ns if path.exists() else 0
        while True:
            await asyncio.sleep(1.0)
            try:
                current = path.stat().st_mtime_ns
            except OSError:
                continue
            if current == last:
                continue
            last = current
            try:
                self.reload(self._loader())
            except ManifestError as exc:
                log.error("kept the previous deployment: %s", exc)
            else:
                log.info("reloaded %s: %d routes", path, len(self.route_table or ()))

    def _queued(self, copies: list[RoutedEndpoint]) -> None:
        for copy in copies:
            endpoint = copy.endpoint
            if isinstance(endpoint, ModuleEndpoint | UpstreamEndpoint):
                self.deliveries.ensure(endpoint)

    # --- the hub's Python API -------------------------------------------------------------------

    def identity_id(self, module_or_device: str) -> str:
        """``filtermodule`` → ``edge-device/filtermodule``; a leaf device id stays as it is."""
        return self.identities.identity_id(module_or_device)

    def connection_string(self, module_or_device: str) -> str:
        identity = self.identities.get(self.identity_id(module_or_device))
        if identity is None:
            raise KeyError(
                f"no identity {module_or_device!r}: not a module of the deployment nor a leaf device"
            )
        return connection_string(identity, self.settings.iothub_hostname, self.settings.gateway_hostname)

    def module_environment(self, module: str, edge: bool = False) -> dict[str, str]:
        """What edgeAgent gives a module's process: its ``env`` from the manifest, then its credentials,
        as a connection string and CA file or (``edge``) as the ``IOTEDGE_*`` edge environment."""
        spec = self.deployment.edge_agent.modules.get(module) if self.deployment is not None else None
        if spec is None:
            raise KeyError(f"no module {module!r} in the deployment")
        env = {
            k: str(v.value).lower() if isinstance(v.value, bool) else str(v.value)
            for k, v in spec.env.items()
        }
        identity = self.identities.get(self.identity_id(module))
        assert identity is not None
        s = self.settings
        if edge:
            workload_uri = f"unix://{s.workload_socket_path}"
            return {**env, **edge_environment(identity, s.iothub_hostname, s.gateway_hostname, workload_uri)}
        return {
            **env,
            **connection_environment(identity, s.iothub_hostname, s.gateway_hostname, self.ca_file),
        }

    @property
    def ca_file(self) -> Path:
        return self.certificates.ca_cert

    async def invoke_method(
        self,
        module_or_device: str,
        method_name: str,
        payload: Any = None,
        *,
        response_timeout: float = 30,
        connect_timeout: float = 0,
    ) -> MethodResult:
        """Call a direct method; raises ``MethodError`` with status 404 (not connected or not
        subscribed), 504 (no answer in time) or 400 (bad arguments), as edgeHub answers."""
        return await self.head.invoke_method(
            self.identity_id(module_or_device), method_name, payload, response_timeout, connect_timeout
        )

    def twin(self, module_or_device: str) -> dict[str, Any]:
        return self.twins.twin(self.identity_id(module_or_device)).document()

    def patch_desired(self, module_or_device: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Patch desired properties and push the patch to the module if it listens; returns the patch
        with its new ``$version``."""
        identity_id = self.identity_id(module_or_device)
        applied = self.twins.patch_desired(identity_id, patch)
        self.head.push_desired(identity_id, applied)
        return applied

    def send_c2d(self, device_id: str, body: bytes, properties: dict[str, str | None] | None = None) -> None:
        self.head.send_c2d(device_id, body, properties)

    def _configure_broker(self, deployment: Deployment) -> None:
        """The broker mode follows the deployment's ``mqttBroker``: on, reconfigured, or off; so do the
        bridges of an MQTT upstream."""
        config = deployment.broker
        if config is None:
            self.head.broker = None
        elif self.head.broker is None:
            s = self.settings
            self.head.broker = BrokerMode(config, self.mqtt.sessions, s.device_id, s.iothub_hostname)
            if isinstance(self.bridge, MqttBridge):
                self.head.broker.topics.listeners.append(self.bridge.local_publish)
        else:
            self.head.broker.reconfigure(config)
        self.mqtt.qos2 = config is not None
        bridges = config.bridges if config is not None else ()
        if isinstance(self.bridge, MqttBridge):
            self.bridge.configure(bridges)
        elif bridges:
            log.warning(
                "mqttBroker.bridges are ignored: they need an MQTT upstream (--upstream mqtt://host:port)"
            )

    def reload(self, deployment: Deployment) -> None:
        """Apply a new deployment: routes at once (queued messages are kept), desired-property changes
        pushed to the modules that listen."""
        table = compile_routes(deployment, self.settings.device_id)
        self.identities.ensure_modules(deployment.module_names)
        self.deployment = deployment
        self.route_table = table
        self._configure_broker(deployment)
        self._resume_deliveries()
        for module in deployment.module_names:
            identity_id = f"{self.settings.device_id}/{module}"
            patch = self.twins.seed_desired(identity_id, deployment.module_twins.get(module, {}))
            if patch is not None:
                self.head.push_desired(identity_id, patch)
