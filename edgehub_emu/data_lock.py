"""One hub per data directory: an exclusive lock on ``DATA_DIR/hub.lock`` for as long as the hub runs.

Two hubs on one directory would share its keys, queues and twins, and the first to stop would delete
the other's ``endpoints.json`` and workload socket. The lock is the kernel's (``flock``), so a hub
killed with ``kill -9`` leaves nothing behind that blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import IO


class DataDirectoryInUse(Exception):
    """Another hub holds the data directory; the message names it."""


def lock_data_directory(data_dir: Path, stack: contextlib.ExitStack | contextlib.AsyncExitStack) -> None:
    """Take the directory's lock until ``stack`` closes, or raise DataDirectoryInUse."""
    path = data_dir / "hub.lock"
    handle: IO[str] = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirectoryInUse(_who_holds(data_dir)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    stack.callback(handle.close)  # closing the file releases the lock


def _who_holds(data_dir: Path) -> str:
    pid = (data_dir / "hub.lock").read_text(encoding="utf-8").strip() or "?"
    where = ""
    with contextlib.suppress(OSError, ValueError):
        endpoints = json.loads((data_dir / "endpoints.json").read_text(encoding="utf-8"))
        ports = [
            f"{name} {endpoints[key]}"
            for name, key in (
                ("MQTT over TLS", "mqtts_port"),
                ("AMQP over TLS", "amqps_port"),
                ("management API", "http_port"),
            )
            if endpoints.get(key) is not None
        ]
        where = f" ({', '.join(ports)})" if ports else ""
    return (
        f"another edgehub-emu (pid {pid}){where} is using the data directory {data_dir}: stop it, or give "
        "this hub a directory of its own (--data-dir)"
    )
