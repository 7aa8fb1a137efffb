"""Run local modules as edgeAgent runs containers: in startup order, restarted by policy, reported.

Each module is a child process with the environment edgeAgent would give it; its output is printed
line by line behind its name. Its state (``runtimeStatus``, ``exitCode``, ``restartCount``, start and
exit times) goes to ``$edgeAgent``'s reported properties under ``modules``, as edgeAgent reports it, and
to ``edgehub-emu status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from ..manifest import Module
from ..tasks import spawn
from .config import LocalModule
from .policy import STABLE_AFTER, backoff_seconds, should_restart

log = logging.getLogger("edgehub_emu.runner")

STOP_GRACE = 10.0


@dataclass
class ModuleState:
    """What edgeAgent reports of a module."""

    name: str
    status: str = "stopped"  # running | backoff | stopped | failed
    exit_code: int | None = None
    restart_count: int = 0
    last_start: float | None = None
    last_exit: float | None = None
    description: str = ""
    pid: int | None = None

    def reported(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "runtimeStatus": self.status,
            "restartCount": self.restart_count,
            "statusDescription": self.description,
        }
        if self.exit_code is not None:
            report["exitCode"] = self.exit_code
        if self.last_start is not None:
            report["lastStartTimeUtc"] = _utc(self.last_start)
        if self.last_exit is not None:
            report["lastExitTimeUtc"] = _utc(self.last_exit)
        return report


@dataclass(frozen=True)
class Plan:
    """A local module with what the manifest says of it."""

    module: LocalModule
    status: str  # desired: running | stopped
    restart_policy: str
    startup_order: int
    spec: str = ""  # the manifest's whole entry for the module, as JSON: a change restarts it

    @classmethod
    def of(cls, module: LocalModule, spec: Module) -> Plan:
        return cls(module, spec.status, spec.restartPolicy, spec.startupOrder, spec.model_dump_json())


class ModuleRunner:
    def __init__(
        self,
        plans: list[Plan],
        environment: Callable[[str, bool], dict[str, str]],
        report: Callable[[dict[str, Any]], None],
        output: TextIO | None = None,
    ) -> None:
        self.plans = sorted(plans, key=lambda p: (p.startup_order, p.module.name))
        self._environment = environment
        self._report = report
        self._output = output or sys.stdout
        self.states = {p.module.name: ModuleState(p.module.name) for p in self.plans}
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: dict[str, asyncio.Future[Any]] = {}
        self._halts: dict[str, asyncio.Event] = {}  # set: that module's supervisor stops it for good
        self._width = max((len(p.module.name) for p in self.plans), default=0)

    @classmethod
    def for_deployment(
        cls,
        modules: Sequence[LocalModule],
        specs: Mapping[str, Module],
        environment: Callable[[str, bool], dict[str, str]],
        report: Callable[[dict[str, Any]], None],
    ) -> ModuleRunner:
        """A runner for the local ``modules``, with what the deployment's ``specs`` say of each."""
        plans = [Plan.of(m, specs[m.name]) for m in modules]
        return cls(plans, environment, report)

    async def start(self) -> None:
        """Start the modules in startup order (each one's process is up before the next starts)."""
        for plan in self.plans:
            await self._launch(plan)

    async def _launch(self, plan: Plan) -> None:
        name = plan.module.name
        if plan.status != "running":
            self._set(name, status="stopped", description="desired status is stopped", pid=None)
            return
        started = asyncio.get_running_loop().create_future()
        self._halts[name] = halt = asyncio.Event()
        self._tasks[name] = spawn(self._supervise(plan, started, halt), f"running {name}")
        await started

    async def apply(self, specs: Mapping[str, Module]) -> None:
        """A new deployment, as edgeAgent applies one: a module whose manifest entry changed (its env,
        settings, status, restart policy or startup order) is stopped and, unless its desired status is
        now ``stopped``, started again with the new entry; one the deployment dropped is stopped."""
        changed: list[Plan] = []
        for plan in self.plans:
            name = plan.module.name
            spec = specs.get(name)
            if spec is None:
                log.info("%s is no longer in the deployment: stopped", name)
                await self._halt(name)
                self._set(name, status="stopped", description="not in the deployment", pid=None)
                continue
            new = Plan.of(plan.module, spec)
            if new.spec != plan.spec:
                changed.append(new)
        for new in changed:
            name = new.module.name
            log.info(
                "%s: its manifest entry changed: %s",
                name,
                "restarting" if new.status == "running" else "stopping",
            )
            await self._halt(name)
            self.plans = [new if p.module.name == name else p for p in self.plans]
        for new in sorted(changed, key=lambda p: (p.startup_order, p.module.name)):
            await self._launch(new)

    async def _halt(self, name: str) -> None:
        """Stop one module for good (until launched again): SIGTERM, SIGKILL after the grace period."""
        halt = self._halts.pop(name, None)
        if halt is not None:
            halt.set()
        process = self._processes.get(name)
        if process is not None:
            await _terminate(name, process)
        task = self._tasks.pop(name, None)
        if task is not None:
            await asyncio.wait([task], timeout=STOP_GRACE)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """SIGTERM every module (its process group), SIGKILL what is still there after 10 s."""
        for halt in self._halts.values():
            halt.set()
        for process in self._processes.values():
            _signal(process, signal.SIGTERM)
        for name, process in list(self._processes.items()):
            await _terminate(name, process)
        tasks = list(self._tasks.values())
        if tasks:  # let each supervisor record how its module ended
            await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = {}

    def status(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "pid": s.pid, **s.reported()} for s in self.states.values()]

    async def _supervise(self, plan: Plan, started: asyncio.Future[None], halt: asyncio.Event) -> None:
        module = plan.module
        failures = 0
        try:
            while not halt.is_set():
                env = {**os.environ, **self._environment(module.name, module.edge), **module.env}
                try:
                    process = await asyncio.create_subprocess_exec(
                        *module.command,
                        cwd=module.cwd,
                        env=env,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                    )
                except OSError as exc:
                    reason = f"cannot start {' '.join(module.command)} in {module.cwd}: {exc.strerror or exc}"
                    log.error("%s: %s", module.name, reason)
                    self._set(module.name, status="failed", description=reason, pid=None)
                    return
                began = time.time()
                self._processes[module.name] = process
                self._set(
                    module.name, status="running", description="running", last_start=began, pid=process.pid
                )
                if not started.done():
                    started.set_result(None)
                await self._pump(module.name, process)
                code = await process.wait()
                if self._processes.get(module.name) is process:
                    del self._processes[module.name]
                ended = time.time()
                if halt.is_set():
                    self._set(
                        module.name, status="stopped", exit_code=code, last_exit=ended, description="stopped"
                    )
                    return
                if not should_restart(plan.restart_policy, code):
                    final = "stopped" if code == 0 else "failed"
                    self._set(
                        module.name,
                        status=final,
                        exit_code=code,
                        last_exit=ended,
                        pid=None,
                        description=f"exited with {code}; restartPolicy {plan.restart_policy}: not restarted",
                    )
                    log.info(
                        "%s exited with %d and stays down (restartPolicy %s)",
                        module.name,
                        code,
                        plan.restart_policy,
                    )
                    return
                failures = 1 if ended - began >= STABLE_AFTER else failures + 1
                delay = backoff_seconds(failures)
                self._set(
                    module.name,
                    status="backoff",
                    exit_code=code,
                    last_exit=ended,
                    pid=None,
                    description=f"exited with {code}; restarting in {delay:g} s",
                )
                log.info("%s exited with %d; restarting in %g s", module.name, code, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await halt.wait()
                if not halt.is_set():
                    self.states[module.name].restart_count += 1
        finally:
            if not started.done():
                started.set_result(None)

    async def _pump(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        prefix = f"{name:<{self._width}} | "
        while line := await process.stdout.readline():
            self._output.write(prefix + line.decode(errors="replace").rstrip() + "\n")
            self._output.flush()

    def _set(self, name: str, **changes: Any) -> None:
        state = self.states[name]
        for key, value in changes.items():
            setattr(state, key, value)
        try:
            self._report({"modules": {name: state.reported()}})
        except Exception:  # reporting must never take a module down
            log.exception("could not report the state of %s", name)


async def _terminate(name: str, process: asyncio.subprocess.Process) -> None:
    _signal(process, signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_GRACE):
            await process.wait()
    except TimeoutError:
        log.warning("%s did not stop within %g s: killed", name, STOP_GRACE)
        _signal(process, signal.SIGKILL)
        await process.wait()


def _signal(process: asyncio.subprocess.Process, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, number)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
