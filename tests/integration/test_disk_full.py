"""A full disk, for real: the hub's data directory on a 4 MiB tmpfs of its own (a private mount namespace,
so nothing is left mounted if the test dies). Each episode is said once, publishers get no
acknowledgement for what could not be stored, nothing acknowledged is lost, and the hub takes messages
again as soon as space comes back."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgehub_emu.identity import IdentityRegistry, make_token
from edgehub_emu.testing import FREE_PORTS

from .conftest import DEVICE, IOTHUB, MODULES, ROOT, Client

pytestmark = pytest.mark.timeout(120)

SENSOR_OUT = f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput"


class HubOnSmallDisk:
    """``edgehub-emu run`` with its data directory on a tmpfs of ``size`` mounted in its own namespace;
    the test reaches the files through ``/proc/PID/root``, which resolves in that namespace."""

    def __init__(self, data: Path, size: str = "4m") -> None:
        data.mkdir()
        exe = str(Path(sys.executable).with_name("edgehub-emu"))
        mount = f'mount -t tmpfs -o size={size} tmpfs {data} && exec "$@"'
        run = [exe, "run", "--data-dir", str(data), "-m", str(ROOT / "config" / "deployment.json")]
        run += ["--no-watch", *FREE_PORTS]
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", *run],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        self.output: list[str] = []
        for line in self.process.stdout:
            self.output.append(line)
            if "ready" in line:
                break
        else:
            raise AssertionError("the hub did not start:\n" + "".join(self.output))
        threading.Thread(target=self._read, daemon=True).start()
        self.root = Path(f"/proc/{self.process.pid}/root")
        self.inside = self.root / str(data).lstrip("/")
        self.endpoints = json.loads((self.inside / "endpoints.json").read_text())
        self.registry = IdentityRegistry(DEVICE, MODULES, path=self.inside / "identities.json")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def fill(self) -> None:
        """Take every free byte of the hub's disk."""
        with open(self.inside / "filler", "ab", buffering=0) as f:
            for chunk in (65536, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError:
                    pass

    def free(self) -> None:
        (self.inside / "filler").unlink()

    async def client(self, module: str) -> Client:
        ident = self.registry.module(module)
        assert ident is not None
        c = Client.wired(ident.id)
        token = make_token(
            f"{IOTHUB}/devices/{DEVICE}/modules/{module}", ident.primary_key, int(time.time()) + 600
        )
        c.paho.username_pw_set(f"{IOTHUB}/{ident.id}/?api-version=2019-10-01", token)
        c.paho.tls_set(ca_certs=str(self.root / self.endpoints["ca_file"].lstrip("/")))
        await asyncio.to_thread(c.paho.connect, "127.0.0.1", int(self.endpoints["mqtts_port"]))
        c.paho.loop_start()
        rc, _ = await asyncio.to_thread(c.connack.get, True, 5)
        assert rc.value == 0
        return c

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(20)
        return "".join(self.output)


async def refused(hub: HubOnSmallDisk, body: str) -> None:
    """The message gets no PUBACK: the hub closes the publisher's connection instead."""
    sensor = await hub.client("SimulatedTemperatureSensor")
    info = sensor.paho.publish(SENSOR_OUT, body, qos=1)
    await sensor.disconnected()
    assert not info.is_published()
    sensor.paho.loop_stop()


async def accepted(hub: HubOnSmallDisk, body: str) -> None:
    sensor = await hub.client("SimulatedTemperatureSensor")
    await sensor.publish(SENSOR_OUT, body)
    sensor.stop()


async def test_a_full_disk_is_said_once_refuses_what_it_cannot_store_and_recovers(tmp_path: Path):
    hub = HubOnSmallDisk(tmp_path / "data")
    try:
        hub.fill()  # before the first message: its queue cannot even be numbered
        for i in range(3):
            await refused(hub, f"lost-{i}")
        hub.free()
        await accepted(hub, "m0")
        hub.fill()  # now the log itself cannot grow
        for i in range(3):
            await refused(hub, f"lost-{3 + i}" * 2000)  # more than the free end of the log's last page
        hub.free()
        await accepted(hub, "m1")

        receiver = await hub.client("filtermodule")
        await receiver.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/#")
        assert [(await receiver.next()).payload for _ in range(2)] == [b"m0", b"m1"]
        await receiver.nothing()
        receiver.stop()
    finally:
        log = hub.stop()
    full = [line for line in log.splitlines() if "disk full" in line and "ERROR" in line]
    assert len(full) == 2, log  # once per episode, not once per refused message
    assert "lanes.json" in full[0] and "00000001.log" in full[1]
    assert log.count("the store writes again") == 2
    assert "Traceback" not in log


async def report(hub: HubOnSmallDisk, patch: dict) -> str:
    """A reported-properties patch from filtermodule; the twin response's topic."""
    module = await hub.client("filtermodule")
    await module.subscribe("$iothub/twin/res/#")
    module.paho.publish("$iothub/twin/PATCH/properties/reported/?$rid=7", json.dumps(patch), qos=0)
    answer = (await module.next()).topic
    module.stop()
    return answer


async def test_twins_are_kept_in_memory_while_the_disk_is_full_and_saved_once_it_is_not(tmp_path: Path):
    hub = HubOnSmallDisk(tmp_path / "data")
    try:
        hub.fill()
        assert (await report(hub, {"during": 1})).startswith("$iothub/twin/res/204/")
        assert (await report(hub, {"during": 2})).startswith("$iothub/twin/res/204/")
        hub.free()
        assert (await report(hub, {"after": 3})).startswith("$iothub/twin/res/204/")
        saved = json.loads((hub.inside / "twins.json").read_text())
        assert saved[f"{DEVICE}/filtermodule"]["reported"] == {"during": 2, "after": 3}
    finally:
        log = hub.stop()
    assert len([line for line in log.splitlines() if "twins.json (disk full)" in line]) == 1, log
    assert "twins.json is saved again" in log and "Traceback" not in log
