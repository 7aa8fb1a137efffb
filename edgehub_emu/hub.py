"""The composition root: ``EdgeHub(settings)`` wires the deployment, identities, certificates, queues,
the core, delivery, the upstream and the MQTT head with its listeners; and offers the hub's Python API.

    async with EdgeHub(settings) as hub:
        print(hub.connection_string("filtermodule"))
        result = await hub.invoke_method("SimulatedTemperatureSensor", "reset")

A message's path through these parts, from socket to receiving module, is in the README (Architecture).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .api import hub_apps
from .core import (
    MAX_MESSAGE_SIZE,
    HubCore,
    MessageRefused,
    MessageTrace,
    MethodError,
    MethodResult,
    message_size,
)
from .data_files import DamagedFile, set_aside
from .data_lock import DataDirectoryInUse, lock_data_directory
from .delivery import Deliveries
from .descriptors import DescriptorWatch, raise_limit
from .heads.amqp import AmqpHead
from .heads.mqtt import MqttHead, broker_mode
from .identity import (
    Identity,
    IdentityRegistry,
    connection_string,
    credentials,
    ensure_certificates,
    service_key,
)
from .iothub import TwinStore, validate_desired
from .listeners import Endpoints, HubError, Listeners, server_tls, write_endpoints
from .manifest import Deployment, compile_routes, load_deployment, watch_manifest
from .metrics import registry_for
from .mqtt.server import MqttServer
from .mqtt.session import SessionStore
from .routing import BRIDGE_ID, UPSTREAM_ID, BridgeEndpoint, Message, ModuleEndpoint, RouteTable
from .routing.message import CONNECTION_DEVICE_ID
from .runner import LocalModule, ModuleRunner
from .settings import Settings
from .snapshot import HubSnapshot, build_snapshot
from .store import Store, Stored, open_store
from .tasks import every, spawn
from .upstream import Upstream, UpstreamCapture, UpstreamError, UpstreamHooks, make_upstream
from .views import Graph, deployment_graph

__all__ = ["EdgeHub", "Endpoints", "HubError", "MethodError", "MethodResult", "Queued"]

log = logging.getLogger("edgehub_emu.hub")
T = TypeVar("T")


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
        self._make_upstream = upstream
        self.deployment: Deployment | None = None
        self.route_table: RouteTable | None = None
        self.endpoints: Endpoints | None = None
        self.metrics = registry_for(self)
        self.runner: ModuleRunner | None = None
        self._trace: MessageTrace | None = None
        self._tracing = True
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
        """Local modules first, then the listeners (answering calls still waiting), the upstream, delivery
        and the store: the reverse of the order they started in."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        deployment = self._deployment or self._loader()
        missing = [m.name for m in self.local_modules if m.name not in deployment.edge_agent.modules]
        if missing:
            modules = ", ".join(deployment.module_names)
            raise HubError(f"local module(s) {', '.join(missing)} not in the deployment (it has: {modules})")
        self.deployment, self.route_table = deployment, compile_routes(deployment, s.device_id)
        raise_limit()  # of open files: as many connections as the system lets the process have
        data = s.data_dir
        try:
            data.mkdir(parents=True, exist_ok=True)
            lock_data_directory(data, stack)
            self.identities = self._data_file(
                lambda: IdentityRegistry(
                    s.device_id, deployment.module_names, list(s.leaf_devices), data / "identities.json"
                )
            )
            self.certificates = ensure_certificates(data / "certs", s.certificate_names())
            self.service_key = service_key(data)  # the iothubowner policy's, for cloud-side code
            twins = self._data_file(lambda: TwinStore(data / "twins.json"))
        except DataDirectoryInUse as exc:
            raise HubError(str(exc)) from None
        except OSError as exc:  # not writable, read-only, impossible to create
            raise HubError(
                f"cannot use the data directory {data}: {exc.strerror or exc} ({exc.filename})"
            ) from None
        try:
            self.store: Store = (
                self._make_store() if self._make_store else self._data_file(lambda: open_store(s.store, data))
            )
        except ValueError as exc:
            raise HubError(str(exc)) from None
        except OSError as exc:
            reason = f"{exc.strerror or exc} ({exc.filename})"
            raise HubError(f"cannot open the queues in {data}: {reason}") from None
        stack.callback(self.store.close)
        capture_path = data / "upstream.sqlite" if s.store != "memory" else None
        self.upstream = self._data_file(
            lambda: UpstreamCapture(capture_path, s.upstream_keep_count, s.upstream_keep_seconds)
        )
        stack.callback(self.upstream.close)
        hostnames = [s.iothub_hostname, s.gateway_hostname]
        self._trace = MessageTrace(s.trace_size) if s.trace_size > 0 else None
        self.core = HubCore(
            s.device_id,
            self.identities,
            hostnames,
            twins,
            self.store,
            self.route_table,
            self._trace,
        )
        self.deliveries = Deliveries(
            self.store,
            self.core.connections,
            max(1, s.delivery_window),
            s.delivery_retry_first,
            self._trace,
        )
        stack.push_async_callback(self.deliveries.stop)
        self._upstream = self._upstream_for(
            UpstreamHooks(self._invoke, self.patch_desired, self._bridge_out, self._bridge_in)
        )
        self.deliveries.sinks[UPSTREAM_ID] = self._upstream.send
        if self._upstream.bridge_sink is not None:
            self.deliveries.sinks[BRIDGE_ID] = self._upstream.bridge_sink
        self.core.connections.observe(self._connections_changed)
        self.core.twins.reported_observers.append(self._upstream.reported)
        self.head = MqttHead(self.core, allow_anonymous=s.dev)
        self.mqtt = MqttServer(
            self.head, session_store=SessionStore(data / "sessions.json"), connect_timeout=s.connect_timeout
        )
        self.amqp = AmqpHead(self.core, s.iothub_hostname, s.connect_timeout)
        self._apply(deployment, seed_twins=True)
        tls = server_tls(self.certificates.server_chain, self.certificates.server_key)
        apps = hub_apps(self, s.api_token)
        self.endpoints = await Listeners(s, stack).bind(
            tls, self.ca_file.resolve(), self.mqtt, self.amqp, apps
        )
        stack.callback(self.mqtt.close_all)
        stack.push_async_callback(self.amqp.close_all)
        stack.callback(self.core.methods.fail_all, 404, "Client {identity_id} not found: the hub is stopping")
        tasks = [every(s.token_check_interval, self.check_tokens, "checking SAS tokens")]
        tasks.append(every(2.0, DescriptorWatch().check, "watching open files"))
        tasks.append(every(s.purge_interval, self._purge_expired, "purging expired messages"))
        if s.watch_manifest:
            tasks.append(
                spawn(
                    watch_manifest(s.manifest, self._load_compiled, self._apply_compiled),
                    "watching the manifest",
                )
            )
        for task in tasks:
            stack.callback(task.cancel)
        await self._upstream.start()
        stack.push_async_callback(self._upstream.stop)
        about = {
            "device_id": s.device_id,
            "iothub_hostname": s.iothub_hostname,
            "manifest": str(s.manifest.resolve()) if s.manifest.is_file() else None,
        }
        write_endpoints(data / "endpoints.json", self.endpoints, stack, about)
        if self.local_modules:
            agent = self.identity_id("$edgeAgent")
            self.runner = ModuleRunner.for_deployment(
                self.local_modules,
                deployment.edge_agent.modules,
                self.module_environment,
                lambda patch: self.core.twins.report(agent, patch),
            )
            await self.runner.start()
            stack.push_async_callback(self.runner.stop)  # stopped first: the hub serves their goodbyes

    def _data_file(self, open_it: Callable[[], T]) -> T:
        """Open a file of the data directory; a damaged one stops the start with what it holds and what
        to do, or with ``reset_damaged`` is moved aside (and what was lost logged) for a fresh one."""
        try:
            return open_it()
        except DamagedFile as damaged:
            if not self.settings.reset_damaged:
                raise HubError(
                    f"{damaged}. It holds {damaged.holds}. Repair or remove it, or start with "
                    "--reset-damaged to move it aside and start without it"
                ) from None
            moved = set_aside(damaged.aside)
            log.warning("%s: moved aside as %s; lost: %s", damaged, moved.name, damaged.holds)
            return open_it()

    def _routes(self) -> RouteTable:
        assert self.route_table is not None
        return self.route_table

    def _upstream_for(self, hooks: UpstreamHooks) -> Upstream:
        s = self.settings
        if self._make_upstream is not None:
            return self._make_upstream(self.upstream, hooks)
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

    def _purge_expired(self) -> None:
        if purged := self.store.purge_expired():
            log.info("dropped %d messages whose time-to-live ran out", purged)
        self.mqtt.expire_sessions(
            self.settings.session_expiry, kept=lambda client_id: self.identities.get(client_id) is not None
        )

    # --- wiring ---------------------------------------------------------------------------------------

    def _connections_changed(self, identity_id: str) -> None:
        if identity_id in self.core.connections:
            self._upstream.identity_connected(identity_id)

    async def _invoke(
        self, identity_id: str, method_name: str, payload: Any, timeout: float
    ) -> tuple[int, Any]:
        """A method call coming down from the upstream."""
        try:
            result = await self.core.methods.invoke(identity_id, method_name, payload, timeout)
        except MethodError as exc:
            return exc.status, {"message": str(exc)}
        return result.status, result.payload

    def _bridge_out(self, message: Message, stored: Stored) -> bool:
        """A local user-topic message a bridge carries out: into the durable bridge queue."""
        ttl = self._routes().global_ttl_secs
        return self.core.ingest.enqueue(BridgeEndpoint(), message, ttl, stored, "mqttBroker.bridges")

    def _bridge_in(self, topic: str, payload: bytes, qos: int) -> None:
        broker_mode.publish_bridged(self.head, topic, payload, qos)

    def _apply(self, deployment: Deployment, seed_twins: bool) -> None:
        """What a deployment sets besides routes: the broker mode and bridges, deliveries to the routes'
        endpoints, the modules' desired properties."""
        s = self.settings
        broker_mode.configure(
            self.head,
            self.mqtt,
            deployment.broker,
            s.device_id,
            s.iothub_hostname,
            self._upstream.bridge_out,
            s.max_queued_messages,
        )
        self._upstream.configure_bridges(deployment.broker.bridges if deployment.broker is not None else ())
        self.deliveries.follow(r.endpoint for r in self._routes().routes)
        if seed_twins:
            # As IoT Hub: a module the manifest gives desired properties gets exactly those; the twin of a
            # module it gives none is left as it is (desired properties set from the cloud side stay).
            for module, desired in deployment.module_twins.items():
                if module in deployment.module_names:
                    self.core.twins.seed(self.identity_id(module), desired)

    # --- the hub's Python API -----------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.settings.device_id

    @property
    def running(self) -> bool:
        return self._stack is not None

    @property
    def modules(self) -> list[str]:
        """The deployment's modules (besides ``$edgeAgent`` and ``$edgeHub``)."""
        return list(self.deployment.module_names) if self.deployment is not None else []

    @property
    def ca_file(self) -> Path:
        return self.certificates.ca_cert

    def identity_id(self, module_or_device: str) -> str:
        """``filtermodule`` → ``edge-device/filtermodule``; a leaf device id stays as it is."""
        return self.identities.identity_id(module_or_device)

    def identity(self, module_or_device: str) -> Identity | None:
        return self.identities.get(self.identity_id(module_or_device))

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
        s, workload = self.settings, f"unix://{self.settings.workload_socket_path}"
        return {
            **env,
            **credentials(
                identity,
                s.iothub_hostname,
                s.gateway_hostname,
                ca_file=self.ca_file,
                workload_uri=workload,
                edge=edge,
            ),
        }

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
        identity_id = self.identity_id(module_or_device)
        return await self.core.methods.invoke(
            identity_id, method_name, payload, response_timeout, connect_timeout
        )

    def twin(self, module_or_device: str, metadata: bool = False) -> dict[str, Any]:
        """``{"desired": …, "reported": …}`` with versions (and ``$metadata.$lastUpdated`` times)."""
        return self.core.twins.document(self.identity_id(module_or_device), metadata)

    def replace_desired(self, module_or_device: str, desired: dict[str, Any]) -> dict[str, Any]:
        """Replace the desired properties (the cloud side's PUT), pushed to the module as a patch;
        ``TwinError`` (400) for properties IoT Hub would refuse."""
        validate_desired(desired)
        identity_id = self.identity_id(module_or_device)
        self.core.twins.seed(identity_id, desired)
        replaced: dict[str, Any] = self.twin(module_or_device)["desired"]
        return replaced

    def patch_desired(self, module_or_device: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Patch desired properties, pushed to the module if it listens; returns it with its ``$version``.
        ``TwinError`` (400) for a patch IoT Hub would refuse (NaN, deeper than 10 levels, over 32 KB)."""
        validate_desired(patch)
        return self.core.twins.patch_desired(self.identity_id(module_or_device), patch)

    def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: dict[str, str | None] | None = None,
        system_properties: dict[str, str | None] | None = None,
    ) -> None:
        """A cloud-to-device message to a connected leaf device; ``MethodError`` (404) otherwise."""
        self.core.send_c2d(
            device_id,
            Message(
                body=body, properties=dict(properties or {}), system_properties=dict(system_properties or {})
            ),
        )

    async def send_to_input(self, module: str, input_name: str, message: Message) -> Queued:
        """Queue a message for a module input as a route would (priority 0, the global time-to-live);
        returns once it is stored. ``MessageRefused`` for an input name that is not one topic level,
        or a message over IoT Hub's 256 KB, as edgeHub refuses it."""
        if not input_name or input_name in (".", "..") or any(c in input_name for c in "/#+\0"):
            raise MessageRefused(400, f"input name {input_name!r}: one topic level, without / # + or NUL")
        if message_size(message) > MAX_MESSAGE_SIZE:
            raise MessageRefused(413, f"the message is over {MAX_MESSAGE_SIZE // 1024} KB, IoT Hub's limit")
        message.system_properties.setdefault(CONNECTION_DEVICE_ID, self.device_id)
        endpoint = ModuleEndpoint(self.device_id, module, input_name)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def stored(error: BaseException | None) -> None:
            done.set_result(None) if error is None else done.set_exception(error)

        self.deliveries.ensure(endpoint)
        ttl = self._routes().global_ttl_secs
        if not self.core.ingest.enqueue(endpoint, message, ttl, stored):
            await done
        return Queued(endpoint.id, ttl)

    def queued(self, module: str, input_name: str, limit: int = 1000) -> list[Message]:
        """Messages waiting for a module input (in flight first), oldest first."""
        return [
            e.message for e in self.store.peek(ModuleEndpoint(self.device_id, module, input_name).id, limit)
        ]

    def is_connected(self, module_or_device: str) -> bool:
        return self.identity_id(module_or_device) in self.core.connections

    def disconnect(self, module_or_device: str, reason: str = "disconnected by the hub's API") -> bool:
        """Close a client's connection (it may connect again); False if it was not connected."""
        connection = self.core.connections.get(self.identity_id(module_or_device))
        if connection is not None:
            connection.proxy.close(reason)
        return connection is not None

    def check_tokens(self, now: float | None = None) -> list[str]:
        """Disconnect clients whose SAS token expired (every five minutes, as edgeHub); returns who."""
        return self.core.check_tokens(now)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Broker mode: publish on a user topic to its subscribers, as another client would."""
        broker_mode.user_topics(self.head).publish(topic, payload, qos, retain)

    def watch(self, listener: Callable[[str, bytes, int, bool], None]) -> None:
        """Broker mode: ``listener(topic, payload, qos, retain)`` for every user-topic publish from now on."""
        broker_mode.watch(self.head, listener)

    def trace(
        self,
        message_id: str | None = None,
        module: str | None = None,
        output: str | None = None,
        count: int = 10,
    ) -> list[dict[str, Any]]:
        """What became of messages the hub accepted: the one with ``edgeMessageId`` ``message_id``, or
        the last ``count`` (from ``module``, through ``output``), oldest first. Each says who sent it,
        what every route made of it and why, the endpoints it was queued for, and what happened there
        (delivered, retried, dropped, expired). Empty when tracing is off (``--trace-size 0``)."""
        if self._trace is None:
            return []
        if message_id is not None:
            found = self._trace.find(message_id)
            return [found] if found is not None else []
        return self._trace.last(count, module, output)

    @property
    def tracing(self) -> bool:
        """Whether the message trace records (``--trace-size 0`` leaves it off for good)."""
        return self._trace is not None and self._tracing

    def set_tracing(self, on: bool) -> None:
        """Pause or resume the message trace; what it holds stays readable."""
        self._tracing = on
        if self._trace is not None:
            self.core.set_trace(self._trace if on else None)
            self.deliveries.set_trace(self._trace if on else None)

    def recent_messages(self, after: float = 0.0, limit: int = 30) -> list[dict[str, Any]]:
        """A sample of the latest messages received after ``after`` (see ``MessageTrace.recent``)."""
        return self._trace.recent(after, limit) if self._trace is not None else []

    def graph(self) -> Graph:
        """The running deployment's routes as a graph (``edgehub_emu.views``)."""
        assert self.deployment is not None
        return deployment_graph(self.deployment, self._routes())

    def route_verdicts(self) -> dict[str, dict[str, Any]]:
        """Per route: what it made of the last message from its source, and why."""
        return self._trace.last_verdicts(self._routes()) if self._trace is not None else {}

    def snapshot(self) -> HubSnapshot:
        """Who is connected, what waits, how the routes are doing: see ``snapshot.HubSnapshot``."""
        broker = self.head.broker
        return build_snapshot(
            device_id=self.device_id,
            iothub_hostname=self.settings.iothub_hostname,
            identities=self.identities,
            connections=self.core.connections,
            store=self.store,
            route_table=self._routes(),
            counters=self.core.counters,
            message_sizes=self.core.ingest.sizes,
            delivery=self.deliveries.stats,
            upstream=self._upstream.status(),
            broker=broker.status() if broker is not None else None,
            modules=self.runner.status() if self.runner is not None else [],
        )

    def reload(self, deployment: Deployment) -> None:
        """Apply a new deployment: routes at once (queued messages are kept), desired-property changes
        pushed to the modules that listen. Raises ManifestError, keeping the running one, if invalid."""
        self._apply_compiled((deployment, compile_routes(deployment, self.settings.device_id)))

    def _load_compiled(self) -> tuple[Deployment, RouteTable]:
        """The manifest read, validated and its routes compiled: what the watcher does in a thread."""
        deployment = self._loader()
        return deployment, compile_routes(deployment, self.settings.device_id)

    def _apply_compiled(self, loaded: tuple[Deployment, RouteTable]) -> None:
        deployment, table = loaded
        self.identities.ensure_modules(deployment.module_names)
        self.deployment, self.route_table = deployment, table
        self.core.set_routes(table)
        self._apply(deployment, seed_twins=True)
        if self.runner is not None:  # local modules whose manifest entry changed start again
            spawn(
                self.runner.apply(deployment.edge_agent.modules), "applying the deployment to local modules"
            )
        log.info("deployment applied: %d route%s", len(table), "" if len(table) == 1 else "s")
