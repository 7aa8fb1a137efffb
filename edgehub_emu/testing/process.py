"""``edgehub-emu run`` as a child process: for tests and benchmarks that need the real command.

The fixture (``plugin.py``) runs a hub inside the test's event loop, which is what module tests want.
Some checks need the command itself: its banner, its signals, a ``kill -9`` and a restart on the same
data directory, or a hub that does not share the test's CPU. ``HubProcess`` starts one on free ports,
waits until it prints "ready", and reads where it listens from ``endpoints.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FREE_PORTS = (
    *("--mqtts-port", "0", "--amqps-port", "0", "--https-port", "0"),
    *("--http-port", "0", "--metrics-port", "0"),
)


class HubProcessError(RuntimeError):
    """The hub exited before it was ready; the message holds what it printed."""


class HubProcess:
    """A running ``edgehub-emu run --data-dir DATA ARGS…``; later flags override the free-port defaults."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        free_ports: bool = True,
        stderr: int | None = subprocess.STDOUT,
    ) -> None:
        self.data_dir = data_dir
        self.banner: list[str] = []
        executable = Path(sys.executable).with_name("edgehub-emu")
        command = [
            str(executable),
            "run",
            "--data-dir",
            str(data_dir),
            *(FREE_PORTS if free_ports else ()),
            *args,
        ]
        (data_dir / "endpoints.json").unlink(missing_ok=True)
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.banner.append(line)
            if "ready" in line:
                break
        endpoints = data_dir / "endpoints.json"
        if not endpoints.exists():
            self.process.wait(10)
            raise HubProcessError("edgehub-emu run did not start:\n" + "".join(self.banner))
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep the pipe drained
        self.endpoints: dict[str, Any] = json.loads(endpoints.read_text())

    @property
    def mqtts_port(self) -> int:
        return int(self.endpoints["mqtts_port"])

    @property
    def ca_file(self) -> str:
        return str(self.endpoints["ca_file"])

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20) -> int | None:
        """Ctrl-C, as a user stops it; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout)
        return self.process.returncode

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
