"""A client that asks and never reads cannot make the hub's memory grow without bound: the hub stops
reading it once what it wrote piles up, and keeps serving everyone else."""

from __future__ import annotations

import json
import socket
import ssl
import time
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
