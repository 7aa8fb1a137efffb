"""Endpoint queues (store-and-forward): a durable message log, or memory (tests, ``--store memory``).

Both implement ``Store``: ``add`` queues a message for the endpoints it routes to and says when it is
committed; ``take`` hands out entries in delivery order (lowest priority number first, FIFO within,
expired ones skipped and counted); ``ack`` checkpoints, ``release`` gives entries back.
"""

from pathlib import Path

from .base import Entry, QueueInfo, Store, Stored, StoreError
from .log import LogStore, read_queues
from .memory import MemoryStore
from .migrate import migrate_sqlite

__all__ = [
    "Entry",
    "LogStore",
    "MemoryStore",
    "QueueInfo",
    "Store",
    "StoreError",
    "Stored",
    "open_store",
    "read_queues",
]


def open_store(kind: str, data_dir: Path) -> Store:
    """``sqlite``/``log`` (durable, in ``DATA_DIR/queue``) or ``memory``; a store of the earlier format
    in the data directory is moved into the log."""
    if kind == "memory":
        return MemoryStore()
    if kind not in ("durable", "sqlite", "log"):
        raise ValueError(f"unknown store {kind!r}: use 'durable' or 'memory'")
    store = LogStore(data_dir / "queue")
    old = data_dir / "store.sqlite"
    if old.is_file():
        try:
            migrate_sqlite(old, store)
        except BaseException:
            store.close()
            raise
    return store
