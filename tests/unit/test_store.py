"""Endpoint queues: one behaviour, two stores (memory and SQLite), plus what only SQLite promises."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgehub_emu.routing import Message, ModuleEndpoint, RoutedEndpoint, UpstreamEndpoint
from edgehub_emu.store import MemoryStore, SqliteStore, StoreError
from edgehub_emu.store import sqlite as sqlite_store


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
    result = store.add(Message(body=body, properties={"k": body.decode()}), copies or (copy(),))
    if result is not None:
        await result


def drain(store, endpoint_id: str = A.id) -> list[bytes]:
    bodies = []
    while (entry := store.head(endpoint_id)) is not None:
        bodies.append(entry.message.body)
        store.remove(entry)
    return bodies


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path: Path) -> AsyncIterator:
    clock = Clock()
    s = MemoryStore(clock) if request.param == "memory" else SqliteStore(tmp_path / "store.sqlite", clock)
    s.test_clock = clock  # type: ignore[attr-defined]
    yield s
    s.close()


async def test_lowest_priority_number_first_then_fifo(store):
    for i in range(3):
        await put(store, f"low{i}".encode(), copy(priority=2))
        await put(store, f"high{i}".encode(), copy(priority=0))
    assert store.depth(A.id) == {0: 3, 2: 3}
    assert drain(store) == [b"high0", b"high1", b"high2", b"low0", b"low1", b"low2"]
    assert store.depth(A.id) == {}


async def test_next_unsent_skips_what_is_in_flight(store):
    for i in range(3):
        await put(store, f"m{i}".encode())
    first = store.head(A.id)
    second = store.next_unsent(A.id, {first.sequence})
    assert (first.message.body, second.message.body) == (b"m0", b"m1")
    assert store.next_unsent(A.id, {first.sequence, second.sequence}).message.body == b"m2"


async def test_one_message_for_two_endpoints_is_two_independent_copies(store):
    await put(store, b"both", copy(A), copy(B, priority=3))
    assert sorted(store.endpoints()) == sorted([A.id, B.id])
    assert drain(store, A.id) == [b"both"]
    assert drain(store, B.id) == [b"both"]


async def test_expired_messages_are_skipped_and_counted(store):
    await put(store, b"short", copy(ttl=10))
    await put(store, b"long", copy(ttl=100))
    store.test_clock.now += 50
    assert drain(store) == [b"long"]
    assert store.expired == {A.id: 1}


async def test_expired_messages_nobody_reads_are_purged(store):
    for i in range(5):
        await put(store, f"m{i}".encode(), copy(UpstreamEndpoint(), ttl=10))
    store.test_clock.now += 11
    assert store.purge_expired() == 5
    assert store.expired == {"iothub": 5}
    assert store.head("iothub") is None


async def test_wait_returns_when_something_is_added(store):
    waiting = asyncio.ensure_future(store.wait(A.id, timeout=5))
    await asyncio.sleep(0)
    await put(store, b"wake")
    async with asyncio.timeout(2):
        await waiting


# --- only the durable store -------------------------------------------------------------------


async def test_queues_come_back_after_a_restart(tmp_path: Path):
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path)
    for i in range(5):
        await put(store, f"m{i}".encode(), copy(priority=i % 2))
    store.remove(store.head(A.id))  # m0 delivered
    store.close()
    again = SqliteStore(path)
    entry = again.head(A.id)
    assert entry.message.properties == {"k": "m2"}
    assert drain(again) == [b"m2", b"m4", b"m1", b"m3"]
    again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM queue").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def test_a_body_routed_to_several_endpoints_is_stored_once(tmp_path: Path):
    store = SqliteStore(tmp_path / "store.sqlite")
    await put(store, b"x" * 1000, copy(A), copy(B), copy(UpstreamEndpoint()))
    store.close()
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM queue").fetchone() == (3,)


async def test_a_large_backlog_is_paged_not_held_in_memory(tmp_path: Path):
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path)
    total = sqlite_store.IN_MEMORY + sqlite_store.PAGE * 2 + 7
    await asyncio.gather(*(put(store, str(i).encode()) for i in range(total)))
    store.close()
    again = SqliteStore(path)
    assert again.depth(A.id) == {0: total}
    assert again.head(A.id) is not None
    lane = again._endpoints[A.id].lanes[0]
    assert len(lane.loaded) <= sqlite_store.PAGE
    assert drain(again) == [str(i).encode() for i in range(total)]
    again.close()


async def test_a_store_failure_refuses_the_message(tmp_path: Path):
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path)
    await put(store, b"ok")
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE queue")
    with pytest.raises(StoreError):
        await put(store, b"lost")
    store.close()


async def test_the_local_cloud_keeps_upstream_messages_across_restarts_within_retention(tmp_path: Path):
    from edgehub_emu.upstream import UpstreamCapture

    path = tmp_path / "upstream.sqlite"
    capture = UpstreamCapture(path, keep_count=5)
    for i in range(1005):
        await capture.send(Message(body=f"m{i}".encode(), properties={"i": str(i)}))
    capture.close()
    again = UpstreamCapture(path, keep_count=5)
    assert again.last_sequence == 1005
    kept = again.messages()
    assert [r.message.body for r in kept][-5:] == [f"m{i}".encode() for i in range(1000, 1005)]
    assert len(kept) <= 5 + 4  # pruned every 1000 records: a few more may wait for the next pruning
    assert kept[-1].message.properties == {"i": "1004"}
    await again.send(Message(body=b"after"))
    assert again.messages(since=1005)[0].message.body == b"after"
    again.close()
