"""A 1,000,000-message backlog: what holding it costs, how fast the hub is ready, how fast it drains.

The backlog for one module input is written straight into the message log the hub then opens (as
a hub that queued it while the module was away would leave it); the hub's RSS while holding it, the time
from process start to ready, then the drain rate and CPU per message when a lean module connects, and
the disk space left once it has drained.

Targets (issue 12): RSS <= 150 MB holding the backlog, ready <= 1 s.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from edgehub_emu.mqtt.codec import Connect, Decoder, Puback, Publish, Subscribe, encode
from edgehub_emu.routing import Message, ModuleEndpoint, RoutedEndpoint
from edgehub_emu.store import LogStore

from .harness import DEVICE, CpuMeter, HubProcess
from .report import Result

BACKLOG = 1_000_000


async def fill_backlog(data: Path, count: int) -> None:
    """Queue ``count`` messages for filter0's input straight into the store the hub will open."""
    store = LogStore(data / "queue")
    copy = RoutedEndpoint(ModuleEndpoint(DEVICE, "filter0", "in"), 2_000_000_000, 86_400, "r0")
    system = {"connectionDeviceId": DEVICE, "connectionModuleId": "sensor0", "outputName": "out"}
    for start in range(0, count, 10_000):
        for i in range(start, min(count, start + 10_000)):
            message = Message(body=b"x" * 64, properties={"n": str(i)}, system_properties=system)
            store.add(message, [copy], _ignore)
        store.flush()
        await asyncio.sleep(0)
    store.close()


def _ignore(error: BaseException | None) -> None:
    if error is not None:
        raise error


async def drain(hub: HubProcess, count: int) -> float:
    """Connect filter0 with a lean client that acknowledges every delivery; messages per second."""
    client_id, username, password = hub.credentials("filter0")
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.endpoints["mqtt_port"])
    writer.write(encode(Connect(client_id, True, 600, username, password.encode())))
    writer.write(encode(Subscribe(1, [(f"devices/{DEVICE}/modules/filter0/inputs/#", 1)])))
    decoder = Decoder()
    received = 0
    start = time.perf_counter()
    while received < count:
        data = await reader.read(1 << 16)
        if not data:
            break
        acks = []
        for packet in decoder.feed(data):
            if isinstance(packet, Publish):
                received += 1
                acks.append(encode(Puback(packet.packet_id or 0)))
        if acks:
            writer.write(b"".join(acks))
    elapsed = time.perf_counter() - start
    writer.close()
    return received / elapsed


def run() -> list[Result]:
    data = Path(tempfile.mkdtemp(prefix="edgehub-backlog-"))
    try:
        started = time.perf_counter()
        asyncio.run(fill_backlog(data, BACKLOG))
        filled = time.perf_counter() - started
        size = sum(f.stat().st_size for f in (data / "queue").rglob("*") if f.is_file())
        loaded = HubProcess(pairs=1, data=data)
        try:
            time.sleep(1.0)
            holding = loaded.memory_mb()
            ready = loaded.ready_after
            with CpuMeter(loaded.process.pid) as meter:
                rate = asyncio.run(drain(loaded, BACKLOG))
            drain_us, _ = meter.per_message_us(BACKLOG)
            drain_peak = loaded.memory_mb("VmHWM")
            left = sum(f.stat().st_size for f in (data / "queue").rglob("*") if f.is_file())
        finally:
            loaded.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return [
        Result(f"filling a {BACKLOG:,} backlog (msg/s)", f"{BACKLOG / filled:,.0f}", "", True),
        Result("its log on disk (MB)", f"{size / 1e6:.0f}", "", True),
        Result(f"RSS holding {BACKLOG:,} queued (MB)", f"{holding:.0f}", "<= 150", holding <= 150),
        Result("ready after start, with that backlog (s)", f"{ready:.2f}", "<= 1", ready <= 1),
        Result("drain rate of the backlog (msg/s)", f"{rate:,.0f}", "(reported)", True),
        Result("hub CPU per drained message (us)", f"{drain_us:.1f}", "(reported)", True),
        Result("peak RSS while draining (MB)", f"{drain_peak:.0f}", "<= 150", drain_peak <= 150),
        Result("log on disk once drained (MB)", f"{left / 1e6:.1f}", "(given back)", True),
    ]
