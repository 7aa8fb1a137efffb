"""Files of the data directory that can be found damaged: how a loader says so, and how one is moved
aside when the user asks for a fresh start (``--reset-damaged``).

A damaged file is never replaced silently: a fresh ``identities.json`` means new keys, and every
module's connection string stops working; a fresh ``twins.json`` loses what was set from the cloud
side. So the hub refuses to start and names the file, what it holds and what the user can do; with
``--reset-damaged`` it moves the file aside as ``NAME.corrupt-<time>`` and says what was lost.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path


class DamagedFile(Exception):
    """``path`` cannot be read as what it should be; ``holds`` says what would be lost without it;
    ``aside`` is what a fresh start moves away (the file, or the directory it only makes sense in)."""

    def __init__(self, path: Path, reason: str, holds: str, aside: Path | None = None) -> None:
        super().__init__(f"{path} is damaged ({reason})")
        self.path = path
        self.reason = reason
        self.holds = holds
        self.aside = aside or path


def set_aside(path: Path) -> Path:
    """Move a damaged file (and its SQLite companions) or directory aside, as ``NAME.corrupt-<UTC time>``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))
    return target
