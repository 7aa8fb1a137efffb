"""Endpoint queues (store-and-forward): in memory today; the durable SQLite store keeps this interface."""

from .memory import Entry, MemoryStore

__all__ = ["Entry", "MemoryStore"]
