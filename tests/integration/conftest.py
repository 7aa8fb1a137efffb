"""Fixtures for integration tests: a real hub on 127.0.0.1 (ports chosen by the OS) and paho clients.

paho runs its network loop in a thread; tests await its callbacks through queues, so the hub's event
loop (the test's) keeps serving while a test waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgehub_emu.hub import EdgeHub
from edgehub_emu.identity import IdentityRegistry, make_token
from edgehub_emu.manifest import parse_deployment
from edgehub_emu.settings import Settings
from edgehub_emu.testing import HubProcess

ROOT = Path(__file__).resolve().parents[2]
IOTHUB = "edgehub-emu.azure-devices.net"
MODULES = ["SimulatedTemperatureSensor", "filtermodule"]
EXAMPLE = json.loads((ROOT / "config" / "deployment.json").read_text())
DEVICE = "edge-device"


def manifest(
    routes: dict[str, Any] | None = None, modules: list[str] | None = None, twins: dict | None = None
):
    """The documentation's example with other routes, modules or module twins."""
    doc = json.loads(json.dumps(EXAMPLE))
    content = doc["modulesContent"]
    if routes is not None:
        content["$edgeHub"]["properties.desired"]["routes"] = routes
    if modules is not None:
        template = content["$edgeAgent"]["properties.desired"]["modules"]["filtermodule"]
        content["$edgeAgent"]["properties.desired"]["modules"] = {m: template for m in modules}
    for name, desired in (twins or {}).items():
        content[name] = {"properties.desired": desired}
    return parse_deployment(doc, env={})


def free_port_settings(data_dir: Path, **more: Any) -> Settings:
    """The example deployment's hub on free ports, for tests that start and stop ``EdgeHub`` themselves."""
    return Settings(
        manifest=ROOT / "config" / "deployment.json",
        data_dir=data_dir,
        mqtts_port=0,
        amqps_port=0,
        https_port=0,
        http_port=0,
        metrics_port=0,
        **more,
    )


@dataclass
class Client:
    """A paho client plus what it received."""

    paho: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    disconnects: queue.Queue[Any] = field(default_factory=queue.Queue)
    connack: queue.Queue[Any] = field(default_factory=queue.Queue)
    subacks: queue.Queue[Any] = field(default_factory=queue.Queue)

    async def next(self, timeout: float = 5) -> mqtt.MQTTMessage:
        return await asyncio.to_thread(self.messages.get, True, timeout)

    sentinels: int = 0

    async def nothing(self, via: str = "twin") -> None:
        """Nothing (more) arrives for this client. Proved with a sentinel rather than a pause: a round trip
        on the client's own connection, which the hub answers after anything it was about to send it: a
        twin GET (IoT identities), or with ``via="topic"`` a message to a topic of its own (broker-mode
        clients without a twin)."""
        self.sentinels += 1
        tag = f"sentinel-{self.sentinels}"
        if via == "twin":
            if self.sentinels == 1:
                await self.subscribe("$iothub/twin/res/#")
            self.paho.publish(f"$iothub/twin/GET/?$rid={tag}", b"", qos=0)
        else:
            own = f"sentinel/{id(self)}"
            if self.sentinels == 1:
                await self.subscribe(own)
            await self.publish(own, tag)
        message = await self.next()
        arrived = message.topic.startswith("$iothub/twin/res/") and tag in message.topic
        assert arrived or message.payload == tag.encode(), f"unexpected message on {message.topic}"

    async def subscribe(self, *filters: str, qos: int = 1) -> list[int]:
        self.paho.subscribe([(f, qos) for f in filters])
        codes = await asyncio.to_thread(self.subacks.get, True, 5)
        return [c.value for c in codes]

    async def publish(
        self, topic: str, payload: bytes | str = b"", qos: int = 1, retain: bool = False
    ) -> None:
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            await asyncio.to_thread(info.wait_for_publish, 5)
            assert info.is_published(), f"no PUBACK for {topic}"

    async def disconnected(self, timeout: float = 5) -> Any:
        return await asyncio.to_thread(self.disconnects.get, True, timeout)

    def stop(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    @classmethod
    def wired(cls, client_id: str, clean: bool = True, **options: Any) -> Client:
        """A paho 3.1.1 client whose callbacks feed the queues (it does not reconnect by itself)."""
        paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean,
            protocol=mqtt.MQTTv311,
            **options,
        )
        c = cls(paho)
        paho.on_message = lambda _c, _u, m: c.messages.put(m)
        paho.on_connect = lambda _c, _u, flags, rc, _p: c.connack.put((rc, flags))
        paho.on_disconnect = lambda _c, _u, _f, rc, _p: c.disconnects.put(rc)
        paho.on_subscribe = lambda _c, _u, _mid, codes, _p: c.subacks.put(codes)
        paho.reconnect_delay_set(60, 120)
        _WIRED.append(c)
        return c


_WIRED: list[Client] = []
"""Every wired client of the running test: stopped after it, so that no client's network thread is left
looping (and logging at interpreter exit) after a test that did not stop its clients."""


@pytest.fixture(autouse=True)
def _stop_wired_clients() -> Iterator[None]:
    yield
    while _WIRED:
        _WIRED.pop().stop()


@dataclass
class Hub:
    hub: EdgeHub

    @property
    def port(self) -> int:
        assert self.hub.endpoints is not None and self.hub.endpoints.mqtts_port is not None
        return self.hub.endpoints.mqtts_port

    def token(self, identity_id: str, expiry: int | None = None, key: str | None = None) -> str:
        ident = self.hub.identity(identity_id)
        assert ident is not None
        resource = f"{self.hub.settings.iothub_hostname}/devices/{ident.device_id}"
        if ident.module_id:
            resource += f"/modules/{ident.module_id}"
        return make_token(resource, key or ident.primary_key, expiry or int(time.time()) + 3600)

    async def client(
        self,
        who: str,
        *,
        clean: bool = True,
        password: str | None = None,
        username: str | None = None,
        client_id: str | None = None,
        transport: str = "tcp",
        keepalive: int = 60,
        expect: int = 0,
    ) -> Client:
        identity_id = (
            who if who.startswith(DEVICE) or "/" in who or who.startswith("leaf") else f"{DEVICE}/{who}"
        )
        cid = client_id if client_id is not None else identity_id
        c = Client.wired(cid, clean, transport=transport)
        paho = c.paho
        user = (
            username
            if username is not None
            else f"{self.hub.settings.iothub_hostname}/{identity_id}/?api-version=2019-10-01"
        )
        paho.username_pw_set(user, password if password is not None else self.token(identity_id))
        paho.tls_set(ca_certs=str(self.hub.ca_file))
        paho.enable_logger(logging.getLogger(f"paho.{cid}"))
        port = self.port
        if transport == "websockets":
            paho.ws_set_options(path="/$iothub/websocket")
            port = self.hub.endpoints.https_port  # type: ignore[union-attr]
        await asyncio.to_thread(paho.connect, "127.0.0.1", port, keepalive)
        paho.loop_start()
        rc, _ = await asyncio.to_thread(c.connack.get, True, 5)
        # paho 2 reports MQTT 3.1.1 return codes as MQTT 5 reason codes: map them back.
        code = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}.get(rc.value, rc.value)
        assert code == expect, f"CONNACK {code}, expected {expect}"
        if expect:
            paho.loop_stop()
        return c

    def raw(self) -> ssl.SSLSocket:
        """A TLS socket to the hub, for hand-made packets."""
        context = ssl.create_default_context(cafile=str(self.hub.ca_file))
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return context.wrap_socket(sock, server_hostname="127.0.0.1")


@pytest.fixture
async def start_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    hubs: list[EdgeHub] = []

    async def start(
        deployment=None,
        data_dir: Path | None = None,
        make_store: Callable[[], Any] | None = None,
        make_upstream: Callable[..., Any] | None = None,
        **settings: Any,
    ) -> Hub:
        values = {
            "data_dir": data_dir or tmp_path,
            "host": "127.0.0.1",
            "mqtts_port": 0,
            "amqps_port": 0,
            "https_port": 0,
            "http_port": 0,
            "metrics_port": 0,
        }
        values.update(settings)
        seams = {"store": make_store, "upstream": make_upstream}
        if "manifest" in settings and deployment is None:
            hub = EdgeHub(Settings(**values), **seams)  # loads (and may watch) the manifest file itself
        else:
            hub = EdgeHub(Settings(**values), deployment=deployment or manifest(), **seams)
        await hub.start()
        hubs.append(hub)
        return Hub(hub)

    yield start
    for hub in hubs:
        await hub.stop()


class HubSubprocess(HubProcess):
    """`edgehub-emu run` as a real process on free ports (the example deployment unless ``-m`` is given),
    and paho clients for its modules."""

    def __init__(
        self,
        data: Path,
        *args: str,
        device_id: str = DEVICE,
        manifest: Path = ROOT / "config" / "deployment.json",
        modules: list[str] = MODULES,
    ) -> None:
        self.device_id = device_id
        self.modules = modules
        super().__init__(
            data,
            "-m",
            str(manifest),
            "--no-watch",
            "--device-id",
            device_id,
            *args,
        )
        self.data = data
        self.port = self.mqtts_port
        self.ca = self.ca_file

    def client(self, module: str, on_message=None) -> mqtt.Client:
        registry = IdentityRegistry(self.device_id, self.modules, path=self.data / "identities.json")

        ident = registry.module(module)
        assert ident is not None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ident.id, protocol=mqtt.MQTTv311)
        token = make_token(
            f"{IOTHUB}/devices/{self.device_id}/modules/{module}", ident.primary_key, int(time.time()) + 3600
        )
        client.username_pw_set(f"{IOTHUB}/{ident.id}/?api-version=2019-10-01", token)
        client.tls_set_context(ssl.create_default_context(cafile=self.ca))
        client.max_inflight_messages_set(50)
        client.reconnect_delay_set(30, 60)
        if on_message is not None:
            client.on_message = on_message
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        assert connected.wait(10)
        return client
