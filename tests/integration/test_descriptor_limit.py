"""At the open-file limit the hub says so in one line, keeps the connections it has, and accepts again
once descriptors free up."""

from __future__ import annotations

import json
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("edgehub-emu"))


def test_the_hub_says_when_it_runs_out_of_descriptors_and_recovers(tmp_path: Path):
    run = (
        f"ulimit -n 64; exec {EXE} run -m {ROOT / 'config' / 'deployment.json'} --data-dir {tmp_path} "
        "--mqtts-port 0 --amqps-port 0 --https-port 0 --http-port 0 --metrics-port 0"
    )
    hub = subprocess.Popen(["bash", "-c", run], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert hub.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in hub.stdout], daemon=True).start()

    def wait_for(text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if text in line:
                return line
        raise AssertionError(f"the hub never said {text!r}")

    held: list[socket.socket] = []
    try:
        wait_for("ready")
        about = json.loads((tmp_path / "endpoints.json").read_text())
        for _ in range(80):  # more than the 64 descriptors the hub may have
            held.append(socket.create_connection(("127.0.0.1", about["mqtts_port"]), timeout=5))
        warning = wait_for("open files in use: at the limit")
        assert "ulimit -n" in warning
        for sock in held[:60]:
            sock.close()
        wait_for("accepting connections again")
        context = ssl.create_default_context(cafile=about["ca_file"])
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", about["mqtts_port"]), timeout=5),
            server_hostname="127.0.0.1",
        ) as tls:
            tls.sendall(b"\xc0\x00")  # a packet before CONNECT: the hub answers by closing; it is serving
            assert tls.recv(1) == b""
    finally:
        for sock in held:
            sock.close()
        hub.terminate()
        hub.wait(20)
