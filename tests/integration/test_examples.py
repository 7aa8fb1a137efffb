"""The README's runnable examples run and show what they promise."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_store_and_forward_example():
    """Also beside a hub of `make run`, as a newcomer runs it after the quick start: the management API
    and metrics ports that hub holds are held here too."""
    held = []
    for port in (53000, 9600):
        sock = socket.socket()
        with contextlib.suppress(OSError):  # taken already (by someone else): just as well
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "store_and_forward.py")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for sock in held:
            sock.close()
    assert done.returncode == 0, done.stderr
    assert "queued while the filter is offline: {0: 3, 1: 3, 2: 3}" in done.stdout
    assert (
        "arrived after the restart, in this order: "
        "['alerts-0', 'alerts-1', 'alerts-2', 'telemetry-0', 'telemetry-1', 'telemetry-2']"
    ) in done.stdout
    assert "dropped because their time-to-live ran out: 3" in done.stdout
