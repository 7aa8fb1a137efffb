"""Durable endpoint queues in SQLite: what makes at-least-once survive a restart or a ``kill -9``.

- WAL mode, group commit: every add (and removal) is queued, and once per event-loop iteration all
  that piled up is committed in one transaction, after which the adds' futures resolve. A publish is
  acknowledged only after its future resolves, i.e. after the commit; ``synchronous=NORMAL`` in WAL
  mode keeps every commit through a process crash (a power cut may lose the last few). Committing
  from the loop measured faster than a writer thread here (no hand-off, no contention for the GIL).
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
import sqlite3
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
"""Entries read from the database at a time when a queue drains past what is in memory."""
IN_MEMORY = 4096
"""Newly committed entries per (endpoint, priority) kept in memory; beyond that they wait in the
database (a queue that falls behind under load need not read back what it just wrote)."""

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


@dataclass(frozen=True, slots=True)
class _Delete:
    seq: int
    message_id: int
    copies: int


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
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        self._endpoints: dict[str, _Endpoint] = {}
        self._next_seq = 1 + (self._db.execute("SELECT coalesce(max(seq), 0) FROM queue").fetchone()[0])
        self._next_message = 1 + (self._db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0])
        for endpoint, priority, count in self._db.execute(
            "SELECT endpoint, priority, count(*) FROM queue GROUP BY endpoint, priority"
        ):
            lane = self._endpoint(endpoint).lanes.setdefault(priority, _Lane())
            lane.count, lane.unloaded = count, True
        self._pending: list[Any] = []
        self._flush_scheduled = False

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def _endpoint(self, endpoint_id: str) -> _Endpoint:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            endpoint = self._endpoints[endpoint_id] = _Endpoint()
        return endpoint

    # --- group commit ----------------------------------------------------------------------------

    def _enqueue(self, op: Any) -> None:
        self._pending.append(op)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Commit everything queued during this loop iteration in one transaction."""
        self._flush_scheduled = False
        ops, self._pending = self._pending, []
        if not ops:
            return
        db = self._db
        adds = [op for op in ops if isinstance(op, _Add)]
        single: list[tuple[int]] = []  # (seq,) of entries whose body no other endpoint shares
        shared: list[tuple[int, int]] = []  # (seq, message id)
        purges = []
        for op in ops:
            if isinstance(op, _Delete):
                if op.copies == 1:
                    single.append((op.seq,))
                else:
                    shared.append((op.seq, op.message_id))
            elif not isinstance(op, _Add):
                purges.append(op)
        try:
            db.execute("BEGIN")
            if adds:
                db.executemany(
                    "INSERT INTO messages (id, body, properties, system_properties, enqueued, refs) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            op.rows[0][0],
                            op.message.body,
                            json.dumps(op.message.properties),
                            json.dumps(op.message.system_properties),
                            op.message.enqueued_time,
                            len(op.rows),
                        )
                        for op in adds
                    ],
                )
                db.executemany(
                    "INSERT INTO queue (seq, endpoint, priority, message_id, expires, route) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(*row[:3], op.rows[0][0], *row[3:]) for op in adds for row in op.rows],
                )
            if single:
                db.executemany("DELETE FROM queue WHERE seq = ?", single)
                db.executemany("DELETE FROM messages WHERE id = ?", single)
            for seq, message_id in shared:
                if db.execute("DELETE FROM queue WHERE seq = ?", (seq,)).rowcount:
                    db.execute("UPDATE messages SET refs = refs - 1 WHERE id = ?", (message_id,))
                    db.execute("DELETE FROM messages WHERE id = ? AND refs <= 0", (message_id,))
            for purge in purges:
                purge(db)
            db.execute("COMMIT")
        except Exception as exc:  # disk full, I/O error: refuse these messages, keep serving
            log.error("the store could not commit %d operations: %s", len(ops), exc)
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._fail(adds, exc)
        else:
            if adds:
                self._committed(adds)

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
        self._enqueue(_Add(rows, message, future))
        return future

    def _committed(self, adds: list[_Add]) -> None:
        for op in adds:
            for seq, endpoint_id, priority, expires, route in op.rows:
                endpoint = self._endpoint(endpoint_id)
                lane = endpoint.lanes.setdefault(priority, _Lane())
                lane.count += 1
                if not lane.unloaded and len(lane.loaded) < IN_MEMORY:
                    lane.loaded.append(
                        Entry(
                            seq,
                            endpoint_id,
                            priority,
                            op.message,
                            expires,
                            route,
                            0,
                            op.rows[0][0],
                            len(op.rows),
                        )
                    )
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
        rows = self._db.execute(
            "SELECT q.seq, q.expires, q.route, m.body, m.properties, m.system_properties, m.enqueued, "
            "m.id, m.refs "
            "FROM queue q JOIN messages m ON m.id = q.message_id "
            "WHERE q.endpoint = ? AND q.priority = ? AND q.seq > ? ORDER BY q.seq LIMIT ?",
            (endpoint_id, priority, lane.loaded_to, PAGE),
        ).fetchall()
        for seq, expires, route, body, props, sysprops, enqueued, message_id, refs in rows:
            message = Message(
                body=body,
                properties=json.loads(props),
                system_properties=json.loads(sysprops),
                enqueued_time=enqueued,
            )
            lane.loaded.append(
                Entry(seq, endpoint_id, priority, message, expires, route, 0, message_id, refs)
            )
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
        self._enqueue(_Delete(entry.sequence, entry.message_id, entry.copies))

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
        self._enqueue(_Delete(entry.sequence, entry.message_id, entry.copies))

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
                    (beyond,) = self._db.execute(
                        "SELECT count(*) FROM queue "
                        "WHERE endpoint = ? AND priority = ? AND seq > ? AND expires <= ?",
                        (endpoint_id, priority, lane.loaded_to, now),
                    ).fetchone()
                    lane.count -= beyond
                    purged += beyond
                    if beyond:
                        self.expired[endpoint_id] = self.expired.get(endpoint_id, 0) + beyond
        self._enqueue(_purge_op(now))
        return purged

    def close(self) -> None:
        """Commit what is pending and close the database."""
        self._flush()
        self._db.close()


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
