"""Brokers under test and the load generator the benchmarks share.

- ``HubProcess``: ``edgehub-emu run`` in its own process, with ``pairs`` sensor→filter module pairs
  (``sensor{i}/outputs/out`` routed to ``filter{i}/inputs/in``), durable store by default; its hot path
  compiled (``make bench`` builds it), or as Python with ``pure_python``.
- ``Mosquitto`` and ``Amqtt``: plain brokers on a free loopback port, anonymous.
- ``pair_throughput``: one publisher and one subscriber per process, several processes at once, so that
  the Python clients are not what is measured.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edgehub_emu.compiled import PURE_VARIABLE
from edgehub_emu.identity import IdentityRegistry, make_token
from edgehub_emu.testing import HubProcess as RunningHub

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "edge-device"
IOTHUB = "edgehub-emu.azure-devices.net"
AMQTT = ROOT / ".venv-bench" / "bin" / "amqtt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BROKER_POLICY = {
    "authorizations": [
        {
            "identities": ["{{iot:identity}}"],
            "allow": [
                {"operations": ["mqtt:connect"]},
                {"operations": ["mqtt:publish", "mqtt:subscribe"], "resources": ["bench/#"]},
            ],
        }
    ]
}


def manifest(pairs: int, broker: bool = False) -> dict:
    """``pairs`` sensor/filter pairs, each sensor routed to its filter; with ``broker``, also the broker
    mode (schema 1.2, ``mqttBroker``) with user topics ``bench/#`` allowed."""
    modules = [f"sensor{i}" for i in range(pairs)] + [f"filter{i}" for i in range(pairs)]
    hub: dict = {
        "schemaVersion": "1.2" if broker else "1.1",
        "routes": {
            f"r{i}": f"FROM /messages/modules/sensor{i}/outputs/out "
            f'INTO BrokeredEndpoint("/modules/filter{i}/inputs/in")'
            for i in range(pairs)
        },
    }
    if broker:
        hub["mqttBroker"] = BROKER_POLICY
    return {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker", "settings": {}},
                "systemModules": {
                    "edgeAgent": {"type": "docker", "settings": {"image": "agent"}},
                    "edgeHub": {"type": "docker", "settings": {"image": "hub"}},
                },
                "modules": {
                    m: {
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {"image": m},
                    }
                    for m in modules
                },
            }
        },
        "$edgeHub": {"properties.desired": hub},
    }


@dataclass(frozen=True)
class Target:
    """Where one publisher/subscriber pair connects, and as whom (picklable for worker processes)."""

    host: str
    port: int
    ca_file: str | None
    publish_topic: str
    subscribe_filter: str
    publisher: tuple[str, str, str]  # client id, user name, password
    subscriber: tuple[str, str, str]


class HubProcess(RunningHub):
    """The hub on ``pairs`` sensor/filter module pairs, each sensor routed to its filter."""

    def __init__(
        self,
        pairs: int = 1,
        data: Path | None = None,
        leaves: list[str] | None = None,
        broker: bool = False,
        pure_python: bool = False,
        **flags: str,
    ) -> None:
        self.pairs = pairs
        self.dir = Path(tempfile.mkdtemp(prefix="edgehub-bench-"))
        self.data = data or self.dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.leaves = leaves or []
        (self.dir / "deployment.json").write_text(json.dumps(manifest(pairs, broker)))
        args = ["-m", str(self.dir / "deployment.json"), "--mqtt-port", "0", "--no-watch"]
        if broker:
            args.append("--dev")
        for flag, value in flags.items():
            args += [f"--{flag.replace('_', '-')}", value]
        started = time.perf_counter()
        super().__init__(
            self.data,
            *args,
            env={
                "EDGEHUB_EMU_LEAF_DEVICES": ",".join(self.leaves),
                PURE_VARIABLE: "1" if pure_python else "",
            },
            stderr=subprocess.DEVNULL,
        )
        self.ready_after = time.perf_counter() - started
        modules = [f"sensor{i}" for i in range(pairs)] + [f"filter{i}" for i in range(pairs)]
        self.registry = IdentityRegistry(DEVICE, modules, self.leaves, path=self.data / "identities.json")

    def credentials(self, module: str) -> tuple[str, str, str]:
        ident = self.registry.module(module)
        assert ident is not None
        token = make_token(
            f"{IOTHUB}/devices/{DEVICE}/modules/{module}", ident.primary_key, int(time.time()) + 7200
        )
        return ident.id, f"{IOTHUB}/{ident.id}/?api-version=2019-10-01", token

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.endpoints["ca_file"])

    def target(self, tls: bool, pair: int = 0) -> Target:
        return Target(
            "127.0.0.1",
            self.endpoints["mqtts_port"] if tls else self.endpoints["mqtt_port"],
            self.endpoints["ca_file"] if tls else None,
            f"devices/{DEVICE}/modules/sensor{pair}/messages/events/%24.on=out",
            f"devices/{DEVICE}/modules/filter{pair}/#",
            self.credentials(f"sensor{pair}"),
            self.credentials(f"filter{pair}"),
        )

    def user_topic_target(self, pair: int = 0) -> Target:
        """Anonymous local clients (``--dev``) on a user topic of the broker mode: plain pub/sub."""
        topic = f"bench/{pair}"
        return Target(
            "127.0.0.1",
            self.endpoints["mqtt_port"],
            None,
            topic,
            topic,
            (f"pub{pair}", "", ""),
            (f"sub{pair}", "", ""),
        )

    def memory_mb(self, field: str = "VmRSS") -> float:
        return memory_mb(self.process.pid, field)

    def stop(self, timeout: float = 30) -> int | None:
        self.process.terminate()
        self.process.wait(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.process.returncode


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads, ended ones included) has used so far, to
    the nanosecond: the kernel's CPU-time clock of that process. /proc's user and system times count
    in clock ticks (10 ms), a fifth of a microsecond per message in a run of 45,000 messages, which is
    as large as some of the differences measured here; they are the fallback."""
    try:
        return time.clock_gettime((~pid << 3) | 2)  # Linux's clock id of a process's CPU time
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's finished (waited-for) children: the load generator's workers."""
    times = os.times()
    return times.children_user + times.children_system


class CpuMeter:
    """CPU per message of a broker process and of the load generator, over one measured run."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.broker = self.clients = 0.0

    def __enter__(self) -> CpuMeter:
        self._broker0, self._clients0 = cpu_seconds(self.pid), children_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.broker = cpu_seconds(self.pid) - self._broker0
        self.clients = children_cpu_seconds() - self._clients0

    def per_message_us(self, messages: int) -> tuple[float, float]:
        return self.broker / messages * 1e6, self.clients / messages * 1e6


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PlainBroker:
    """A broker process on a free loopback port with anonymous clients."""

    name = "broker"

    def __init__(self, command: list[str], config_name: str, config: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-bench-"))
        self.port = free_port()
        (self.dir / config_name).write_text(config.format(port=self.port))
        self.process = subprocess.Popen(
            [*command, str(self.dir / config_name)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)

    def target(self, tls: bool = False, pair: int = 0) -> Target:
        return Target(
            "127.0.0.1",
            self.port,
            None,
            f"bench/{pair}",
            f"bench/{pair}",
            (f"pub{pair}", "", ""),
            (f"sub{pair}", "", ""),
        )

    def memory_mb(self, field: str = "VmRSS") -> float:
        return memory_mb(self.process.pid, field)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Mosquitto(PlainBroker):
    name = "mosquitto"

    def __init__(self) -> None:
        config = "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        super().__init__(["mosquitto", "-c"], "mosquitto.conf", config)


class Amqtt(PlainBroker):
    name = "amqtt"

    def __init__(self) -> None:
        config = (
            "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        super().__init__([str(AMQTT), "-c"], "amqtt.yaml", config)


def client(target: Target, role: str, on_message=None) -> mqtt.Client:
    client_id, username, password = target.publisher if role == "pub" else target.subscriber
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if username:
        c.username_pw_set(username, password)
    if target.ca_file is not None:
        c.tls_set_context(ssl.create_default_context(cafile=target.ca_file))
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    if on_message is not None:
        c.on_message = on_message
    connected = threading.Event()
    c.on_connect = lambda *_: connected.set()
    c.connect(target.host, target.port, 60)
    c.loop_start()
    connected.wait(10)
    return c


def subscribed_pair(target: Target, on_message) -> tuple[mqtt.Client, mqtt.Client]:
    """A subscriber (subscribed at QoS 1) and a publisher, both connected."""
    subscriber = client(target, "sub", on_message)
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.subscribe(target.subscribe_filter, 1)
    subscribed.wait(10)
    return subscriber, client(target, "pub")


class Arrivals:
    """Counts a subscriber's messages; ``done`` is set when ``expected`` have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.done = threading.Event()

    def on_message(self, _c, _u, _m) -> None:
        self.received += 1
        if self.received == self.expected:
            self.done.set()


BACKLOG = 1000
"""At most this many messages of a pair published and not yet received: a real source does not outrun
its consumer forever, and a store-and-forward hub should be measured at the rate it sustains."""


def send_and_count(
    target: Target, count: int, size: int, timeout: float, start_at: float = 0.0
) -> tuple[int, float, float]:
    """Publish ``count`` QoS 1 messages of ``size`` bytes through one subscribed pair (from ``start_at``,
    a wall-clock time), at most BACKLOG ahead of the subscriber; (messages received, when sending began,
    when the last arrived or time ran out)."""
    arrivals = Arrivals(count)
    subscriber, publisher = subscribed_pair(target, arrivals.on_message)
    payload = b"x" * size
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.time()
    deadline = began + timeout
    for sent in range(count):
        while sent - arrivals.received >= BACKLOG and time.time() < deadline:
            time.sleep(0.0005)
        publisher.publish(target.publish_topic, payload, qos=1)
    arrivals.done.wait(max(0.0, deadline - time.time()))

    ended = time.time()
    for c in (publisher, subscriber):
        c.disconnect()
        c.loop_stop()
    return arrivals.received, began, ended


def _pair_worker(target: Target, count: int, size: int, start_at: float, queue) -> None:
    queue.put(send_and_count(target, count, size, 180, start_at))


def pair_throughput(targets: list[Target], count: int, size: int) -> float:
    """Messages per second over all pairs, each pair in its own process."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 2.0
    workers = [
        context.Process(target=_pair_worker, args=(t, count, size, start_at, results)) for t in targets
    ]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=240) for _ in workers]
    for w in workers:
        w.join(10)
    received = sum(o[0] for o in outcomes)
    return received / (max(o[2] for o in outcomes) - min(o[1] for o in outcomes))
