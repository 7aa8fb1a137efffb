"""One hub per data directory: a second one is refused, names the first, and leaves its files alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgehub_emu.hub import EdgeHub, HubError
from edgehub_emu.testing import FREE_PORTS

from .conftest import free_port_settings

ROOT = Path(__file__).resolve().parents[2]


async def test_a_second_hub_on_the_same_data_directory_is_refused(tmp_path: Path):
    async with EdgeHub(free_port_settings(tmp_path)) as first:
        assert first.endpoints is not None
        with pytest.raises(HubError) as refused:
            await EdgeHub(free_port_settings(tmp_path)).start()
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message
        assert f"MQTT over TLS {first.endpoints.mqtts_port}" in message
        assert "--data-dir" in message
        # the refused hub took nothing away from the running one
        assert (tmp_path / "endpoints.json").is_file()
        assert first.settings.workload_socket_path.exists()
    # once the first has stopped, the directory is free again
    async with EdgeHub(free_port_settings(tmp_path)):
        pass


async def test_the_command_line_says_which_hub_holds_the_directory(tmp_path: Path):
    async with EdgeHub(free_port_settings(tmp_path)):
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("edgehub-emu")),
                "run",
                "-m",
                str(ROOT / "config" / "deployment.json"),
                "--data-dir",
                str(tmp_path),
                *FREE_PORTS,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert f"another edgehub-emu (pid {os.getpid()}" in said and "Traceback" not in said
