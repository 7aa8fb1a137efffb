"""A client that asks and never reads cannot make the hub's memory grow without bound: the hub stops
reading it once what it wrote piles up, and keeps serving everyone else."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from pathlib import Path

from edgehub_emu.identity import IdentityRegistry, make_token
from edgehub_emu.mqtt.codec import Connect, Publish, Subscribe, encode
from edgehub_emu.testing import HubProcess

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "edge-device"
IOTHUB = "edgehub-emu.azure-devices.net"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def tls_client(hub: HubProcess, module: str, receive_buffer: int | None = None) -> ssl.SSLSocket:
    registry = IdentityRegistry(
        DEVICE, ["SimulatedTemperatureSensor", "filtermodule"], [], hub.data_dir / "identities.json"
    )
    identity = registry.get(f"{DEVICE}/{module}")
    assert identity is not None
    raw = socket.socket()
    if receive_buffer is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.connect(("127.0.0.1", hub.mqtts_port))
    sock = ssl.create_default_context(cafile=hub.ca_file).wrap_socket(raw, server_hostname="127.0.0.1")
    token = make_token(
        f"{IOTHUB}/devices/{DEVICE}/modules/{module}", identity.primary_key, int(time.time()) + 600
    )
    sock.sendall(
        encode(
            Connect(identity.id, True, 600, f"{IOTHUB}/{identity.id}/?api-version=2019-10-01", token.encode())
        )
    )
    sock.settimeout(10)
    assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
    return sock


def test_a_module_that_asks_for_its_twin_and_never_reads_is_held_back(tmp_path: Path):
    hub = HubProcess(tmp_path, "-m", str(ROOT / "config" / "deployment.json"))
    try:
        # an 8 KB twin: every GET answer is 8 KB
        api = f"http://127.0.0.1:{hub.endpoints['http_port']}"
        import urllib.request

        request = urllib.request.Request(
            f"{api}/twins/{DEVICE}/modules/filtermodule",
            data=json.dumps({"properties": {"desired": {f"p{i}": "x" * 900 for i in range(9)}}}).encode(),
            headers={"Content-Type": "application/json"},
            method="PATCH",
        )
        urllib.request.urlopen(request, timeout=10).close()
        before = rss_mb(hub.pid)

        greedy = tls_client(hub, "filtermodule", receive_buffer=4096)
        greedy.sendall(encode(Subscribe(1, [("$iothub/twin/res/#", 0)])))
        get = b"".join(encode(Publish(f"$iothub/twin/GET/?$rid={i}", b"", 0)) for i in range(100))
        greedy.settimeout(0.5)
        sent = 0
        deadline = time.monotonic() + 15
        while sent < 30_000 and time.monotonic() < deadline:  # 30,000 GETs: 240 MB of answers
            try:
                greedy.sendall(get)
                sent += 100
            except TimeoutError:
                pass  # the hub is not reading us: that is the point
        other = tls_client(hub, "SimulatedTemperatureSensor")  # everyone else is still served
        other.sendall(encode(Subscribe(1, [("$iothub/twin/res/#", 0)])))
        other.sendall(encode(Publish("$iothub/twin/GET/?$rid=sentinel", b"", 0)))
        seen = b""
        while b"sentinel" not in seen:
            seen += other.recv(65536)
        after = rss_mb(hub.pid)  # (the hub went round its loop for the sentinel: it had its chance to grow)
        assert after - before < 64, f"RSS grew by {after - before:.0f} MB for a client that never reads"
        other.close()
        greedy.close()
    finally:
        assert hub.stop() == 0


def test_a_broker_mode_subscriber_that_never_reads_is_capped(tmp_path: Path):
    """The broker mode, QoS 0 and QoS 1, 4 KB messages, a subscriber that never reads: QoS 0 is
    dropped and counted, at most 1,000 QoS 1 wait for it, and the hub's memory stays bounded."""
    hub = HubProcess(tmp_path, "-m", str(ROOT / "config" / "broker.json"), "--dev", "--mqtt-port", "0")
    try:
        port = hub.endpoints["mqtt_port"]
        before = rss_mb(hub.pid)

        def plain(client_id: str, receive_buffer: int | None = None) -> socket.socket:
            sock = socket.socket()
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.connect(("127.0.0.1", port))
            sock.sendall(encode(Connect(client_id, True, 600, None, None)))
            sock.settimeout(10)
            assert sock.recv(4) == b"\x20\x02\x00\x00"
            return sock

        slow = plain("slow-subscriber", receive_buffer=4096)
        slow.sendall(encode(Subscribe(1, [("test/#", 1)])))
        publisher = plain("publisher")
        body = b"x" * 4096
        for qos in (0, 1):  # 20,000 of each: 160 MB if they were all kept
            batch = b"".join(
                encode(Publish("test/flood", body, qos, packet_id=(i % 60000) + 1 if qos else None))
                for i in range(1000)
            )
            for _ in range(20):
                publisher.sendall(batch)
        # the publisher's last acknowledgement, then a sentinel through the hub for another subscriber
        watcher = plain("watcher")
        watcher.sendall(encode(Subscribe(2, [("test/sentinel", 0)])))
        watcher.recv(5)  # SUBACK
        publisher.sendall(encode(Publish("test/sentinel", b"done", 0)))
        seen = b""
        while b"done" not in seen:
            seen += watcher.recv(65536)
        after = rss_mb(hub.pid)
        assert after - before < 64, f"RSS grew by {after - before:.0f} MB for a subscriber that never reads"
        status = urllib_json(hub, "/status")
        assert status["broker"]["counters"]["dropped_slow_subscriber"] > 0
        received = 0  # once it reads, what waited for it (up to 1,000 QoS 1 messages) comes
        while received < 1000 * 4096:
            received += len(slow.recv(1 << 20))
        for sock in (slow, publisher, watcher):
            sock.close()
    finally:
        assert hub.stop() == 0


def urllib_json(hub: HubProcess, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(
        f"http://127.0.0.1:{hub.endpoints['http_port']}{path}", timeout=10
    ) as response:
        return json.load(response)


def test_clean_sessions_leave_nothing_behind_and_persistent_ones_are_counted(tmp_path: Path):
    """Hundreds of tools that come and go with new client ids and clean sessions (each subscribing, as
    a dashboard tab would) leave no session and no subscription behind; a persistent session stays."""
    hub = HubProcess(tmp_path, "-m", str(ROOT / "config" / "broker.json"), "--dev", "--mqtt-port", "0")
    try:
        port = int(hub.endpoints["mqtt_port"])

        def visit(client_id: str, clean: bool = True) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(encode(Connect(client_id, clean_session=clean)))
                sock.sendall(encode(Subscribe(1, [("tools/#", 1), (f"tools/{client_id}/+", 0)])))
                sock.sendall(encode(Publish("tools/hello", b"hi", 0)))
                got = b""
                while len(got) < 4 + 6:  # CONNACK, SUBACK with two codes: the subscriptions are in place
                    got += sock.recv(65536)
                sock.sendall(b"\xe0\x00")  # DISCONNECT

        visit("keeper", clean=False)
        before = rss_mb(hub.pid)
        for i in range(600):
            visit(f"tool-{i}")
        status = f"http://127.0.0.1:{hub.endpoints['http_port']}/status"
        held = None
        deadline = time.monotonic() + 10
        while held != (1, 2) and time.monotonic() < deadline:  # the last goodbyes may still be in flight
            broker = json.loads(urllib.request.urlopen(status, timeout=5).read())["broker"]
            held = (broker["sessions"], broker["subscriptions"])
        assert held == (1, 2)  # the persistent session and its two filters, nothing of the 600
        assert rss_mb(hub.pid) - before < 20
    finally:
        hub.stop()
