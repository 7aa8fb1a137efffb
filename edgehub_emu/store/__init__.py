"""Endpoint queues (store-and-forward): durable in SQLite, or in memory for tests and ``--store memory``.

Both implement one interface: ``add(message, copies)`` returns None or an awaitable that completes once
the message is stored for every endpoint; ``head``/``next_unsent`` read in delivery order (lowest
priority number first, FIFO within, expired entries dropped and counted); ``remove`` checkpoints.
"""

from .memory import Entry, MemoryStore
from .sqlite import SqliteStore, StoreError

__all__ = ["Entry", "MemoryStore", "SqliteStore", "StoreError"]
