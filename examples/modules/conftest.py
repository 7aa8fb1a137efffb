"""Run a sample module under test as a subprocess, with the environment the ``edgehub`` fixture gives.

The modules use the Azure IoT SDK for Python, which needs ``paho-mqtt<2``; ``make test`` installs it in
``.venv-sdk`` (set ``EDGEHUB_EMU_MODULE_PYTHON`` to use another interpreter). A module's output is kept
and shown when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgehub_emu.testing import EdgeHubFixture

ROOT = Path(__file__).resolve().parents[2]
MODULE_PYTHON = Path(os.environ.get("EDGEHUB_EMU_MODULE_PYTHON", ROOT / ".venv-sdk" / "bin" / "python"))


class RunningModule:
    """A module process and the lines it printed."""

    def __init__(self, name: str, script: Path, env: dict[str, str]) -> None:
        assert MODULE_PYTHON.exists(), f"{MODULE_PYTHON} is missing: `make test` creates it (with the SDK)"
        self.name = name
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(MODULE_PYTHON), str(script)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONWARNINGS": "ignore", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_for_line(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if text in line), None)
            if found is not None:
                return found
            assert self.process.poll() is None, f"{self.name} exited:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.02)
        raise AssertionError(
            f"{self.name} never printed {text!r}; it printed:\n" + "\n".join(self.lines[-30:])
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def run_module(edgehub: EdgeHubFixture) -> Iterator[Callable[..., RunningModule]]:
    """``run_module(name, script, edge=False, **extra_env)``: start a sample module against this test's
    hub, with connection-string credentials or (``edge``) the edge environment's workload API."""
    started: list[RunningModule] = []

    def run(name: str, script: Path, edge: bool = False, **extra_env: str) -> RunningModule:
        module = RunningModule(name, script, {**edgehub.module_env(name, edge=edge), **extra_env})
        started.append(module)
        module.wait_for_line("every" if name == "SimulatedTemperatureSensor" else "forwarding readings")
        return module

    yield run
    for module in started:
        module.stop()
