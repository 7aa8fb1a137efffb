"""Durable endpoint queues: one append-only message log with a checkpoint per lane, as edgeHub keeps them.

What makes at-least-once survive a restart or a ``kill -9``, and what it costs per message:

- **One record per commit.** Every message added during one event-loop iteration goes to the file in
  one ``write`` (group commit), as one record: the messages (body, properties, and the copies: lane,
  expiry, route; each message once, whatever the number of endpoints it routes to), pickled together,
  behind a length and a CRC. Then the publishers' acknowledgements go out. A written record is in
  the operating system's cache and survives the process being killed; ``fsync`` runs about once a
  second, against power loss (what SQLite's ``synchronous=NORMAL`` gives too).
- **An acknowledgement is an offset in memory.** A lane's checkpoint is the sequence before its
  oldest entry not yet done; checkpoints are written every 100 ms and at close. After a crash a few
  delivered messages may come again; nothing acknowledged to a publisher is lost.
- **Slow file work is off the event loop.** The checkpoints file, deleting finished segments and
  ``fsync`` are done by one file thread, in the order they were asked for: a finished segment goes
  after the checkpoints that passed it (only entries every lane is done with are in it, so a crash in
  between brings back nothing but duplicates).
- **Segments** (8 MiB) are deleted whole once every lane's checkpoint has passed their entries (the
  time-to-live purge moves checkpoints past expired entries), so disk space comes back as queues drain.
  A sealed segment gets an index beside it (per lane: sequence, offset, length, expiry), so a
  restart reads indexes, not records: a million waiting messages are ready in well under a second.
- **Memory stays flat with a backlog.** Per lane only a page of entries is held in memory; the rest
  is read from the log as the lane drains.

Files, in ``DIR``: ``lanes.json`` (lane numbers), ``checkpoints.json``, ``NNNNNNNN.log`` and, for
sealed segments, ``NNNNNNNN.idx``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import struct
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final
from zlib import crc32

from ..data_files import DamagedFile, failure_reason, write_json
from ..routing import Message, RoutedEndpoint
from .base import Entry, Lane, Lanes, QueueInfo, Stored, StoreError, earliest
from .file_worker import FileWorker, sync_and_close

log = logging.getLogger("edgehub_emu.store")

SEGMENT_BYTES = 8 * 1024 * 1024
"""A segment is sealed (and a new one started) once it is this large."""
ROLL_WHEN_DONE_BYTES: Final = 1024 * 1024
"""An active segment this large whose entries are all done is dropped for a fresh one."""
IN_MEMORY = 4096
"""Newly committed entries per lane kept in memory; beyond that they wait in the log. (Not ``Final``
like the other constants here: a test makes it small.)"""
PAGE: Final = 512
"""Entries read from the log at a time when a lane drains past what is in memory."""
RECORD_MESSAGES: Final = 256
"""At most this many messages of one commit go into one record."""

CHECKPOINT_INTERVAL: Final = 0.1
FSYNC_INTERVAL: Final = 1.0
_HEADER: Final = struct.Struct("<II")  # payload length, CRC-32 of the payload


class _LaneIndex:
    """Where one lane's entries are in one segment, in sequence order."""

    __slots__ = ("_lowest", "expiries", "lengths", "offsets", "sequences")

    def __init__(self) -> None:
        self.sequences = array("q")
        self.offsets = array("q")
        self.lengths = array("q")
        self.expiries = array("d")
        self._lowest: tuple[int, float] | None = None  # (entries covered, their smallest expiry)

    def lowest_expiry(self, start: int = 0) -> float | None:
        """The smallest expiry of the entries from ``start`` on (None: there are none). The whole
        index's is kept and extended as entries are appended (they only ever are), so that asking
        again, as the status and the dashboard do, costs nothing for a sealed segment."""
        expiries = self.expiries
        if start:
            return min(expiries[start:], default=None)
        count = len(expiries)
        known = self._lowest
        if known is not None and known[0] == count:
            return known[1]
        tail = expiries if known is None else expiries[known[0] :]
        lowest = min(tail, default=None)
        if known is not None and (lowest is None or known[1] < lowest):
            lowest = known[1]
        if lowest is not None:
            self._lowest = (count, lowest)
        return lowest

    def dump(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (
            self.sequences.tobytes(),
            self.offsets.tobytes(),
            self.lengths.tobytes(),
            self.expiries.tobytes(),
        )

    @classmethod
    def load(cls, data: tuple[bytes, bytes, bytes, bytes]) -> _LaneIndex:
        index = cls()
        index.sequences.frombytes(data[0])
        index.offsets.frombytes(data[1])
        index.lengths.frombytes(data[2])
        index.expiries.frombytes(data[3])
        return index


class _Segment:
    __slots__ = ("fd", "lanes", "number", "path", "sealed", "size")

    def __init__(self, directory: Path, number: int) -> None:
        self.number = number
        self.path = directory / f"{number:08d}.log"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.lanes: dict[int, _LaneIndex] = {}
        self.sealed = False

    @property
    def index_path(self) -> Path:
        return self.path.with_suffix(".idx")

    def max_sequence(self, key: int) -> int:
        index = self.lanes.get(key)
        return index.sequences[-1] if index is not None and index.sequences else 0


def _close_and_delete(fd: int, paths: tuple[Path, ...]) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _nobody(endpoint_id: str) -> None:
    """Until the hub wires delivery in, nobody listens."""


class LogStore:
    """Endpoint queues in ``directory``. Create it inside the running event loop; ``close()`` at the end."""

    def __init__(
        self,
        directory: Path,
        clock: Callable[[], float] = time.time,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.directory = directory
        self.clock = clock
        self.segment_bytes = segment_bytes
        self.ready: Callable[[str], None] = _nobody
        self._loop = asyncio.get_running_loop()
        directory.mkdir(parents=True, exist_ok=True)
        self._lanes = Lanes()
        self._by_key: dict[int, Lane] = {}
        self._segments: dict[int, _Segment] = {}
        self._records: list[tuple[Any, ...]] = []  # what the next group commit writes, as one record
        self._adds: list[tuple[int, Message, list[tuple[Lane, float, str]]]] = []
        self._callbacks: list[Stored] = []
        self._flush_scheduled = False
        self._checkpoints_dirty = False
        self._unsynced = False
        self._failing = False
        self._closed = False
        self._next_sequence = 1
        self._files = FileWorker()
        self._files.start()
        try:
            self._open()
        except BaseException:
            self._files.stop()
            for segment in self._segments.values():
                os.close(segment.fd)
            raise
        self._tick = self._loop.call_later(CHECKPOINT_INTERVAL, self._on_tick)
        self._last_fsync = time.monotonic()

    # --- opening ----------------------------------------------------------------------------------

    def _open(self) -> None:
        for key, (endpoint_id, priority) in enumerate(_read_lanes(self.directory)):
            lane = self._lanes.lane(endpoint_id, priority, key)
            self._by_key[key] = lane
        checkpoints = _read_checkpoints(self.directory)
        numbers = sorted(int(p.stem) for p in self.directory.glob("*.log") if p.stem.isdigit())
        for position, number in enumerate(numbers):
            segment = _Segment(self.directory, number)
            self._segments[number] = segment
            if segment.index_path.exists() and self._load_index(segment):
                segment.sealed = True
            else:
                last = position == len(numbers) - 1
                self._scan(segment, truncate=last)
                if not last:
                    self._seal(segment)
        if not numbers or self._active().sealed:
            number = max(numbers, default=0) + 1
            self._segments[number] = _Segment(self.directory, number)
        highest = max((s.max_sequence(k) for s in self._segments.values() for k in s.lanes), default=0)
        self._next_sequence = max([highest, *checkpoints.values()], default=0) + 1
        for key, lane in self._by_key.items():
            checkpoint = checkpoints.get(key, 0)
            lane.last_sequence = checkpoint
            for segment in self._segments.values():
                index = segment.lanes.get(key)
                if index is None or not index.sequences:
                    continue
                start = bisect_right(index.sequences, checkpoint)
                waiting = len(index.sequences) - start
                if waiting and lane.spill is None:
                    lane.spill = (segment.number, start)
                lane.count += waiting
                lane.last_sequence = max(lane.last_sequence, index.sequences[-1])
        self._delete_done_segments(self._checkpoints())
        self._files.wait()  # open returns with the space of finished segments given back

    def _load_index(self, segment: _Segment) -> bool:
        """A sealed segment's index; a damaged one is only a copy of what the segment holds, so the
        segment is read again instead (False), and the log says so."""
        try:
            segment.lanes = _read_index(segment.index_path)
        except Exception as exc:  # whatever unpickling a damaged file raises
            log.warning("%s is damaged (%s): rebuilt from its segment", segment.index_path, exc)
            segment.lanes = {}
            return False
        return True

    def _scan(self, segment: _Segment, truncate: bool) -> None:
        """Read a segment that has no index (the one that was being written, or one whose index was
        damaged): every whole record. A record cut short at the end (a crash in the middle of a write,
        never acknowledged) is cut off. A damaged record is skipped, the records after it are kept, and
        the log says which messages could not be read."""
        with open(segment.path, "rb") as f:
            data = f.read()
        scan = _index_records(data, segment.lanes)
        for damage in scan.damaged:
            log.error("%s: %s", segment.path, damage)
        if scan.end < len(data):
            log.warning(
                "%s: %d bytes at its end are not a whole record (a write cut short by a crash): dropped; "
                "they were never acknowledged",
                segment.path,
                len(data) - scan.end,
            )
            if truncate:
                os.ftruncate(segment.fd, scan.end)
                segment.size = scan.end

    # --- group commit -----------------------------------------------------------------------------

    def _lane(self, endpoint_id: str, priority: int) -> Lane:
        lane = self._lanes.find(endpoint_id, priority)
        if lane is None:  # a new lane: numbered, and the number written down before any record uses it
            key = len(self._by_key)
            known = [[self._by_key[k].endpoint_id, self._by_key[k].priority] for k in self._by_key]
            write_json(self.directory / "lanes.json", {"lanes": [*known, [endpoint_id, priority]]})
            lane = self._lanes.lane(endpoint_id, priority, key)
            self._by_key[key] = lane
        return lane

    def add(self, message: Message, copies: Sequence[RoutedEndpoint], stored: Stored) -> bool:
        if self._closed:
            raise StoreError("the store is closed")
        sequence = self._next_sequence
        self._next_sequence = sequence + 1
        now = self.clock()
        lanes = self._lanes.by_key
        placed = []
        keyed = []
        for c in copies:
            lane = lanes.get((c.endpoint.id, c.priority))
            if lane is None:
                try:
                    lane = self._lane(c.endpoint.id, c.priority)
                except OSError as exc:  # (disk full): refused like a failed commit, said once
                    self._failed(exc, self.directory / "lanes.json")
                    self._loop.call_soon(
                        stored, StoreError(f"the message could not be stored: {failure_reason(exc)}")
                    )
                    return False
            expiry = now + c.time_to_live_secs
            placed.append((lane, expiry, c.route))
            keyed.append((lane.key, expiry, c.route))
        self._records.append(
            (
                sequence,
                message.enqueued_time,
                keyed,
                message.body,
                message.properties,
                message.system_properties,
            )
        )
        self._adds.append((sequence, message, placed))

        self._callbacks.append(stored)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return False

    def flush(self) -> None:
        """Commit what was added now, rather than at the end of this event-loop iteration."""
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._records:
            return
        records, self._records = self._records, []
        adds, self._adds = self._adds, []
        callbacks, self._callbacks = self._callbacks, []
        segment = self._active()
        start = segment.size
        # A record per RECORD_MESSAGES messages of the commit: pickling them together costs a tenth of
        # pickling each alone (the names and ids they share are written once), and the log is smaller;
        # bounded, so that reading one waiting message back never decodes a huge record.
        parts: list[bytes] = []
        spans: list[tuple[int, int]] = []  # (offset, length) of each record
        offset = start
        for first in range(0, len(records), RECORD_MESSAGES):
            payload = pickle.dumps(records[first : first + RECORD_MESSAGES], 5)
            parts.append(_HEADER.pack(len(payload), crc32(payload)))
            parts.append(payload)
            spans.append((offset, _HEADER.size + len(payload)))
            offset += _HEADER.size + len(payload)
        try:
            _write_all(segment.fd, b"".join(parts))
        except OSError as exc:
            self._refuse(segment, start, exc, callbacks)
            return
        self._writes_again()
        self._unsynced = True
        touched: dict[str, None] = {}
        for position, (sequence, message, placed) in enumerate(adds):
            at, length = spans[position // RECORD_MESSAGES]
            for lane, expiry, route in placed:
                index = segment.lanes.get(lane.key)
                if index is None:
                    index = segment.lanes[lane.key] = _LaneIndex()
                index.sequences.append(sequence)
                index.offsets.append(at)
                index.lengths.append(length)
                index.expiries.append(expiry)
                lane.count += 1
                lane.last_sequence = sequence
                if lane.spill is None:
                    if len(lane.ready) < IN_MEMORY:
                        lane.ready.append(
                            Entry(sequence, lane.endpoint_id, lane.priority, message, expiry, route, lane)
                        )
                    else:
                        lane.spill = (segment.number, len(index.sequences) - 1)
                touched[lane.endpoint_id] = None
        segment.size = offset
        for stored in callbacks:
            stored(None)
        for endpoint_id in touched:
            self.ready(endpoint_id)
        if segment.size >= self.segment_bytes:
            try:
                self._roll(segment)
            except OSError as exc:  # the segment stays the active one; rolled at a later commit
                self._failed(exc, self.directory)

    def _refuse(self, segment: _Segment, start: int, exc: OSError, callbacks: list[Stored]) -> None:
        """A write failed (disk full, an I/O error): cut what was half written, refuse these messages
        (their publishers get no acknowledgement), say so once until writes work again."""
        with contextlib.suppress(OSError):
            os.ftruncate(segment.fd, start)
        segment.size = start
        self._failed(exc, segment.path)
        error = StoreError(f"the message could not be stored: {failure_reason(exc)}")
        for stored in callbacks:
            stored(error)

    def _failed(self, exc: OSError, path: Path) -> None:
        """Say once (until a write works again) that the store cannot write, and why."""
        if not self._failing:
            self._failing = True
            log.error(
                "the store cannot write to %s (%s): messages are refused until it can",
                path,
                failure_reason(exc),
            )

    def _writes_again(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("the store writes again")

    def _active(self) -> _Segment:
        return self._segments[max(self._segments)]

    def _roll(self, segment: _Segment) -> None:
        """Start the next segment, then seal this one. In that order: a segment left unsealed (its index
        could not be written) is read again at the next start, while a sealed one that was still written
        to would hide its last records behind its index."""
        number = segment.number + 1
        self._segments[number] = _Segment(self.directory, number)
        self._seal(segment)

    def _seal(self, segment: _Segment) -> None:
        tmp = segment.index_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump({key: index.dump() for key, index in segment.lanes.items()}, f, 5)
        os.replace(tmp, segment.index_path)
        segment.sealed = True
        self._files.sync(segment.fd)

    # --- delivery side ----------------------------------------------------------------------------

    def take(self, endpoint_id: str) -> Entry | None:
        lanes = self._lanes.by_endpoint.get(endpoint_id)
        if not lanes:
            return None
        now = self.clock()
        for lane in lanes:
            ready = lane.ready
            while True:
                while not ready and lane.spill is not None:  # (a page can be all damaged records)
                    self._page_in(lane)
                if not ready:
                    break
                entry = ready.popleft()
                if entry.expires_at <= now:
                    lane.count -= 1
                    self._lanes.count_expired(endpoint_id)
                    self._checkpoints_dirty = True
                    continue
                lane.leased.append(entry)
                return entry
        return None

    def _page_in(self, lane: Lane) -> None:
        """Read the next page of a lane from the log."""
        assert lane.spill is not None
        number, index_at = lane.spill
        wanted = PAGE
        for segment_number in sorted(n for n in self._segments if n >= number):
            segment = self._segments[segment_number]
            index = segment.lanes.get(lane.key)
            start = index_at if segment_number == number else 0
            if index is None or start >= len(index.sequences):
                continue
            end = min(len(index.sequences), start + wanted)
            lane.ready.extend(self._read_entries(segment, index, start, end, lane))
            wanted -= end - start
            if wanted == 0:
                lane.spill = (
                    (segment_number, end) if end < len(index.sequences) else self._after(segment, lane)
                )
                return
        lane.spill = None

    def _after(self, segment: _Segment, lane: Lane) -> tuple[int, int] | None:
        """Where a lane continues after the end of its entries in ``segment``."""
        for number in sorted(n for n in self._segments if n > segment.number):
            index = self._segments[number].lanes.get(lane.key)
            if index is not None and len(index.sequences):
                return (number, 0)
        return None

    def _read_entries(
        self, segment: _Segment, index: _LaneIndex, start: int, end: int, lane: Lane
    ) -> list[Entry]:
        """Entries ``start``..``end`` of a lane's index in a segment, each record read and decoded once."""
        out: list[Entry] = []
        decoded: dict[int, tuple[Any, ...]] = {}
        decoded_at = -1
        for i in range(start, end):
            offset = index.offsets[i]
            if offset != decoded_at:
                decoded = self._read_record(segment, offset, index.lengths[i])
                decoded_at = offset
            found = decoded.get(index.sequences[i])
            if found is None:  # in a record damaged since it was written
                lane.count -= 1
                self._checkpoints_dirty = True
                continue
            sequence, enqueued, copies, body, properties, system_properties = found
            route = next((r for key, _, r in copies if key == lane.key), "")
            message = Message(
                body=body, properties=properties, system_properties=system_properties, enqueued_time=enqueued
            )
            out.append(
                Entry(sequence, lane.endpoint_id, lane.priority, message, index.expiries[i], route, lane)
            )
        return out

    def _read_record(self, segment: _Segment, offset: int, length: int) -> dict[int, tuple[Any, ...]]:
        """The messages of one record by sequence; none (and one error line) if it was damaged on disk
        after it was written."""
        raw = os.pread(segment.fd, length, offset)
        records = _record_at(raw, 0)
        if records is None:
            log.error(
                "%s: the record at byte %d is damaged: its messages are lost",
                segment.path,
                offset,
            )
            return {}
        return {m[0]: m for m in records}

    def ack(self, entry: Entry) -> None:
        lane = entry.lane
        if lane is None:
            return
        leased = lane.leased
        if leased and leased[0] is entry:  # Lane.unlease, inlined: one ack per message
            leased.popleft()
        elif not lane.unlease(entry):
            return
        lane.count -= 1
        self._checkpoints_dirty = True

    def release(self, entries: Iterable[Entry]) -> None:
        by_lane: dict[tuple[str, int], list[Entry]] = {}
        for entry in entries:
            by_lane.setdefault((entry.endpoint_id, entry.priority), []).append(entry)
        for (endpoint_id, priority), released in by_lane.items():  # the caller delivers them again
            lane = self._lanes.find(endpoint_id, priority)
            if lane is None:
                continue
            lane.put_back([e for e in released if lane.unlease(e)])

    def peek(self, endpoint_id: str, limit: int = 100) -> list[Entry]:
        out: list[Entry] = []
        for lane in self._lanes.by_endpoint.get(endpoint_id, ()):
            out.extend(lane.leased)
            out.extend(lane.ready)
            if lane.spill is not None and len(out) < limit:
                out.extend(self._peek_disk(lane, limit - len(out)))
        return out[:limit]

    def _peek_disk(self, lane: Lane, limit: int) -> list[Entry]:
        assert lane.spill is not None
        number, start = lane.spill
        out: list[Entry] = []
        for segment_number in sorted(n for n in self._segments if n >= number):
            segment = self._segments[segment_number]
            index = segment.lanes.get(lane.key)
            if index is None:
                continue
            first = start if segment_number == number else 0
            last = min(len(index.sequences), first + limit - len(out))
            out.extend(self._read_entries(segment, index, first, last, lane))
            if len(out) >= limit:
                return out
        return out

    # --- what waits ---------------------------------------------------------------------------------

    def depth(self, endpoint_id: str) -> dict[int, int]:
        return self._lanes.depth(endpoint_id)

    def endpoints(self) -> list[str]:
        return self._lanes.endpoints()

    def queues(self) -> list[QueueInfo]:
        now = self.clock()
        out = []
        for lane in self._lanes.all():
            if not lane.count:
                continue
            expiries = [
                e for e in (earliest([*lane.leased, *lane.ready], now), self._disk_expiry(lane, now)) if e
            ]
            out.append(QueueInfo(lane.endpoint_id, lane.priority, lane.count, min(expiries, default=None)))
        return out

    def _disk_expiry(self, lane: Lane, now: float) -> float | None:
        """The soonest expiry still ahead among a lane's entries on disk, from each segment's smallest
        (kept per index; ``min`` over an array runs in C). A filtered walk over every entry in Python
        took a tenth of a second for a million waiting entries, on the event loop, each time the
        status, the dashboard or the start-up banner asked."""
        if lane.spill is None:
            return None
        number, start = lane.spill
        soonest: float | None = None
        for segment_number, segment in self._segments.items():
            index = segment.lanes.get(lane.key)
            if segment_number < number or index is None:
                continue
            first = index.lowest_expiry(start if segment_number == number else 0)
            if first is not None and first <= now:  # expired entries not yet purged: skip those
                values = index.expiries[start:] if segment_number == number else index.expiries
                first = min((v for v in values if v > now), default=None)
            if first is not None and (soonest is None or first < soonest):
                soonest = first
        return soonest

    def expired_counts(self) -> dict[str, int]:
        return dict(self._lanes.expired)

    def purge_expired(self) -> int:
        """Drop expired entries nobody is reading (a module that never connects): counted as
        ``ttl_expiry``; their segments can then go."""
        now = self.clock()
        purged = 0
        for lane in self._lanes.all():
            keep = [e for e in lane.ready if e.expires_at > now]
            dropped = len(lane.ready) - len(keep)
            if dropped:
                lane.ready.clear()
                lane.ready.extend(keep)
            if not lane.ready and lane.spill is not None:
                dropped += self._skip_expired_on_disk(lane, now)
            if dropped:
                lane.count -= dropped
                self._lanes.count_expired(lane.endpoint_id, dropped)
                self._checkpoints_dirty = True
                purged += dropped
        return purged

    def _skip_expired_on_disk(self, lane: Lane, now: float) -> int:
        """Move a lane's place in the log past the expired entries at its head, without reading them."""
        skipped = 0
        while lane.spill is not None:
            number, start = lane.spill
            segment = self._segments.get(number)
            index = segment.lanes.get(lane.key) if segment is not None else None
            if segment is None or index is None:
                lane.spill = None
                break
            i = start
            while i < len(index.sequences) and index.expiries[i] <= now:
                i += 1
            skipped += i - start
            if i < len(index.sequences):
                lane.spill = (number, i)
                break
            lane.spill = self._after(segment, lane)
        return skipped

    # --- checkpoints and segments -----------------------------------------------------------------

    def _checkpoint(self, lane: Lane) -> int:
        """The sequence before the lane's oldest entry that is not done."""
        firsts = []
        if lane.leased:
            firsts.append(min(e.sequence for e in lane.leased))
        if lane.ready:
            firsts.append(lane.ready[0].sequence)
        if lane.spill is not None:
            number, i = lane.spill
            firsts.append(self._segments[number].lanes[lane.key].sequences[i])
        return min(firsts) - 1 if firsts else lane.last_sequence

    def _on_tick(self) -> None:
        if self._closed:
            return
        if self._checkpoints_dirty:
            self._checkpoints_dirty = False
            checkpoints = self._checkpoints()
            self._files.submit(partial(self._save_checkpoints, checkpoints))
            self._delete_done_segments(checkpoints)
        if self._unsynced and time.monotonic() - self._last_fsync >= FSYNC_INTERVAL:
            self._unsynced = False
            self._last_fsync = time.monotonic()
            self._files.sync(self._active().fd)
        self._tick = self._loop.call_later(CHECKPOINT_INTERVAL, self._on_tick)

    def _checkpoints(self) -> dict[int, int]:
        return {key: self._checkpoint(lane) for key, lane in self._by_key.items()}

    def _save_checkpoints(self, checkpoints: dict[int, int]) -> None:
        """On the file worker. A failed write (disk full) is tried again at the next tick."""
        try:
            _write_checkpoints(self.directory, checkpoints)
        except OSError as exc:
            with contextlib.suppress(RuntimeError):  # the loop is closed: close() writes them again
                self._loop.call_soon_threadsafe(self._checkpoints_not_saved, exc)

    def _checkpoints_not_saved(self, exc: OSError) -> None:
        self._checkpoints_dirty = True
        self._failed(exc, self.directory / "checkpoints.json")

    def _delete_done_segments(self, checkpoints: dict[int, int]) -> None:
        """Segments whose entries every lane is past go whole; so does a large active one that is done."""
        active = self._active()
        for segment in list(self._segments.values()):
            if any(segment.max_sequence(key) > checkpoints.get(key, 0) for key in segment.lanes):
                continue
            if segment is active:
                if segment.size < ROLL_WHEN_DONE_BYTES:
                    continue
                self._segments[segment.number + 1] = _Segment(self.directory, segment.number + 1)
            self._remove(segment)

    def _remove(self, segment: _Segment) -> None:
        """Forget the segment now; its file goes on the file worker, after the checkpoints asked before."""
        del self._segments[segment.number]
        self._files.submit(partial(_close_and_delete, segment.fd, (segment.path, segment.index_path)))

    def close(self) -> None:
        """Write what is pending and the checkpoints, flush to disk, and close the files."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        self._tick.cancel()
        self._files.stop()  # what it was asked to do is done first
        try:
            _write_checkpoints(self.directory, self._checkpoints())
        except OSError as exc:
            log.error("the store could not save its checkpoints: %s", exc)
        sync_and_close(os.dup(self._active().fd))
        for segment in self._segments.values():
            os.close(segment.fd)
        self._segments.clear()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_json(path: Path, default: Any, shape: type, holds: str, aside: Path | None = None) -> Any:
    """A JSON file of the log, or ``default`` when there is none; one that cannot be read as ``shape`` is
    a ``DamagedFile`` (``aside`` is what a fresh start moves away: the file, or the whole log)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedFile(path, f"not JSON: {exc}", holds, aside) from None
    if not isinstance(value, shape):
        raise DamagedFile(path, f"not a JSON {shape.__name__}", holds, aside)
    return value


def _read_lanes(directory: Path) -> list[tuple[str, int]]:
    """``lanes.json``: which endpoint and priority each lane number of the records stands for. Without
    it no record can be placed, so a fresh start sets the whole log aside."""
    path = directory / "lanes.json"
    holds = "which queue each waiting message belongs to (a fresh start sets every queued message aside)"
    lanes = _read_json(path, {"lanes": []}, dict, holds, directory).get("lanes")
    if not isinstance(lanes, list) or not all(
        isinstance(lane, list) and len(lane) == 2 and isinstance(lane[0], str) and isinstance(lane[1], int)
        for lane in lanes
    ):
        raise DamagedFile(path, "its lanes are not [endpoint, priority] pairs", holds, directory)
    return [(endpoint_id, priority) for endpoint_id, priority in lanes]


def _read_checkpoints(directory: Path) -> dict[int, int]:
    """``checkpoints.json``: how far each lane was delivered. A fresh start without it delivers what
    is still in the log again (at-least-once: duplicates, nothing lost)."""
    path = directory / "checkpoints.json"
    holds = "how far each queue was delivered (without it, what is still in the log is delivered again)"
    raw = _read_json(path, {}, dict, holds)
    try:
        return {int(k): int(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DamagedFile(path, "its checkpoints are not numbers", holds) from None


def _write_checkpoints(directory: Path, checkpoints: dict[int, int]) -> None:
    write_json(directory / "checkpoints.json", {str(key): value for key, value in checkpoints.items()})


def _read_index(path: Path) -> dict[int, _LaneIndex]:
    with open(path, "rb") as f:
        return {key: _LaneIndex.load(value) for key, value in pickle.load(f).items()}


def read_queues(directory: Path, now: float | None = None) -> list[QueueInfo]:
    """What waits in the log at ``directory``, read without changing anything (``edgehub-emu status``
    with no hub running): per lane, the entries not yet done and not expired, and the next expiry."""
    current = time.time() if now is None else now
    lanes = _read_lanes(directory)
    checkpoints = _read_checkpoints(directory)
    waiting: dict[int, tuple[int, float]] = {}  # lane -> (entries waiting, the soonest expiry)
    for path in sorted(directory.glob("*.log")):
        try:
            indexes = _read_index(path.with_suffix(".idx"))
        except Exception:  # none (the segment being written), or damaged: read the segment itself
            indexes = _scan_read_only(path)
        for key, index in indexes.items():
            start = bisect_right(index.sequences, checkpoints.get(key, 0))
            expiries = index.expiries[start:]
            soonest = min(expiries, default=None)  # (in C; only a queue with expired entries is walked)
            count = len(expiries)
            if soonest is not None and soonest <= current:
                ahead = [e for e in expiries if e > current]
                soonest, count = min(ahead, default=None), len(ahead)
            if soonest is None:
                continue
            before = waiting.get(key)
            if before is not None:
                count, soonest = count + before[0], min(soonest, before[1])
            waiting[key] = (count, soonest)
    return [
        QueueInfo(lanes[key][0], lanes[key][1], count, soonest)
        for key, (count, soonest) in sorted(waiting.items())
        if key < len(lanes)
    ]


def _scan_read_only(path: Path) -> dict[int, _LaneIndex]:
    indexes: dict[int, _LaneIndex] = {}
    _index_records(path.read_bytes(), indexes)
    return indexes


class _Scan:
    """What reading a segment's records found: where the whole records end, and the damage skipped."""

    __slots__ = ("damaged", "end")

    def __init__(self) -> None:
        self.end = 0
        self.damaged: list[str] = []


def _record_at(data: bytes, offset: int) -> list[tuple[Any, ...]] | None:
    """The messages of the record at ``offset``, or None if no whole, intact record starts there."""
    if offset + _HEADER.size > len(data):
        return None
    length, checksum = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if start + length > len(data) or data[start : start + 1] != b"\x80":  # (a pickle starts so)
        return None
    payload = data[start : start + length]
    if crc32(payload) != checksum:
        return None
    try:
        records: list[tuple[Any, ...]] = pickle.loads(payload)
    except Exception:
        return None
    return records


def _next_intact(data: bytes, after: int) -> int | None:
    """Where the next intact record after ``after`` starts: a pickle's first byte behind a header whose
    length fits and whose CRC matches (a false match is all but impossible)."""
    mark = data.find(b"\x80", after + 1 + _HEADER.size)
    while mark != -1:
        if _record_at(data, mark - _HEADER.size) is not None:
            return mark - _HEADER.size
        mark = data.find(b"\x80", mark + 1)
    return None


def _index_records(data: bytes, indexes: dict[int, _LaneIndex]) -> _Scan:
    """Index every whole record of a segment's bytes, per lane.

    A damaged record is skipped and the records after it are kept; the damage is described by the
    sequence numbers missing between the intact records either side. A record cut short at the very
    end (a write the crash interrupted: never acknowledged) is left out of ``end``."""
    scan = _Scan()
    offset = 0
    last = 0  # the sequence of the last message read
    # Each lane's four appends, looked up once: a segment holds up to ~150,000 messages, and this runs
    # for every one of them before the hub is ready.
    appends: dict[int, tuple[Callable[[Any], None], ...]] = {}
    while offset < len(data):
        records = _record_at(data, offset)
        if records is not None:
            length = _HEADER.size + _HEADER.unpack_from(data, offset)[0]
            for record in records:
                sequence = record[0]
                for key, expiry, _route in record[2]:
                    lane = appends.get(key)
                    if lane is None:
                        index = indexes.get(key)
                        if index is None:
                            index = indexes[key] = _LaneIndex()
                        lane = appends[key] = (
                            index.sequences.append,
                            index.offsets.append,
                            index.lengths.append,
                            index.expiries.append,
                        )
                    lane[0](sequence)
                    lane[1](offset)
                    lane[2](length)
                    lane[3](expiry)
                last = sequence
            offset += length
            scan.end = offset
            continue
        following = _next_intact(data, offset)
        if following is None:
            complete = offset + _HEADER.size <= len(data) and (
                offset + _HEADER.size + _HEADER.unpack_from(data, offset)[0] == len(data)
            )
            if complete:  # whole, but not intact: damage, not an interrupted write
                scan.damaged.append(
                    f"its last record (bytes {offset}-{len(data)}) is damaged and was dropped: the messages "
                    f"it held{f' (after sequence {last})' if last else ''} are lost if they were not yet "
                    "delivered"
                )
                scan.end = len(data)
            break
        upto = _record_at(data, following)[0][0]  # type: ignore[index]
        held = f"sequence {last + 1}-{upto - 1}, {upto - 1 - last} message(s)"
        if not last:
            held = f"the ones before sequence {upto}"
        scan.damaged.append(
            f"bytes {offset}-{following} are damaged and were skipped; the messages they held ({held}) are "
            "lost if they were not yet delivered"
        )
        offset = following
    return scan
