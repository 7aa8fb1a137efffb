"""The local "cloud": what reaches ``$upstream`` when no bridge is configured is recorded here.

With a path, records are committed to SQLite before ``send`` returns (so the ``$upstream`` queue lets
go of a message only once the capture holds it) and are kept across restarts, within a retention by
count and by age. Without a path they are kept in memory. Tests, the management API and the CLI read
them (``messages``, ``wait_for``). Each record keeps the body, properties, system properties, enqueue
time and the sender.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data_files import DamagedFile
from ..routing import Message

DEFAULT_KEEP_COUNT = 100_000
DEFAULT_KEEP_SECONDS = 7 * 24 * 3600
_PRUNE_EVERY = 1000
_RECENT = 10_000

_HOLDS = "the record of what went upstream (monitor, /upstream/messages); nothing still queued"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS upstream (
    seq INTEGER PRIMARY KEY,
    received REAL NOT NULL,
    enqueued REAL NOT NULL,
    body BLOB NOT NULL,
    properties TEXT NOT NULL,
    system_properties TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class UpstreamRecord:
    sequence: int
    message: Message
    received_at: float

    @property
    def origin(self) -> str:
        sys = self.message.system_properties
        module = sys.get("connectionModuleId")
        device = sys.get("connectionDeviceId") or ""
        return f"{device}/{module}" if module else device


class UpstreamCapture:
    """Records of what reached ``$upstream``; durable when given a path."""

    def __init__(
        self,
        path: Path | None = None,
        keep_count: int = DEFAULT_KEEP_COUNT,
        keep_seconds: float = DEFAULT_KEEP_SECONDS,
    ) -> None:
        self.keep_count = keep_count
        self.keep_seconds = keep_seconds
        self._recent: deque[UpstreamRecord] = deque(maxlen=min(keep_count, _RECENT))
        self._sequence = 0
        self._changed = asyncio.Condition()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self.prune()
                (self._sequence,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM upstream").fetchone()
                rows = self._db.execute(
                    "SELECT * FROM (SELECT * FROM upstream ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                    (self._recent.maxlen,),
                ).fetchall()
                self._recent.extend(_record(row) for row in rows)
            except sqlite3.DatabaseError as exc:
                self._db.close()
                raise DamagedFile(path, f"not an SQLite database the hub can read: {exc}", _HOLDS) from None

    @property
    def last_sequence(self) -> int:
        return self._sequence

    async def send(self, message: Message) -> None:
        """The upstream sink's interface: returns once the message is recorded (committed)."""
        self._sequence += 1
        record = UpstreamRecord(self._sequence, message, time.time())
        if self._db is not None:
            self._db.execute(
                "INSERT INTO upstream (seq, received, enqueued, body, properties, system_properties) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.sequence,
                    record.received_at,
                    message.enqueued_time,
                    message.body,
                    json.dumps(message.properties),
                    json.dumps(message.system_properties),
                ),
            )
            if record.sequence % _PRUNE_EVERY == 0:
                self.prune()
        self._recent.append(record)
        async with self._changed:
            self._changed.notify_all()

    def prune(self) -> None:
        """Apply the retention: at most ``keep_count`` records, none older than ``keep_seconds``."""
        if self._db is None:
            return
        self._db.execute("DELETE FROM upstream WHERE received < ?", (time.time() - self.keep_seconds,))
        self._db.execute(
            "DELETE FROM upstream WHERE seq <= (SELECT max(seq) FROM upstream) - ?", (self.keep_count,)
        )

    def messages(self, since: int = 0, limit: int = 1000) -> list[UpstreamRecord]:
        """Records after sequence ``since``, oldest first."""
        if self._recent and since >= self._recent[0].sequence - 1:
            return [r for r in self._recent if r.sequence > since][:limit]
        if self._db is None:
            return [r for r in self._recent if r.sequence > since][:limit]
        rows = self._db.execute(
            "SELECT * FROM upstream WHERE seq > ? ORDER BY seq LIMIT ?", (since, limit)
        ).fetchall()
        return [_record(row) for row in rows]

    async def wait_for(
        self,
        predicate: Callable[[UpstreamRecord], bool] = lambda r: True,
        timeout: float = 10,
        since: int = 0,
    ) -> UpstreamRecord:
        """The first record after ``since`` that satisfies ``predicate``; TimeoutError if none comes."""

        def found() -> UpstreamRecord | None:
            return next((r for r in self._recent if r.sequence > since and predicate(r)), None)

        async def wait() -> UpstreamRecord:
            async with self._changed:
                while (record := found()) is None:
                    await self._changed.wait()
                return record

        async with asyncio.timeout(timeout):
            return await wait()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _record(row: tuple) -> UpstreamRecord:
    seq, received, enqueued, body, properties, system_properties = row
    message = Message(
        body=body,
        properties=json.loads(properties),
        system_properties=json.loads(system_properties),
        enqueued_time=enqueued,
    )
    return UpstreamRecord(seq, message, received)
