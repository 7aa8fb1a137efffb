"""Endpoint queues: one behaviour, two stores (memory and the durable log), plus what only the log
promises (restarts, paging, disk given back, torn writes, the earlier format migrated)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgehub_emu.data_files import DamagedFile
from edgehub_emu.routing import Message, ModuleEndpoint, RoutedEndpoint, UpstreamEndpoint
from edgehub_emu.store import LogStore, MemoryStore, StoreError, open_store
from edgehub_emu.store import log as log_store


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


A = ModuleEndpoint("dev", "a", "in")
B = ModuleEndpoint("dev", "b", "in")


def copy(endpoint=A, priority: int = 0, ttl: int = 60) -> RoutedEndpoint:
    return RoutedEndpoint(endpoint, priority, ttl, "r")


async def put(store, body: bytes, *copies: RoutedEndpoint) -> None:
    done = asyncio.get_running_loop().create_future()

    def stored(error: BaseException | None) -> None:
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    message = Message(body=body, properties={"k": body.decode()})
    if not store.add(message, copies or (copy(),), stored):
        await done


def drain(store, endpoint_id: str = A.id) -> list[bytes]:
    bodies = []
    while (entry := store.take(endpoint_id)) is not None:
        bodies.append(entry.message.body)
        store.ack(entry)
    return bodies


async def closed_log(directory: Path, count: int) -> Path:
    """A closed log of messages m0, m1, … (one commit, so one record, each) in one segment: that segment."""
    store = LogStore(directory)
    for i in range(count):
        await put(store, f"m{i}".encode())
    store.close()
    (segment,) = directory.glob("*.log")
    return segment


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "log"])
async def store(request, tmp_path: Path, clock: Clock) -> AsyncIterator:
    s = MemoryStore(clock) if request.param == "memory" else LogStore(tmp_path / "queue", clock)
    yield s
    s.close()


async def test_lowest_priority_number_first_then_fifo(store):
    for i in range(3):
        await put(store, f"low{i}".encode(), copy(priority=2))
        await put(store, f"high{i}".encode(), copy(priority=0))
    assert store.depth(A.id) == {0: 3, 2: 3}
    assert drain(store) == [b"high0", b"high1", b"high2", b"low0", b"low1", b"low2"]
    assert store.depth(A.id) == {}


async def test_taken_entries_are_leased_until_acknowledged_and_count_as_waiting(store):
    for i in range(3):
        await put(store, f"m{i}".encode())
    first, second = store.take(A.id), store.take(A.id)
    assert (first.message.body, second.message.body) == (b"m0", b"m1")
    assert store.depth(A.id) == {0: 3}
    assert [e.message.body for e in store.peek(A.id)] == [b"m0", b"m1", b"m2"]
    store.ack(first)
    assert store.depth(A.id) == {0: 2}
    assert store.take(A.id).message.body == b"m2"


async def test_released_entries_come_again_in_their_old_places(store):
    for i in range(4):
        await put(store, f"m{i}".encode())
    taken = [store.take(A.id) for _ in range(3)]
    store.ack(taken[1])
    store.release([taken[2], taken[0]])
    assert drain(store) == [b"m0", b"m2", b"m3"]


async def test_a_higher_priority_message_overtakes_what_was_not_yet_taken(store):
    await put(store, b"low0", copy(priority=5))
    await put(store, b"low1", copy(priority=5))
    assert store.take(A.id).message.body == b"low0"
    await put(store, b"urgent", copy(priority=0))
    assert store.take(A.id).message.body == b"urgent"


async def test_one_message_for_two_endpoints_is_two_independent_copies(store):
    await put(store, b"both", copy(A), copy(B, priority=3))
    assert sorted(store.endpoints()) == sorted([A.id, B.id])
    assert drain(store, A.id) == [b"both"]
    assert drain(store, B.id) == [b"both"]


async def test_expired_messages_are_skipped_and_counted(store, clock):
    await put(store, b"short", copy(ttl=10))
    await put(store, b"long", copy(ttl=100))
    clock.now += 50
    assert drain(store) == [b"long"]
    assert store.expired_counts() == {A.id: 1}


async def test_expired_messages_nobody_reads_are_purged(store, clock):
    for i in range(5):
        await put(store, f"m{i}".encode(), copy(UpstreamEndpoint(), ttl=10))
    clock.now += 11
    assert store.purge_expired() == 5
    assert store.expired_counts() == {"iothub": 5}
    assert store.take("iothub") is None
    assert store.depth("iothub") == {}


async def test_queues_show_the_next_expiry_still_ahead(store, clock):
    await put(store, b"a", copy(ttl=10))
    await put(store, b"b", copy(ttl=100))
    clock.now += 50
    (info,) = store.queues()
    assert (info.endpoint_id, info.priority, info.messages) == (A.id, 0, 2)
    assert info.next_expiry == clock.now + 50


async def test_the_store_says_which_endpoint_has_new_entries(store):
    told: list[str] = []
    store.ready = told.append
    await put(store, b"x", copy(A), copy(B))
    assert sorted(told) == sorted([A.id, B.id])


# --- only the durable log ---------------------------------------------------------------------


async def test_queues_come_back_after_a_restart(tmp_path: Path):
    store = LogStore(tmp_path)
    for i in range(5):
        await put(store, f"m{i}".encode(), copy(priority=i % 2))
    store.ack(store.take(A.id))  # m0 delivered
    store.close()
    again = LogStore(tmp_path)
    assert again.depth(A.id) == {0: 2, 1: 2}
    entry = again.take(A.id)
    assert entry.message.properties == {"k": "m2"}
    again.release([entry])
    assert drain(again) == [b"m2", b"m4", b"m1", b"m3"]
    again.close()


async def test_the_next_expiry_counts_entries_on_disk_and_skips_expired_ones(tmp_path: Path, monkeypatch):
    """Past the entries held in memory, the next expiry comes from the log's indexes (the status and
    the dashboard ask for it often, a million entries deep); asked again after more came, it still
    counts them all."""
    monkeypatch.setattr(log_store, "IN_MEMORY", 4)
    clock = Clock()
    store = LogStore(tmp_path, clock, segment_bytes=512)
    start = clock.now
    for ttl in (1000, 1000, 1000, 1000, 900, 10, 300, 800):  # the first four in memory, the rest on disk
        await put(store, b"x" * 40, copy(ttl=ttl))
    assert len(list(tmp_path.glob("*.log"))) > 2
    (info,) = store.queues()
    assert info.next_expiry == start + 10
    clock.now += 20  # the ttl-10 entry expired, not yet purged: the next one still ahead is at 300
    (info,) = store.queues()
    assert info.next_expiry == start + 300
    await put(store, b"y", copy(ttl=100))  # written at start + 20, expires at start + 120
    (info,) = store.queues()
    assert (info.messages, info.next_expiry) == (9, start + 120)
    store.close()


async def test_status_without_a_hub_reads_what_waits_as_the_running_store_counts_it(tmp_path: Path):
    """``edgehub-emu status`` with no hub running reads the log's files: per lane, what is neither
    delivered nor expired, and the next expiry, across sealed segments and the one being written."""
    clock = Clock()
    store = LogStore(tmp_path, clock, segment_bytes=512)
    start = clock.now
    for i in range(30):
        await put(store, b"x" * 40, copy(A, i % 2, ttl=10 if i % 5 == 0 else 100 + i), copy(B, 0, ttl=50))
    for _ in range(3):  # three of A's priority 0 delivered
        store.ack(store.take(A.id))
    clock.now += 20  # the ttl-10 copies expired
    store.close()  # (checkpoints written at close)
    assert len(list(tmp_path.glob("*.idx"))) > 2
    read = {
        (q.endpoint_id, q.priority): (q.messages, q.next_expiry)
        for q in log_store.read_queues(tmp_path, clock.now)
    }
    # A, priority 0: copies 0, 2, ..., 28; 0 and 2 and 4 delivered; 10 and 20 expired (ttl 10): 10 wait
    assert read == {(A.id, 0): (10, start + 106), (A.id, 1): (12, start + 101), (B.id, 0): (30, start + 50)}


def test_a_segment_index_keeps_its_lowest_expiry_as_entries_are_appended():
    index = log_store._LaneIndex()
    assert index.lowest_expiry() is None
    index.expiries.extend((50.0, 20.0, 70.0))  # (as the log appends an entry's expiry)
    assert index.lowest_expiry() == 20.0
    index.expiries.append(5.0)  # lower than what was kept
    index.expiries.append(90.0)
    assert index.lowest_expiry() == 5.0
    assert index.lowest_expiry(start=2) == 5.0 and index.lowest_expiry(start=4) == 90.0
    assert index.lowest_expiry(start=5) is None


async def test_a_restart_rebuilds_every_lane_from_records_that_mix_them(tmp_path: Path):
    """The segment being written has no index: a restart reads it back, record by record, and each
    record here holds many messages for several lanes (one commit of 300: records of 256 and 44)."""
    store = LogStore(tmp_path)
    lanes = [(copy(A, 0),), (copy(A, 1),), (copy(B, 0), copy(A, 0))]
    await asyncio.gather(*(put(store, f"m{i}".encode(), *lanes[i % 3]) for i in range(300)))
    store.close()
    assert not list(tmp_path.glob("*.idx"))  # (still the one segment, unsealed: it is scanned)
    again = LogStore(tmp_path)
    assert again.depth(A.id) == {0: 200, 1: 100} and again.depth(B.id) == {0: 100}
    first = [f"m{i}".encode() for i in range(300) if i % 3 != 1]
    assert drain(again) == first + [f"m{i}".encode() for i in range(300) if i % 3 == 1]
    assert drain(again, B.id) == [f"m{i}".encode() for i in range(2, 300, 3)]
    again.close()


async def test_what_was_in_flight_at_a_crash_comes_again(tmp_path: Path):
    store = LogStore(tmp_path)
    for i in range(3):
        await put(store, f"m{i}".encode())
    store.ack(store.take(A.id))
    store.take(A.id)  # delivered, never acknowledged
    store.close()
    again = LogStore(tmp_path)
    assert drain(again) == [b"m1", b"m2"]
    again.close()


async def test_a_message_routed_to_several_endpoints_is_written_once(tmp_path: Path):
    store = LogStore(tmp_path)
    await put(store, b"x" * 1000, copy(A), copy(B), copy(UpstreamEndpoint()))
    store.close()
    (segment,) = tmp_path.glob("*.log")
    assert 2000 < segment.stat().st_size < 3000  # the body and its property (1000 bytes each), once


async def test_a_large_backlog_is_paged_not_held_in_memory(tmp_path: Path):
    store = LogStore(tmp_path, segment_bytes=64 * 1024)
    total = log_store.IN_MEMORY + log_store.PAGE * 2 + 7
    for start in range(0, total, 500):  # several commits, so that several segments fill
        await asyncio.gather(*(put(store, str(i).encode()) for i in range(start, min(total, start + 500))))
    store.close()
    assert len(list(tmp_path.glob("*.idx"))) > 2  # sealed segments, each with its index
    again = LogStore(tmp_path, segment_bytes=64 * 1024)
    assert again.depth(A.id) == {0: total}
    assert again.take(A.id) is not None
    (lane,) = again._lanes.by_endpoint[A.id]
    assert len(lane.ready) < log_store.PAGE
    assert drain(again) == [str(i).encode() for i in range(1, total)]
    again.close()


async def test_disk_space_comes_back_as_the_queues_drain(tmp_path: Path):
    store = LogStore(tmp_path, segment_bytes=32 * 1024)
    for i in range(2000):
        await put(store, f"{i:0200d}".encode())
    assert len(list(tmp_path.glob("*.log"))) > 5
    assert len(drain(store)) == 2000
    store.close()  # checkpoints written; done segments go when the store next looks
    again = LogStore(tmp_path, segment_bytes=32 * 1024)
    assert sum(p.stat().st_size for p in tmp_path.glob("*.log")) < 32 * 1024
    assert again.depth(A.id) == {}
    again.close()


async def test_expired_entries_in_the_log_are_purged_without_reading_them(tmp_path: Path):
    clock = Clock()
    store = LogStore(tmp_path, clock)
    total = log_store.IN_MEMORY + 100
    await asyncio.gather(*(put(store, str(i).encode(), copy(ttl=10)) for i in range(total)))
    await put(store, b"fresh", copy(ttl=1000))
    clock.now += 20
    assert store.purge_expired() == total
    assert store.depth(A.id) == {0: 1}
    assert drain(store) == [b"fresh"]
    store.close()


async def test_a_write_cut_short_by_a_crash_is_dropped_and_the_rest_kept(tmp_path: Path, caplog):
    segment = await closed_log(tmp_path, 3)
    with open(segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # half a record
    again = LogStore(tmp_path)
    assert drain(again) == [b"m0", b"m1", b"m2"]
    assert "not a whole record" in caplog.text
    await put(again, b"m3")
    again.close()
    third = LogStore(tmp_path)
    assert drain(third) == [b"m3"]
    third.close()


def flip(path: Path, at: int) -> None:
    """Damage one byte of a file on disk, as a failing disk would."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_a_damaged_record_is_skipped_named_and_counted_and_the_rest_kept(tmp_path: Path, caplog):
    segment = await closed_log(tmp_path, 10)  # ten records
    flip(segment, segment.stat().st_size // 2)  # inside the record of m4 or m5
    again = LogStore(tmp_path)
    kept = drain(again)
    again.close()
    assert len(kept) == 9 and kept == [f"m{i}".encode() for i in range(10) if f"m{i}".encode() in kept]
    (line,) = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert line.levelname == "ERROR" and str(segment) in line.getMessage()
    assert "1 message(s)" in line.getMessage() and "lost if they were not yet delivered" in line.getMessage()
    assert "never acknowledged" not in caplog.text  # not mistaken for a write cut short


async def test_a_damaged_last_record_is_damage_not_a_write_cut_short(tmp_path: Path, caplog):
    segment = await closed_log(tmp_path, 3)
    flip(segment, segment.stat().st_size - 2)
    again = LogStore(tmp_path)
    assert drain(again) == [b"m0", b"m1"]
    await put(again, b"m3")
    again.close()
    assert "its last record" in caplog.text and "after sequence 2" in caplog.text
    third = LogStore(tmp_path)
    assert drain(third) == [b"m3"]
    third.close()


async def test_a_damaged_index_is_rebuilt_from_its_segment_with_nothing_lost(tmp_path: Path, caplog):
    store = LogStore(tmp_path, segment_bytes=4096)
    for i in range(200):
        await put(store, f"{i:050d}".encode())
    store.close()
    indexes = sorted(tmp_path.glob("*.idx"))
    assert len(indexes) > 2
    indexes[1].write_bytes(b"\x80\x05garbage")
    again = LogStore(tmp_path, segment_bytes=4096)
    assert drain(again) == [f"{i:050d}".encode() for i in range(200)]
    again.close()
    assert f"{indexes[1]} is damaged" in caplog.text and "rebuilt from its segment" in caplog.text


async def test_a_record_damaged_after_its_segment_was_sealed_is_skipped_when_read(tmp_path: Path, caplog):
    store = LogStore(tmp_path, segment_bytes=4096)
    for i in range(200):
        await put(store, f"{i:050d}".encode())
    store.close()
    first = sorted(tmp_path.glob("*.log"))[0]
    flip(first, 100)  # the index still points at it: found damaged only when read
    again = LogStore(tmp_path, segment_bytes=4096)
    kept = drain(again)
    assert len(kept) == 199 and kept[-1] == f"{199:050d}".encode()
    assert again.depth(A.id) == {}
    again.close()
    assert "the record at byte" in caplog.text and "its messages are lost" in caplog.text


@pytest.mark.parametrize(
    ("name", "damage", "holds"),
    [
        ("lanes.json", '{"lanes": [', "which queue each waiting message belongs to"),
        ("lanes.json", '{"lanes": [[1, 2, 3]]}', "which queue each waiting message belongs to"),
        ("checkpoints.json", "[1, 2]", "how far each queue was delivered"),
        ("checkpoints.json", "", "how far each queue was delivered"),
    ],
)
async def test_a_damaged_json_file_of_the_log_is_named_with_what_it_holds(tmp_path, name, damage, holds):
    store = LogStore(tmp_path)
    await put(store, b"m0")
    store.close()
    (tmp_path / name).write_text(damage)
    with pytest.raises(DamagedFile) as refused:
        LogStore(tmp_path)
    assert refused.value.path == tmp_path / name and holds in refused.value.holds
    # a fresh start moves the whole log aside when its lanes are lost, only the checkpoints otherwise
    assert refused.value.aside == (tmp_path if name == "lanes.json" else tmp_path / name)
    with pytest.raises(DamagedFile):  # so does `status` with no hub running, which reads the same files
        log_store.read_queues(tmp_path)


async def test_a_damaged_store_of_the_earlier_format_is_named_not_dropped(tmp_path: Path):
    old = tmp_path / "store.sqlite"
    for damage in (b"", b"SQLite format 3\x00" + b"\x13" * 600):  # truncated to nothing; garbage
        old.write_bytes(damage)
        with pytest.raises(DamagedFile) as refused:
            open_store("durable", tmp_path)
        assert refused.value.path == old and "earlier edgehub-emu" in str(refused.value)
        assert old.read_bytes() == damage  # left as it was for the user to decide
    again = LogStore(tmp_path / "queue")  # the log opened for the migration was closed again
    again.close()


async def test_a_store_failure_refuses_the_message(tmp_path: Path):
    store = LogStore(tmp_path)
    await put(store, b"ok")
    os.close(store._active().fd)  # the file can no longer be written
    with pytest.raises(StoreError):
        await put(store, b"lost")
    store._active().fd = os.open(store._active().path, os.O_RDWR | os.O_APPEND)
    await put(store, b"again")
    assert drain(store) == [b"ok", b"again"]
    store.close()


async def test_queues_of_the_earlier_sqlite_format_are_moved_into_the_log(tmp_path: Path):
    old = tmp_path / "store.sqlite"
    with sqlite3.connect(old) as db:
        db.executescript(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, body BLOB, properties TEXT, "
            "system_properties TEXT, enqueued REAL, refs INTEGER);"
            "CREATE TABLE queue (seq INTEGER PRIMARY KEY, endpoint TEXT, priority INTEGER, "
            "message_id INTEGER, expires REAL, route TEXT);"
        )
        far = 4_000_000_000.0
        for i in range(3):
            db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, 2)",
                (i + 1, f"m{i}".encode(), json.dumps({"k": str(i)}), json.dumps({"cid": "c"}), 1.0),
            )
            db.execute("INSERT INTO queue VALUES (?, ?, 1, ?, ?, 'r')", (2 * i + 1, A.id, i + 1, far))
            db.execute("INSERT INTO queue VALUES (?, 'iothub', 0, ?, ?, 'up')", (2 * i + 2, i + 1, far))
    store = open_store("durable", tmp_path)
    assert store.depth(A.id) == {1: 3} and store.depth("iothub") == {0: 3}
    entry = store.take(A.id)
    assert (entry.message.properties, entry.message.system_properties, entry.route) == (
        {"k": "0"},
        {"cid": "c"},
        "r",
    )
    store.close()
    assert not old.exists() and (tmp_path / "store.sqlite.migrated").exists()


async def test_checkpoints_that_cannot_be_written_are_said_and_written_at_a_later_tick(
    tmp_path: Path, caplog
):
    """The checkpoints file is written on the store's file thread; a failed write (here the temporary
    file's name is taken by a directory) is logged by the store and tried again at the next tick."""
    store = LogStore(tmp_path)
    await put(store, b"first")
    await put(store, b"second")
    blocker = tmp_path / "checkpoints.tmp"
    blocker.mkdir()
    entry = store.take(A.id)
    assert entry is not None and entry.message.body == b"first"
    store.ack(entry)
    async with asyncio.timeout(10):
        while "checkpoints.json" not in caplog.text:
            await asyncio.sleep(0.02)
    assert "the store cannot write to" in caplog.text
    blocker.rmdir()
    async with asyncio.timeout(10):  # the next tick writes them: the first message is done
        while not (tmp_path / "checkpoints.json").exists() or not json.loads(
            (tmp_path / "checkpoints.json").read_text()
        ):
            await asyncio.sleep(0.02)
    written = json.loads((tmp_path / "checkpoints.json").read_text())
    assert list(written.values()) == [1]
    store.close()
    again = LogStore(tmp_path)
    assert drain(again) == [b"second"]
    again.close()
