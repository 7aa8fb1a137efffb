"""The durable store's thread for slow file work, in a module of its own: the store's log is compiled
with mypyc (see ``edgehub_emu.compiled``), and a compiled subclass of ``threading.Thread`` is not safe."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from functools import partial

log = logging.getLogger("edgehub_emu.store")


class FileWorker(threading.Thread):
    """The store's slow file work, off the event loop and in the order it was asked for: fsync, the
    checkpoints file (a temporary file and a rename) and deleting finished segments. Each costs from a
    fraction of a millisecond to several on a busy disk; on the loop, every connection would wait."""

    def __init__(self) -> None:
        super().__init__(name="edgehub-store-files", daemon=True)
        self._jobs: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.append(job)
        self._wake.set()

    def sync(self, fd: int) -> None:
        """fsync ``fd`` (a duplicate is synced, so the owner may close its own meanwhile)."""
        self.submit(partial(sync_and_close, os.dup(fd)))

    def wait(self) -> None:
        """Return once everything asked so far is done."""
        done = threading.Event()
        self.submit(done.set)
        done.wait(10)

    def run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                jobs, self._jobs = self._jobs, []
                stopping = self._stopping
            for job in jobs:
                try:
                    job()
                except Exception as exc:  # a bug, not the disk (each job handles OSError): keep going
                    log.error("the store's file thread failed a job: %r", exc)
            if stopping:
                return

    def stop(self) -> None:
        """Do what was asked, then end."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        self.join(10)


def sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("the store could not flush to disk: %s", exc)
    finally:
        os.close(fd)
