"""Durable endpoint queues in SQLite: what makes at-least-once survive a restart or a ``kill -9``.

- WAL mode, one writer thread, group commit: every add (and removal) goes to the writer, which
  commits whatever has piled up in one transaction and then resolves the adds' futures. A publish is
  acknowledged only after its future resolves, i.e. after the commit; ``synchronous=NORMAL`` in WAL
  mode keeps every commit through a process crash (a power cut may lose the last few).
- A body is stored once (``messages``) and referenced by a row per endpoint it routes to (``queue``).
- Memory stays flat with a large backlog: per (endpoint, priority) only a page of the oldest entries is
  held in memory; the rest is read from the database as the queue drains.

Same interface and behaviour as ``MemoryStore``; the shared tests in ``tests/unit/test_store.py`` run
against both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..routing import Message, RoutedEndpoint
from .memory import Entry

log = logging.getLogger("edgehub_emu.store")

PAGE = 512
"""Entries per (endpoint, priority) held in memory; the rest wait in the database."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    properties TEXT NOT NULL,
    system_properties TEXT NOT NULL,
    enqueued REAL NOT NULL,
    refs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    priority INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    expires REAL NOT NULL,
    route TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_order ON queue (endpoint, priority, seq);
"""


class StoreError(Exception):
    """The store cannot take the message (disk full, database error): the publisher is disconnected
    without a PUBACK, as edgeHub does."""


@dataclass
class _Lane:
    """One (endpoint, priority) queue: a page in memory, more in the database after ``loaded_to``."""

    loaded: deque[Entry] = field(default_factory=deque)
    loaded_to: int = 0  # highest sequence read into memory (or appended after commit)
    unloaded: bool = False  # committed entries exist beyond ``loaded``
    count: int = 0


@dataclass
class _Endpoint:
    lanes: dict[int, _Lane] = field(default_factory=dict)
    waiter: asyncio.Event | None = None

    def priorities(self) -> list[int]:
        return sorted(p for p, lane in self.lanes.items() if lane.count)


@dataclass
class _Add:
    rows: list[tuple[int, str, int, float, str]]  # (seq, endpoint, priority, expires, route)
    message: Message
    future: asyncio.Future[None] | None


class SqliteStore:
    """Queues in ``path`` (SQLite, WAL). Create it inside the running event loop; ``close()`` at the end."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.expired: dict[str, int] = {}
        self._loop = asyncio.get_running_loop()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._reader = self._connect()
        self._reader.executescript(_SCHEMA)
        self._endpoints: dict[str, _Endpoint] = {}
        self._next_seq = 1 + (self._reader.execute("SELECT coalesce(max(seq), 0) FROM queue").fetchone()[0])
        self._next_message = (
            1 + (self._reader.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0])
        )
        for endpoint, priority, count in self._reader.execute(
            "SELECT endpoint, priority, count(*) FROM queue GROUP BY endpoint, priority"
        ):
            lane = self._endpoint(endpoint).lanes.setdefault(priority, _Lane())
            lane.count, lane.unloaded = count, True
        self._ops: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._failed: Exception | None = None
        self._writer = threading.Thread(target=self._write_loop, name="edgehub-store-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def _endpoint(self, endpoint_id: str) -> _Endpoint:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            endpoint = self._endpoints[endpoint_id] = _Endpoint()
        return endpoint

    # --- writer thread ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        db = self._connect()
        while True:
            ops = [self._ops.get()]
            while len(ops) < 2048:
                try:
                    ops.append(self._ops.get_nowait())
                except queue.Empty:
                    break
            stop = any(op is None for op in ops)
            ops = [op for op in ops if op is not None]
            adds = [op for op in ops if isinstance(op, _Add)]
            try:
                db.execute("BEGIN")
                for op in ops:
                    if isinstance(op, _Add):
                        self._insert(db, op)
                    else:
                        op(db)
                db.execute("COMMIT")
            except Exception as exc:  # disk full, I/O error: refuse these messages, keep serving
                log.error("the store could not commit %d operations: %s", len(ops), exc)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                self._loop.call_soon_threadsafe(self._fail, adds, exc)
            else:
                if adds:
                    self._loop.call_soon_threadsafe(self._committed, adds)
            if stop:
                db.close()
                return

    def _insert(self, db: sqlite3.Connection, op: _Add) -> None:
        message = op.message
        message_id = op.rows[0][0]  # the first row's sequence doubles as the message id
        db.execute(
            "INSERT INTO messages (id, body, properties, system_properties, enqueued, refs) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                message_id,
                message.body,
                json.dumps(message.properties),
                json.dumps(message.system_properties),
                message.enqueued_time,
                len(op.rows),
            ),
        )
        db.executemany(
            "INSERT INTO queue (seq, endpoint, priority, message_id, expires, route) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (seq, endpoint, priority, message_id, expires, route)
                for seq, endpoint, priority, expires, route in op.rows
            ],
        )

    # --- event loop side ---------------------------------------------------------------------------

    def add(self, message: Message, copies: Iterable[RoutedEndpoint]) -> Awaitable[None] | None:
        """Queue ``message`` for each copy; the result completes when it is committed (raises
        StoreError if it could not be)."""
        now = self.clock()
        rows = []
        for copy in copies:
            seq = self._next_seq
            self._next_seq += 1
            rows.append((seq, copy.endpoint.id, copy.priority, now + copy.time_to_live_secs, copy.route))
        if not rows:
            return None
        future: asyncio.Future[None] = self._loop.create_future()
        self._ops.put(_Add(rows, message, future))
        return future

    def _committed(self, adds: list[_Add]) -> None:
        for op in adds:
            for seq, endpoint_id, priority, expires, route in op.rows:
                endpoint = self._endpoint(endpoint_id)
                lane = endpoint.lanes.setdefault(priority, _Lane())
                lane.count += 1
                if not lane.unloaded and len(lane.loaded) < PAGE:
                    lane.loaded.append(Entry(seq, endpoint_id, priority, op.message, expires, route))
                    lane.loaded_to = seq
                else:
                    lane.unloaded = True
                if endpoint.waiter is not None:
                    endpoint.waiter.set()
            if op.future is not None and not op.future.done():
                op.future.set_result(None)

    def _fail(self, adds: list[_Add], exc: Exception) -> None:
        for op in adds:
            if op.future is not None and not op.future.done():
                op.future.set_exception(StoreError(f"the message could not be stored: {exc}"))

    def _page_in(self, endpoint_id: str, priority: int, lane: _Lane) -> None:
        rows = self._reader.execute(
            "SELECT q.seq, q.expires, q.route, m.body, m.properties, m.system_properties, m.enqueued "
            "FROM queue q JOIN messages m ON m.id = q.message_id "
            "WHERE q.endpoint = ? AND q.priority = ? AND q.seq > ? ORDER BY q.seq LIMIT ?",
            (endpoint_id, priority, lane.loaded_to, PAGE),
        ).fetchall()
        for seq, expires, route, body, props, sysprops, enqueued in rows:
            message = Message(
                body=body,
                properties=json.loads(props),
                system_properties=json.loads(sysprops),
                enqueued_time=enqueued,
            )
            lane.loaded.append(Entry(seq, endpoint_id, priority, message, expires, route))
            lane.loaded_to = seq
        if len(rows) < PAGE:
            lane.unloaded = False

    def _entries(self, endpoint_id: str):
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            return
        now = self.clock()
        for priority in endpoint.priorities():
            lane = endpoint.lanes[priority]
            index = 0
            while True:
                if index >= len(lane.loaded):
                    if not lane.unloaded:
                        break
                    self._page_in(endpoint_id, priority, lane)
                    if index >= len(lane.loaded):
                        break
                entry = lane.loaded[index]
                if entry.expires_at <= now:
                    self._drop_expired(lane, entry)
                    continue
                yield entry
                index += 1

    def _drop_expired(self, lane: _Lane, entry: Entry) -> None:
        lane.loaded.remove(entry)
        lane.count -= 1
        self.expired[entry.endpoint_id] = self.expired.get(entry.endpoint_id, 0) + 1
        self._ops.put(_delete_op(entry.sequence))

    def head(self, endpoint_id: str) -> Entry | None:
        return next(self._entries(endpoint_id), None)

    def next_unsent(self, endpoint_id: str, sent: set[int]) -> Entry | None:
        for entry in self._entries(endpoint_id):
            if entry.sequence not in sent:
                return entry
        return None

    def remove(self, entry: Entry) -> None:
        endpoint = self._endpoints.get(entry.endpoint_id)
        lane = endpoint.lanes.get(entry.priority) if endpoint else None
        if lane is None:
            return
        if lane.loaded and lane.loaded[0] is entry:
            lane.loaded.popleft()
        else:
            try:
                lane.loaded.remove(entry)
            except ValueError:
                return
        lane.count -= 1
        self._ops.put(_delete_op(entry.sequence))

    async def wait(self, endpoint_id: str, timeout: float | None = None) -> None:
        endpoint = self._endpoint(endpoint_id)
        if endpoint.waiter is None:
            endpoint.waiter = asyncio.Event()
        endpoint.waiter.clear()
        try:
            async with asyncio.timeout(timeout):
                await endpoint.waiter.wait()
        except TimeoutError:
            pass

    def depth(self, endpoint_id: str) -> dict[int, int]:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            return {}
        return {p: endpoint.lanes[p].count for p in endpoint.priorities()}

    def endpoints(self) -> list[str]:
        return [e for e, endpoint in self._endpoints.items() if endpoint.priorities()]

    def purge_expired(self) -> int:
        """Drop expired entries nobody is reading (a module that never connects): counted as
        ``ttl_expiry`` and deleted from the database to reclaim the space."""
        now = self.clock()
        purged = 0
        for endpoint_id, endpoint in self._endpoints.items():
            for priority, lane in endpoint.lanes.items():
                for entry in [e for e in lane.loaded if e.expires_at <= now]:
                    self._drop_expired(lane, entry)
                    purged += 1
                if lane.unloaded:
                    (beyond,) = self._reader.execute(
                        "SELECT count(*) FROM queue "
                        "WHERE endpoint = ? AND priority = ? AND seq > ? AND expires <= ?",
                        (endpoint_id, priority, lane.loaded_to, now),
                    ).fetchone()
                    lane.count -= beyond
                    purged += beyond
                    if beyond:
                        self.expired[endpoint_id] = self.expired.get(endpoint_id, 0) + beyond
        self._ops.put(_purge_op(now))
        return purged

    def close(self) -> None:
        """Commit what is pending and stop the writer."""
        self._ops.put(None)
        self._writer.join(timeout=10)
        self._reader.close()


def _delete_op(seq: int) -> Callable[[sqlite3.Connection], None]:
    def delete(db: sqlite3.Connection) -> None:
        row = db.execute("SELECT message_id FROM queue WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return
        db.execute("DELETE FROM queue WHERE seq = ?", (seq,))
        db.execute("UPDATE messages SET refs = refs - 1 WHERE id = ?", (row[0],))
        db.execute("DELETE FROM messages WHERE id = ? AND refs <= 0", (row[0],))

    return delete


def _purge_op(now: float) -> Callable[[sqlite3.Connection], None]:
    def purge(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE messages SET refs = refs - "
            "(SELECT count(*) FROM queue q WHERE q.message_id = messages.id AND q.expires <= ?) "
            "WHERE id IN (SELECT message_id FROM queue WHERE expires <= ?)",
            (now, now),
        )
        db.execute("DELETE FROM queue WHERE expires <= ?", (now,))
        db.execute("DELETE FROM messages WHERE refs <= 0")

    return purge
