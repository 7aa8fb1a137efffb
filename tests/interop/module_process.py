"""A module under test as a child process that speaks JSON lines: commands on stdin, events on stdout.

The Python SDK's module (``sdk_module.py``) and the Node SDK's (``tests/node/module.js``) both work
this way; their tests wait for events by kind, with what the process said so far in the failure.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar


class ModuleProcess:
    QUIT: ClassVar[dict[str, Any]] = {"quit": True}  # the command that makes the module close and exit
    FAIL_ON: ClassVar[str | None] = None  # an event kind that fails whatever is awaited

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.seen: list[dict[str, Any]] = []

    async def event(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {kind!r} event; saw {self.seen}{await self._stderr()}")
            try:
                async with asyncio.timeout(remaining):
                    line = await self.process.stdout.readline()
            except TimeoutError:
                continue
            if not line:
                raise AssertionError(f"{self.name} exited; saw {self.seen}{await self._stderr()}")
            event = json.loads(line)
            self.seen.append(event)
            if event["event"] == kind:
                return event
            if event["event"] == self.FAIL_ON:
                raise AssertionError(f"{self.name} failed: {event}")

    async def _stderr(self) -> str:
        if self.process.returncode is None or self.process.stderr is None:
            return ""
        return "\nstderr: " + (await self.process.stderr.read()).decode()[-3000:]

    async def command(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await self.command(**self.QUIT)
                async with asyncio.timeout(10):
                    await self.process.wait()
            except (TimeoutError, ConnectionError):
                self.process.kill()
                await self.process.wait()
