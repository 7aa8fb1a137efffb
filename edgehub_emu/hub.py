"""The composition root: ``EdgeHub(settings)`` wires the deployment, identities, certificates, queues,
the core, delivery, the upstream, the MQTT head and its listeners; and offers the hub's Python API.

    async with EdgeHub(settings) as hub:
        print(hub.connection_string("filtermodule"))
        result = await hub.invoke_method("SimulatedTemperatureSensor", "reset")

A message's path through the hub, from socket to receiving module, is in the README (Architecture).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .api import management, management_app
from .api.module_methods import add_module_method_routes
from .api.workload import workload_app
from .broker import BrokerMode
from .core import HubCore, MethodError, MethodResult
from .delivery import Deliveries
from .heads.mqtt import MqttHead
from .identity import Identity, IdentityRegistry, connection_string, credentials, ensure_certificates
from .iothub.twins import TwinStore
from .listeners import Apps, Endpoints, HubError, Listeners, server_tls
from .manifest import Deployment, ManifestError, compile_routes, load_deployment
from .metrics import registry_for
from .mqtt.server import MqttServer
from .mqtt.session import SessionStore
from .routing import BRIDGE_ID, UPSTREAM_ID, BridgeEndpoint, Message, ModuleEndpoint, RouteTable
from .routing.message import CONNECTION_DEVICE_ID
from .runner import LocalModule, ModuleRunner, Plan
from .settings import Settings
from .snapshot import HubSnapshot, build_snapshot
from .store import Store, open_store
from .tasks import spawn
from .upstream import Upstream, UpstreamCapture, UpstreamError, UpstreamHooks, make_upstream

__all__ = ["EdgeHub", "Endpoints", "HubError", "MethodError", "MethodResult", "Queued"]

log = logging.getLogger("edgehub_emu.hub")


@dataclass(frozen=True, slots=True)
class Queued:
    """Where a message put into a module input waits, and for how long at most."""

    endpoint_id: str
    time_to_live_secs: int


class EdgeHub:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        deployment: Deployment | None = None,
        loader: Callable[[], Deployment] | None = None,
        local_modules: Sequence[LocalModule] = (),
        store: Callable[[], Store] | None = None,
        upstream: Callable[[UpstreamCapture, UpstreamHooks], Upstream] | None = None,
    ) -> None:
        """``store`` and ``upstream`` replace the queues and the upstream the settings would choose (made
        once the hub's event loop runs): a store of your own, or an upstream that a test controls."""
        self.settings = settings or Settings()
        self._deployment = deployment
        self._loader = loader or (lambda: load_deployment(self.settings.manifest))
        self.local_modules = tuple(local_modules)
        self._make_store = store
        self._upstream_factory = upstream
        self.deployment: Deployment | None = None
        self.route_table: RouteTable | None = None
        self.endpoints: Endpoints | None = None
        self.metrics = registry_for(self)
        self.runner: ModuleRunner | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> EdgeHub:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> EdgeHub:
        stack = contextlib.AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def stop(self) -> None:
        """Stop local modules, then the listeners (answering calls still waiting), delivery, the
        upstream and the store, in the reverse order they started."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        deployment = self._deployment or self._loader()
        unknown = [m.name for m in self.local_modules if m.name not in deployment.edge_agent.modules]
        if unknown:
            raise HubError(
                f"local module(s) {', '.join(unknown)} not in the deployment "
                f"(it has: {', '.join(deployment.module_names)})"
            )
        self.deployment = deployment
        self.route_table = compile_routes(deployment, s.device_id)
        data = s.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.identities = IdentityRegistry(
            s.device_id, deployment.module_names, list(s.leaf_devices), data / "identities.json"
        )
        self.certificates = ensure_certificates(data / "certs", s.certificate_names())
        durable = s.store != "memory"
        try:
            self.store: Store = self._make_store() if self._make_store else open_store(s.store, data)
        except ValueError as exc:
            raise HubError(str(exc)) from None
        stack.callback(self.store.close)
        self.upstream = UpstreamCapture(
            data / "upstream.sqlite" if durable else None, s.upstream_keep_count, s.upstream_keep_seconds
        )
        stack.callback(self.upstream.close)
        routes: Callable[[], RouteTable] = lambda: self.route_table  # type: ignore[assignment,return-value]  # noqa: E731
        self.core = HubCore(
            s.device_id,
            self.identities,
            [s.iothub_hostname, s.gateway_hostname],
            TwinStore(data / "twins.json"),
            self.store,
            routes,
        )
        self.deliveries = Deliveries(
            self.store, self.core.connections, max(1, s.delivery_window), s.delivery_retry_first
        )
        stack.push_async_callback(self.deliveries.stop)
        self._upstream = self._make_upstream()
        self.deliveries.sinks[UPSTREAM_ID] = self._upstream.send
        if self._upstream.bridge_sink is not None:
            self.deliveries.sinks[BRIDGE_ID] = self._upstream.bridge_sink
        self.core.connections.observe(self._connections_changed)
        self.core.twins.reported_observers.append(self._upstream.reported)
        self.head = MqttHead(self.core, allow_anonymous=s.dev)
        self.mqtt = MqttServer(
            self.head, session_store=SessionStore(data / "sessions.json"), connect_timeout=s.connect_timeout
        )
        for module in deployment.module_names:
            self.core.twins.seed(self.identity_id(module), deployment.module_twins.get(module, {}))
        self._configure_broker(deployment)
        tls = server_tls(self.certificates.server_chain, self.certificates.server_key)
        self.endpoints = await Listeners(s, stack).bind(tls, self.ca_file.resolve(), self.mqtt, self._apps())
        stack.callback(self.mqtt.close_all)
        stack.callback(self.core.methods.fail_all, 404, "Client {identity_id} not found: the hub is stopping")
        for task in (
            spawn(self._check_tokens(), "checking SAS tokens"),
            spawn(self._purge_expired(), "purging expired messages"),
            *([spawn(self._watch_manifest(), "watching the manifest")] if s.watch_manifest else []),
        ):
            stack.callback(task.cancel)
        self._resume_deliveries()
        await self._upstream.start()
        stack.push_async_callback(self._upstream.stop)
        self._write_endpoints(stack)
        if self.local_modules:
            await self._start_local_modules(deployment, stack)
        log.debug("started: %s", self.endpoints)

    def _apps(self) -> Apps:
        methods = web.Application()
        add_module_method_routes(methods, self)
        metrics = web.Application()
        metrics.router.add_get("/metrics", management.metrics)
        metrics[management.HUB] = self
        return Apps(methods, management_app(self, self.settings.api_token), metrics, workload_app(self))

    def _make_upstream(self) -> Upstream:
        s = self.settings
        hooks = UpstreamHooks(
            self._invoke_for_upstream, self.patch_desired, self._enqueue_bridged, self._bridged_in
        )
        if self._upstream_factory is not None:
            return self._upstream_factory(self.upstream, hooks)
        try:
            return make_upstream(
                s.upstream,
                s.device_id,
                self.upstream,
                hooks,
                ca_file=s.upstream_ca,
                identities=s.upstream_identities,
            )
        except UpstreamError as exc:
            raise HubError(f"--upstream: {exc}") from None

    async def _start_local_modules(self, deployment: Deployment, stack: contextlib.AsyncExitStack) -> None:
        agent = self.identity_id("$edgeAgent")
        plans = []
        for module in self.local_modules:
            spec = deployment.edge_agent.modules[module.name]
            plans.append(Plan(module, spec.status, spec.restartPolicy, spec.startupOrder))
        runner = ModuleRunner(
            plans,
            lambda name, edge: self.module_environment(name, edge=edge),
            lambda patch: self.core.twins.report(agent, patch),
        )
        await runner.start()
        self.runner = runner
        stack.push_async_callback(self._stop_runner)

    async def _stop_runner(self) -> None:
        """Modules first, while the hub still serves their goodbyes."""
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    def _write_endpoints(self, stack: contextlib.AsyncExitStack) -> None:
        """``endpoints.json`` says a hub runs on this data directory, and where; gone when it stops."""
        assert self.endpoints is not None
        path = self.settings.data_dir / "endpoints.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({**self.endpoints.as_dict(), "pid": os.getpid()}, indent=2), encoding="utf-8"
        )
        os.replace(tmp, path)
        stack.callback(path.unlink, missing_ok=True)

    async def _check_tokens(self) -> None:
        while True:
            await asyncio.sleep(self.settings.token_check_interval)
            self.check_tokens()

    async def _purge_expired(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_interval)
            purged = self.store.purge_expired()
            if purged:
                log.info("dropped %d messages whose time-to-live ran out", purged)

    # --- wiring --------------------------------------------------------------------------------------

    def _connections_changed(self, identity_id: str) -> None:
        if identity_id in self.core.connections:
            self._upstream.identity_connected(identity_id)

    async def _invoke_for_upstream(
        self, identity_id: str, method_name: str, payload: Any, timeout: float
    ) -> tuple[int, Any]:
        try:
            result = await self.core.methods.invoke(identity_id, method_name, payload, timeout)
        except MethodError as exc:
            return exc.status, {"message": str(exc)}
        return result.status, result.payload

    def _enqueue_bridged(self, message: Message, stored: Callable[[BaseException | None], None]) -> bool:
        """A local user-topic message a bridge carries out: into the durable bridge queue."""
        assert self.deployment is not None
        return self.core.ingest.enqueue(
            BridgeEndpoint(), message, self.deployment.global_ttl_secs, stored, "mqttBroker.bridges"
        )

    def _bridged_in(self, topic: str, payload: bytes, qos: int) -> None:
        """A remote message a bridge brings in: to the local subscribers of the topic."""
        if self.head.broker is None:
            log.warning("dropped a bridged message on %r: the broker mode is off (no mqttBroker)", topic)
            return
        self.head.broker.topics.publish(topic, payload, qos, from_bridge=True)

    def _configure_broker(self, deployment: Deployment) -> None:
        """The broker mode follows the deployment's ``mqttBroker``: on, reconfigured, or off; so do the
        bridges of an MQTT upstream."""
        config = deployment.broker
        head = self.head
        if config is None:
            head.broker = None
        elif head.broker is None:
            s = self.settings
            head.broker = BrokerMode(config, self.mqtt.sessions, s.device_id, s.iothub_hostname)
            head.broker.topics.forward = self._upstream.bridge_out
        else:
            head.broker.reconfigure(config)
        self.mqtt.qos2 = config is not None
        self._upstream.configure_bridges(config.bridges if config is not None else ())

    def _resume_deliveries(self) -> None:
        """After a start or a reload: deliver what waits in queues of endpoints the routes still name;
        say which queues no route names any more (they keep their messages until the time-to-live)."""
        assert self.route_table is not None
        known = {r.endpoint.id: r.endpoint for r in self.route_table.routes}
        if self._upstream.bridge_sink is not None:
            known[BRIDGE_ID] = BridgeEndpoint()
        self.deliveries.retain(known)
        for endpoint in known.values():
            self.deliveries.ensure(endpoint)
        for endpoint_id in self.store.endpoints():
            if endpoint_id not in known:
                depth = sum(self.store.depth(endpoint_id).values())
                log.warning(
                    "%d messages wait for endpoint %s, which no route names any more: they stay until their "
                    "time-to-live runs out",
                    depth,
                    endpoint_id,
                )

    async def _watch_manifest(self) -> None:
        """Reload the manifest when its file changes; a bad or missing one keeps the previous deployment."""
        path = self.settings.manifest
        last = _mtime(path)
        while True:
            await asyncio.sleep(1.0)
            current = _mtime(path)
            if current == last:
                continue
            last = current
            if current is None:
                log.warning("%s is gone: keeping the deployment loaded from it", path)
                continue
            try:
                self.reload(self._loader())
            except ManifestError as exc:
                log.error("kept the previous deployment: %s", exc)
            except Exception as exc:  # an unreadable file, a disk error: keep watching
                log.error("kept the previous deployment: %s could not be loaded (%s)", path, exc)
            else:
                count = len(self.route_table or ())
                log.info("reloaded %s: %d route%s", path, count, "" if count == 1 else "s")

    # --- the hub's Python API -------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.settings.device_id

    def identity_id(self, module_or_device: str) -> str:
        """``filtermodule`` → ``edge-device/filtermodule``; a leaf device id stays as it is."""
        return self.identities.identity_id(module_or_device)

    def identity(self, module_or_device: str) -> Identity | None:
        return self.identities.get(self.identity_id(module_or_device))

    @property
    def modules(self) -> list[str]:
        """The deployment's modules (besides ``$edgeAgent`` and ``$edgeHub``)."""
        return list(self.deployment.module_names) if self.deployment is not None else []

    def authenticate(self, identity_id: str, token: str) -> Identity:
        """Check a SAS token for an identity, as every head does; raises ``AuthenticationError``."""
        return self.core.authenticator.authenticate(identity_id, token).identity

    def connection_string(self, module_or_device: str) -> str:
        identity = self.identity(module_or_device)
        if identity is None:
            raise KeyError(
                f"no identity {module_or_device!r}: not a module of the deployment nor a leaf device"
            )
        return connection_string(identity, self.settings.iothub_hostname, self.settings.gateway_hostname)

    def module_environment(self, module: str, edge: bool = False) -> dict[str, str]:
        """What edgeAgent gives a module's process: its ``env`` from the manifest, then its credentials,
        as a connection string and CA file or (``edge``) as the ``IOTEDGE_*`` edge environment."""
        spec = self.deployment.edge_agent.modules.get(module) if self.deployment is not None else None
        identity = self.identity(module)
        if spec is None or identity is None:
            raise KeyError(f"no module {module!r} in the deployment")
        env = {
            k: str(v.value).lower() if isinstance(v.value, bool) else str(v.value)
            for k, v in spec.env.items()
        }
        s = self.settings
        return {
            **env,
            **credentials(
                identity,
                s.iothub_hostname,
                s.gateway_hostname,
                ca_file=self.ca_file,
                workload_uri=f"unix://{s.workload_socket_path}",
                edge=edge,
            ),
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
        return await self.core.methods.invoke(
            self.identity_id(module_or_device), method_name, payload, response_timeout, connect_timeout
        )

    def twin(self, module_or_device: str, metadata: bool = False) -> dict[str, Any]:
        """``{"desired": …, "reported": …}`` with versions (and ``$metadata.$lastUpdated`` times)."""
        return self.core.twins.document(self.identity_id(module_or_device), metadata)

    def patch_desired(self, module_or_device: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Patch desired properties and push the patch to the module if it listens; returns the patch
        with its new ``$version``."""
        return self.core.twins.patch_desired(self.identity_id(module_or_device), patch)

    def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: dict[str, str | None] | None = None,
        system_properties: dict[str, str | None] | None = None,
    ) -> None:
        message = Message(
            body=body, properties=dict(properties or {}), system_properties=dict(system_properties or {})
        )
        self.core.send_c2d(device_id, message)

    async def send_to_input(self, module: str, input_name: str, message: Message) -> Queued:
        """Queue a message for a module input, as a route would (priority 0, the global time-to-live);
        returns once it is stored."""
        assert self.route_table is not None
        message.system_properties.setdefault(CONNECTION_DEVICE_ID, self.device_id)
        endpoint = ModuleEndpoint(self.device_id, module, input_name)
        done = asyncio.get_running_loop().create_future()

        def stored(error: BaseException | None) -> None:
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        self.deliveries.ensure(endpoint)
        ttl = self.route_table.global_ttl_secs
        if not self.core.ingest.enqueue(endpoint, message, ttl, stored):
            await done
        return Queued(endpoint.id, ttl)

    def snapshot(self) -> HubSnapshot:
        """Who is connected, what waits, how the routes are doing: see ``snapshot.HubSnapshot``."""
        assert self.route_table is not None
        broker = self.head.broker
        return build_snapshot(
            device_id=self.device_id,
            iothub_hostname=self.settings.iothub_hostname,
            identities=self.identities,
            connections=self.core.connections,
            store=self.store,
            route_table=self.route_table,
            counters=self.core.counters,
            message_sizes=self.core.ingest.sizes,
            delivery=self.deliveries.stats,
            upstream=self._upstream.status(),
            broker=broker.status() if broker is not None else None,
            modules=self.runner.status() if self.runner is not None else [],
        )

    @property
    def running(self) -> bool:
        return self._stack is not None

    def is_connected(self, module_or_device: str) -> bool:
        return self.identity_id(module_or_device) in self.core.connections

    def disconnect(self, module_or_device: str, reason: str = "disconnected by the hub's API") -> bool:
        """Close a client's connection (it may connect again); False if it was not connected."""
        connection = self.core.connections.get(self.identity_id(module_or_device))
        if connection is None:
            return False
        connection.proxy.close(reason)
        return True

    def check_tokens(self, now: float | None = None) -> list[str]:
        """Disconnect clients whose SAS token expired (run every five minutes, as edgeHub does); returns
        who was disconnected."""
        return self.core.check_tokens(now)

    def queued(self, module: str, input_name: str, limit: int = 1000) -> list[Message]:
        """Messages waiting for a module input (in flight first), oldest first."""
        endpoint_id = ModuleEndpoint(self.device_id, module, input_name).id
        return [entry.message for entry in self.store.peek(endpoint_id, limit)]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Broker mode: publish on a user topic to its subscribers, as another client would."""
        self._broker().topics.publish(topic, payload, qos, retain)

    def watch(self, listener: Callable[[str, bytes, int, bool], None]) -> None:
        """Broker mode: ``listener(topic, payload, qos, retain)`` for every user-topic publish from now on."""
        self._broker().topics.listeners.append(listener)

    def _broker(self) -> BrokerMode:
        broker = self.head.broker
        if broker is None:
            raise RuntimeError(
                "the broker mode is off: the deployment's $edgeHub has no mqttBroker (schema 1.2 or later)"
            )
        return broker

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
            self.core.twins.seed(self.identity_id(module), deployment.module_twins.get(module, {}))


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
