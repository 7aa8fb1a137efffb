"""Queues left by edgehub-emu's earlier store format (``store.sqlite``) move into the log on start.

Nothing is dropped silently: every queued copy that has not expired is added to the log with its
endpoint, priority, route and expiry, the old file is renamed ``store.sqlite.migrated``, and the log
says how many messages moved (and how many had expired meanwhile).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from pathlib import Path

from ..data_files import DamagedFile
from ..routing import Message, RoutedEndpoint, endpoint_from_id
from .log import LogStore

log = logging.getLogger("edgehub_emu.store")


def _ignore(error: BaseException | None) -> None:
    """Migration commits synchronously; nobody waits for an acknowledgement."""


def migrate_sqlite(path: Path, store: LogStore) -> int:
    """Move the queues in ``path`` into ``store``; returns how many messages moved."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = db.execute(
            "SELECT q.endpoint, q.priority, q.expires, q.route, m.id, m.body, m.properties, "
            "m.system_properties, m.enqueued FROM queue q JOIN messages m ON m.id = q.message_id "
            "ORDER BY q.seq"
        ).fetchall()
        db.close()
    except sqlite3.Error as exc:
        raise DamagedFile(
            path,
            f"a store of an earlier edgehub-emu that cannot be read: {exc}",
            "the messages that were queued when that version stopped",
        ) from None
    now = store.clock()
    moved = expired = 0
    current: int | None = None
    message: Message | None = None
    copies: list[RoutedEndpoint] = []

    def add() -> None:
        nonlocal moved
        if message is not None and copies:
            store.add(message, copies, _ignore)
            moved += 1

    for endpoint_id, priority, expires, route, message_id, body, props, sysprops, enqueued in rows:
        if message_id != current:
            add()
            current, copies = message_id, []
            message = Message(
                body=body,
                properties=json.loads(props),
                system_properties=json.loads(sysprops),
                enqueued_time=enqueued,
            )
        if expires <= now:
            expired += 1
            continue
        # (whole seconds, as every time-to-live is: the copy may live up to a second longer)
        remaining = math.ceil(expires - now)
        copies.append(RoutedEndpoint(endpoint_from_id(endpoint_id), priority, remaining, route))
    add()
    store.flush()
    path.rename(path.with_name(path.name + ".migrated"))
    log.warning(
        "moved %d queued messages from %s (the earlier store format) into %s; %d copies had expired; the "
        "old file is now %s.migrated",
        moved,
        path,
        store.directory,
        expired,
        path.name,
    )
    return moved
