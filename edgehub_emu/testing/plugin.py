"""The ``edgehub`` pytest fixture: a real hub per test, in-process, on free ports, in milliseconds.

    @pytest.mark.edgehub(manifest="config/deployment.json")
    def test_filter_forwards_hot_readings(edgehub):
        env = edgehub.module_env("filtermodule")           # start your module under test with this
        edgehub.send_to_input("filtermodule", "input1", b'{"machine": {"temperature": 104}}',
                              system_properties={"contentType": "application/json"})
        message = edgehub.upstream.get(timeout=10, where=lambda m: m.properties.get("MessageType") == "Alert")

The manifest comes from the ``edgehub`` marker (a path or a dict), else the ``edgehub_manifest`` ini
option, else ``config/deployment.json`` of the project. The hub runs on its own thread and event loop,
so the same fixture serves plain tests and asyncio tests (``await edgehub.upstream.next(...)``). Queues
are in memory unless the marker says ``store="sqlite"``. With ``sdk=True`` the hub listens on 8883 and
443, as Microsoft's SDKs require, on a loopback address of its own (127.1.W.N), so tests — also under
``pytest -n`` — do not collide.

With a manifest that turns on the broker mode (``mqttBroker``), ``edgehub.publish`` sends on a user
topic as another client would, and ``edgehub.watch("alerts/#")`` collects what modules publish there.

Registered through the ``pytest11`` entry point: installing edgehub-emu is enough.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ..core import MethodResult
from ..hub import EdgeHub
from ..manifest import Deployment, load_deployment, parse_deployment
from ..mqtt.topic_trie import filter_matches
from ..routing import Message
from ..settings import Settings
from ..upstream import UpstreamRecord
from ..views import format_trace, to_dot, to_mermaid, to_svg

T = TypeVar("T")
_addresses = itertools.count(2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("edgehub_manifest", "Deployment manifest for the edgehub fixture", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "edgehub(manifest=None, store='memory', sdk=False, leaf_devices=()): configure the edgehub fixture",
    )


class _LoopThread:
    """An event loop on a thread of its own, and a way to run coroutines on it from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="edgehub-fixture", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, function: Callable[[], T]) -> T:
        async def call() -> T:
            return function()

        return self.run(call())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Upstream:
    """What reached ``$upstream``: ``get`` (sync) / ``next`` (async) wait for the next match."""

    def __init__(self, hub: EdgeHubFixture) -> None:
        self._hub = hub
        self._seen = 0

    def all(self) -> list[Message]:
        return [r.message for r in self._hub._call(lambda: self._hub.hub.upstream.messages(0, 1_000_000))]

    def _wait(
        self, timeout: float, where: Callable[[Message], bool] | None
    ) -> Coroutine[Any, Any, UpstreamRecord]:
        since = self._seen

        def matches(record: UpstreamRecord) -> bool:
            return where is None or where(record.message)

        return self._hub.hub.upstream.wait_for(matches, timeout, since)

    def get(self, timeout: float = 10, where: Callable[[Message], bool] | None = None) -> Message:
        """The next upstream message (matching ``where``); AssertionError saying what did arrive if none."""
        try:
            record = self._hub._loop.run(self._wait(timeout, where), timeout + 5)
        except TimeoutError:
            raise self._nothing_came(timeout, where) from None
        return self._take(record)

    async def next(self, timeout: float = 10, where: Callable[[Message], bool] | None = None) -> Message:
        """Like ``get``, awaitable from an asyncio test."""
        try:
            record = await asyncio.wrap_future(self._hub._loop.submit(self._wait(timeout, where)))
        except TimeoutError:
            raise self._nothing_came(timeout, where) from None
        return self._take(record)

    def _take(self, record: UpstreamRecord) -> Message:
        self._seen = record.sequence  # each message is returned once
        return record.message

    def _nothing_came(self, timeout: float, where: Callable[[Message], bool] | None) -> AssertionError:
        return AssertionError(
            self._hub._explain(f"no upstream message{' matched' if where else ''} within {timeout} s")
        )


class TopicWatch:
    """What clients published on user topics that match a filter: ``get`` waits for the next one."""

    def __init__(self, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self._messages: queue.Queue[tuple[str, bytes]] = queue.Queue()

    def listener(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if filter_matches(self.topic_filter, topic):
            self._messages.put((topic, payload))

    def get(self, timeout: float = 10) -> tuple[str, bytes]:
        """(topic, payload) of the next message; AssertionError if none comes within ``timeout``."""
        try:
            return self._messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"nothing was published on {self.topic_filter!r} within {timeout:g} s"
            ) from None


class EdgeHubFixture:
    """A running hub and the helpers a module author needs in a test."""

    def __init__(self, settings: Settings, deployment: Deployment) -> None:
        self.settings = settings
        self._loop = _LoopThread()
        self.hub = EdgeHub(settings, deployment=deployment)
        try:
            self._loop.run(self.hub.start())
        except BaseException:
            self._loop.stop()
            raise
        self.upstream = Upstream(self)

    def _call(self, function: Callable[[], T]) -> T:
        return self._loop.call(function)

    @property
    def device_id(self) -> str:
        return self.hub.settings.device_id

    @property
    def host(self) -> str:
        """The address the MQTT listeners are bound to."""
        return self.hub.settings.host

    @property
    def port(self) -> int:
        """The MQTT-over-TLS port (8883 with ``sdk=True``, else a free one the OS chose)."""
        assert self.hub.endpoints is not None and self.hub.endpoints.mqtts_port is not None
        return self.hub.endpoints.mqtts_port

    @property
    def amqps_port(self) -> int:
        """The AMQP-over-TLS port (5671 with ``sdk=True``, else a free one the OS chose)."""
        assert self.hub.endpoints is not None and self.hub.endpoints.amqps_port is not None
        return self.hub.endpoints.amqps_port

    @property
    def ca_file(self) -> Path:
        """The CA certificate a module trusts the hub with (``EdgeModuleCACertificateFile``)."""

        return self.hub.ca_file

    def connection_string(self, module: str) -> str:
        return self.hub.connection_string(module)

    def module_env(self, module: str, edge: bool = False) -> dict[str, str]:
        """Environment variables to start a module under test with, as edgeAgent would: the module's
        ``env`` from the manifest, then its credentials as the SDKs read them."""
        return self.hub.module_environment(module, edge=edge)

    def send_to_input(
        self,
        module: str,
        input_name: str,
        body: bytes | str | dict[str, Any] | list[Any],
        properties: dict[str, str | None] | None = None,
        system_properties: dict[str, str | None] | None = None,
    ) -> None:
        """Queue a message for a module input, as a route would (a dict or list body is sent as JSON)."""
        system = dict(system_properties or {})
        if isinstance(body, dict | list):
            body = json.dumps(body)
            system.setdefault("contentType", "application/json")
            system.setdefault("contentEncoding", "utf-8")
        data = body.encode() if isinstance(body, str) else body
        message = Message(body=data, properties=dict(properties or {}), system_properties=system)
        self._loop.run(self.hub.send_to_input(module, input_name, message))

    def invoke_method(
        self, module: str, method: str, payload: Any = None, timeout: float = 30
    ) -> MethodResult:
        """Call a direct method; raises MethodError (404 not connected/subscribed, 504 timeout)."""
        return self._loop.run(
            self.hub.invoke_method(module, method, payload, response_timeout=timeout), timeout + 5
        )

    def patch_desired(self, module: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self.hub.patch_desired(module, patch))

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        """Broker mode: publish on a user topic to whoever subscribed, as another client would."""
        data = payload.encode() if isinstance(payload, str) else payload
        self._call(lambda: self.hub.publish(topic, data, qos, retain))

    def watch(self, topic_filter: str) -> TopicWatch:
        """Broker mode: collect what clients publish on user topics matching ``topic_filter`` from now on."""
        watch = TopicWatch(topic_filter)
        self._call(lambda: self.hub.watch(watch.listener))
        return watch

    def twin(self, module: str) -> dict[str, Any]:
        return self._call(lambda: self.hub.twin(module))

    def messages_for(self, module: str, input_name: str) -> list[Message]:
        """Messages still queued for a module input (not yet delivered and acknowledged)."""
        return self._call(lambda: self.hub.queued(module, input_name))

    def trace(
        self,
        message_id: str | None = None,
        module: str | None = None,
        output: str | None = None,
        count: int = 10,
    ) -> list[dict[str, Any]]:
        """What became of the latest messages (or of one ``edgeMessageId``): see ``EdgeHub.trace``;
        ``edgehub_emu.views.format_trace`` prints one as ``edgehub-emu trace`` does."""
        return self._call(lambda: self.hub.trace(message_id, module, output, count))

    def graph(self, output_format: str = "mermaid") -> str:
        """The running deployment's routes as a picture: ``mermaid``, ``dot`` or ``svg`` text."""
        render = {"mermaid": to_mermaid, "dot": to_dot, "svg": to_svg}[output_format]
        return self._call(lambda: render(self.hub.graph()))

    def connected(self, module: str) -> bool:
        return self._call(lambda: self.hub.is_connected(module))

    def _explain(self, headline: str) -> str:
        def state() -> str:
            hub = self.hub
            arrived = [
                f"  from {r.origin}: {r.message.body[:80]!r} {r.message.properties}"
                for r in hub.upstream.messages(0, 20)
            ]
            snapshot = hub.snapshot()
            queued = snapshot.depths()
            clients = sorted(snapshot.connected)
            lines = [
                headline,
                "upstream messages so far:" if arrived else "nothing reached $upstream",
                *arrived,
                f"still queued: {queued or 'nothing'}",
                f"connected: {', '.join(clients) or 'no client'}",
            ]
            missing = [
                m
                for m in hub.trace(count=50)
                if not any(c["endpoint"] == "iothub" and c["state"] == "delivered" for c in m["queued"])
            ][-5:]
            if missing:
                lines.append("the latest messages that did not reach $upstream, traced:")
                lines.extend(format_trace(m) for m in missing)
            if not clients and self.settings.mqtts_port == 0:
                lines.append(
                    "(a module written with Microsoft's SDKs dials port 8883, 5671 or 443, never this hub's "
                    "free ports: mark the test @pytest.mark.edgehub(sdk=True))"
                )
            return "\n".join(lines)

        return self._call(state)

    def stop(self) -> None:
        try:
            self._loop.run(self.hub.stop())
        finally:
            self._loop.stop()


def _manifest(request: pytest.FixtureRequest, marker: pytest.Mark | None) -> Deployment:
    spec = marker.kwargs.get("manifest") if marker else None
    if spec is None:
        spec = request.config.getini("edgehub_manifest") or None
    if spec is None:
        spec = Path(request.config.rootpath) / "config" / "deployment.json"
    if isinstance(spec, dict):
        return parse_deployment(spec, env=os.environ)
    path = Path(spec)
    if not path.is_absolute():
        path = Path(request.config.rootpath) / path
    return load_deployment(path)


def _sdk_address() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    number = next(_addresses)
    return f"127.1.{int(worker) % 250 + 1}.{number % 250 + 2}"


def hub_settings(
    data_dir: Path,
    workload_socket: Path,
    *,
    sdk: bool = False,
    store: str = "memory",
    leaf_devices: tuple[str, ...] = (),
) -> Settings:
    """A test hub's settings: free ports (or 8883, 5671 and 443 on an address of its own for the SDKs), no
    plain MQTT or workload TCP listener, whatever ``EDGEHUB_EMU_*`` variables the shell has."""
    return Settings(
        data_dir=data_dir,
        host=_sdk_address() if sdk else "127.0.0.1",
        mqtts_port=8883 if sdk else 0,
        amqps_port=5671 if sdk else 0,
        https_port=443 if sdk else 0,
        mqtt_port=None,
        http_port=0,
        metrics_port=0,
        workload_socket=workload_socket,
        workload_port=None,
        api_token=None,
        store=store,
        leaf_devices=leaf_devices,
        purge_interval=1.0,
    )


@pytest.fixture
def edgehub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EdgeHubFixture]:
    """A running hub for this test; see the module docstring."""
    marker = request.node.get_closest_marker("edgehub")
    options = marker.kwargs if marker else {}
    deployment = _manifest(request, marker)
    data = tmp_path_factory.mktemp("edgehub")
    # pytest's temporary paths can outgrow the 107 bytes a Unix socket path may have: keep it short.
    sockets = Path(tempfile.mkdtemp(prefix="edgehub-"))
    settings = hub_settings(
        data,
        sockets / "workload.sock",
        sdk=bool(options.get("sdk", False)),
        store=options.get("store", "memory"),
        leaf_devices=tuple(options.get("leaf_devices", ())),
    )
    try:
        hub = EdgeHubFixture(settings, deployment)
        try:
            yield hub
        finally:
            hub.stop()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
