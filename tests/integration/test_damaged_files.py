"""Damaged files of the data directory are named, never replaced silently; --reset-damaged moves them
aside and says what was lost; a data directory the hub cannot write is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgehub_emu.hub import EdgeHub, HubError

from .conftest import DEVICE, Hub, free_port_settings

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("edgehub-emu"))


async def _first_run(data_dir: Path) -> str:
    async with EdgeHub(free_port_settings(data_dir)) as hub:
        hub.patch_desired("filtermodule", {"tempLimit": 77})
        return hub.connection_string("filtermodule")


@pytest.mark.parametrize(
    ("name", "damage", "holds"),
    [
        ("identities.json", b'{"keys": ', "the keys of every module"),
        ("twins.json", b"[1, 2", "every twin's desired and reported properties"),
        ("upstream.sqlite", b"this is not a database file at all" * 200, "the record of what went upstream"),
    ],
)
async def test_a_damaged_file_stops_the_start_and_names_itself(tmp_path: Path, name, damage, holds):
    before = await _first_run(tmp_path)
    for companion in ("-wal", "-shm"):
        (tmp_path / (name + companion)).unlink(missing_ok=True)
    (tmp_path / name).write_bytes(damage)
    with pytest.raises(HubError) as refused:
        await EdgeHub(free_port_settings(tmp_path)).start()
    said = str(refused.value)
    assert str(tmp_path / name) in said and "is damaged" in said
    assert holds in said and "--reset-damaged" in said
    assert (tmp_path / name).read_bytes() == damage  # left as it was
    creds = subprocess.run(
        [
            EXE,
            "creds",
            "filtermodule",
            "-m",
            str(ROOT / "config" / "deployment.json"),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if name == "identities.json":  # the CLI reads it too: the same words, no traceback
        assert creds.returncode == 1 and "is damaged" in creds.stderr and "Traceback" not in creds.stderr

    async with EdgeHub(free_port_settings(tmp_path, reset_damaged=True)) as hub:  # a fresh start, asked for
        kept = hub.connection_string("filtermodule")
    assert list(tmp_path.glob(f"{name}.corrupt-*"))  # set aside, not deleted
    if name == "identities.json":
        assert kept != before  # new keys: what the refusal warned about
    else:
        assert kept == before


SENSOR_OUT = f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput"
FILTER_IN = f"devices/{DEVICE}/modules/filtermodule/inputs/#"


async def _received(hub: EdgeHub, count: int) -> list[bytes]:
    """What filtermodule gets when it connects: ``count`` messages, then nothing more."""
    receiver = await Hub(hub).client("filtermodule")
    await receiver.subscribe(FILTER_IN)
    bodies = [(await receiver.next()).payload for _ in range(count)]
    await receiver.nothing()
    receiver.stop()
    return bodies


@pytest.mark.parametrize("name", ["lanes.json", "checkpoints.json"])
async def test_damaged_queue_files_stop_the_start_and_a_fresh_start_says_what_comes_of_the_queue(
    tmp_path: Path, name
):
    async with EdgeHub(free_port_settings(tmp_path)) as hub:  # m0-m2 delivered, m3 waits
        sensor = await Hub(hub).client("SimulatedTemperatureSensor")
        for i in range(3):
            await sensor.publish(SENSOR_OUT, f"m{i}")
        assert await _received(hub, 3) == [b"m0", b"m1", b"m2"]
        await sensor.publish(SENSOR_OUT, "m3")
        sensor.stop()
    damaged = tmp_path / "queue" / name
    damaged.write_text('{"lanes": [[')
    with pytest.raises(HubError) as refused:
        await EdgeHub(free_port_settings(tmp_path)).start()
    said = str(refused.value)
    assert f"{damaged} is damaged" in said and "--reset-damaged" in said
    async with EdgeHub(free_port_settings(tmp_path, reset_damaged=True)) as hub:
        if name == "lanes.json":  # no record can be placed without it: the whole log is set aside
            assert "which queue each waiting message belongs to" in said
            assert list(tmp_path.glob("queue.corrupt-*/00000001.log"))
            assert await _received(hub, 0) == []
        else:  # delivered again from the start of the log: at least once, nothing lost
            assert "delivered again" in said
            assert await _received(hub, 4) == [b"m0", b"m1", b"m2", b"m3"]


async def test_a_damaged_record_in_the_queue_is_named_and_counted_and_the_rest_delivered(
    tmp_path: Path, caplog
):
    async with EdgeHub(free_port_settings(tmp_path)) as hub:
        sensor = await Hub(hub).client("SimulatedTemperatureSensor")
        for i in range(20):
            await sensor.publish(SENSOR_OUT, f"m{i:02d}")  # one record each (each waits for its PUBACK)
        sensor.stop()
    (segment,) = (tmp_path / "queue").glob("*.log")
    data = bytearray(segment.read_bytes())
    data[data.index(b"m10") + 1] ^= 0xFF  # as a failing disk would
    segment.write_bytes(bytes(data))
    async with EdgeHub(free_port_settings(tmp_path)) as hub:
        got = await _received(hub, 19)
    assert got == [f"m{i:02d}".encode() for i in range(20) if i != 10]
    (line,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert str(segment) in line and "1 message(s)" in line


async def test_a_data_directory_the_hub_cannot_write_is_one_clear_line(tmp_path: Path):
    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-dir"  # root writes anywhere: use a path that cannot be a directory
        blocked.write_text("")
        data_dir = blocked / "data"
    else:
        data_dir = tmp_path / "ro"
        data_dir.mkdir()
        data_dir.chmod(0o500)
    done = subprocess.run(
        [EXE, "run", "-m", str(ROOT / "config" / "deployment.json"), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert f"cannot use the data directory {data_dir}" in said and "Traceback" not in said
