"""Whatever a client sends, the hub keeps serving everyone else (arbitrary bytes over a real socket)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgehub_emu.hub import HubError
from edgehub_emu.mqtt.codec import Connect, Decoder, Pingreq, Pingresp, encode

from .conftest import DEVICE
from .test_protocol import HUB_HOST

PREFIXES = st.sampled_from(["nothing", "connect"])


async def test_arbitrary_bytes_never_disturb_other_clients(start_hub):
    hub = await start_hub(mqtt_port=0)
    port = hub.hub.endpoints.mqtt_port
    bystander = await hub.client("SimulatedTemperatureSensor")
    identity = f"{DEVICE}/filtermodule"
    connect = encode(
        Connect(
            identity, True, 60, f"{HUB_HOST}/{identity}/?api-version=2019-10-01", hub.token(identity).encode()
        )
    )
    loop = asyncio.get_running_loop()
    cases: list[bytes] = []

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(PREFIXES, st.binary(max_size=300))
    def collect(prefix: str, junk: bytes) -> None:
        cases.append((connect if prefix == "connect" else b"") + junk)

    collect()

    def send(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(data)
            sock.settimeout(0.03)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass

    for data in cases:
        await loop.run_in_executor(None, send, data)
    # the hub is alive and serves: a bystander's ping round trip, and a fresh client
    info = bystander.paho.publish(
        f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events", b"still here", qos=1
    )
    await asyncio.to_thread(info.wait_for_publish, 5)
    assert info.is_published()

    def ping() -> list:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(connect + encode(Pingreq()))
            decoder = Decoder()
            packets: list = []
            while len(packets) < 2:
                packets += decoder.feed(sock.recv(4096))
            return packets

    assert (await asyncio.to_thread(ping))[1] == Pingresp()
    bystander.stop()


async def test_a_workload_socket_path_too_long_for_unix_is_refused_by_name(start_hub, tmp_path):
    long_path = tmp_path / ("d" * 120) / "workload.sock"

    with pytest.raises(
        HubError, match=r"over the 107 a Unix socket allows: .*workload\.sock.*--workload-socket"
    ):
        await start_hub(workload_socket=long_path)
