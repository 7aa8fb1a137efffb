"""The local module runner with real processes: startup order, restart policies, reports, stopping."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgehub_emu.hub import EdgeHub, HubError
from edgehub_emu.manifest import parse_deployment
from edgehub_emu.runner import LocalModule, ModuleRunner, Plan, load_local_modules
from edgehub_emu.settings import Settings

from .conftest import EXAMPLE

ROOT = Path(__file__).resolve().parents[2]


def python(code: str, name: str = "m") -> LocalModule:
    return LocalModule(name=name, command=(sys.executable, "-c", code), cwd=ROOT)


class Recorder:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.output = io.StringIO()

    def runner(self, *plans: Plan) -> ModuleRunner:
        def environment(name: str, edge: bool) -> dict[str, str]:
            return {"MODULE_NAME": name}

        return ModuleRunner(list(plans), environment, self.patches.append, self.output)

    def statuses(self, name: str) -> list[str]:
        return [p["modules"][name]["runtimeStatus"] for p in self.patches if name in p["modules"]]


async def until(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_modules_start_in_startup_order_with_their_environment_and_prefixed_output():
    recorder = Recorder()
    printing = "import os; print('hello from', os.environ['MODULE_NAME'], os.environ['EXTRA'], flush=True)"
    late = LocalModule("late", (sys.executable, "-c", printing), ROOT, {"EXTRA": "1"})
    early = LocalModule("early", (sys.executable, "-c", printing), ROOT, {"EXTRA": "2"})
    runner = recorder.runner(Plan(late, "running", "never", 5), Plan(early, "running", "never", 1))

    await runner.start()
    await until(
        lambda: runner.states["late"].status == "stopped" and runner.states["early"].status == "stopped"
    )
    await runner.stop()

    assert runner.states["early"].last_start <= runner.states["late"].last_start
    lines = recorder.output.getvalue().splitlines()
    assert sorted(lines) == ["early | hello from early 2", "late  | hello from late 1"]
    assert recorder.statuses("early") == ["running", "stopped"]
    final = runner.states["late"].reported()
    assert final["exitCode"] == 0 and final["restartCount"] == 0 and "lastExitTimeUtc" in final


async def test_on_failure_restarts_a_crash_with_backoff_and_never_leaves_it_failed():
    recorder = Recorder()
    crashing = python("import sys; sys.exit(3)", "crashing")
    given_up = python("import sys; sys.exit(3)", "given_up")
    runner = recorder.runner(
        Plan(crashing, "running", "on-failure", 1), Plan(given_up, "running", "never", 2)
    )

    await runner.start()
    await until(
        lambda: runner.states["crashing"].restart_count >= 1 and runner.states["given_up"].status == "failed"
    )
    await runner.stop()

    assert recorder.statuses("crashing")[:3] == ["running", "backoff", "running"]
    backoff = next(
        p["modules"]["crashing"]
        for p in recorder.patches
        if p["modules"].get("crashing", {}).get("runtimeStatus") == "backoff"
    )
    assert backoff["exitCode"] == 3 and backoff["statusDescription"] == "exited with 3; restarting in 1 s"
    assert runner.states["given_up"].description == "exited with 3; restartPolicy never: not restarted"


async def test_a_clean_exit_is_not_restarted_on_failure_but_is_with_always():
    recorder = Recorder()
    runner = recorder.runner(
        Plan(python("pass", "clean"), "running", "on-failure", 1),
        Plan(python("pass", "again"), "running", "always", 1),
    )

    await runner.start()
    await until(lambda: runner.states["again"].restart_count >= 1)
    await runner.stop()

    assert runner.states["clean"].status == "stopped" and runner.states["clean"].restart_count == 0


async def test_stopped_modules_and_missing_commands_are_reported_not_run():
    recorder = Recorder()
    missing = LocalModule("missing", ("/nonexistent/bin/module",), ROOT)
    runner = recorder.runner(
        Plan(python("import time; time.sleep(60)", "idle"), "stopped", "always", 1),
        Plan(missing, "running", "always", 2),
    )

    await runner.start()
    await runner.stop()

    assert runner.states["idle"].status == "stopped" and runner.states["idle"].last_start is None
    assert runner.states["missing"].status == "failed"
    assert "cannot start /nonexistent/bin/module" in runner.states["missing"].description


async def test_stop_terminates_the_whole_process_group():
    recorder = Recorder()
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    runner = recorder.runner(Plan(python(code, "parent"), "running", "always", 1))

    await runner.start()
    await until(lambda: "child" in recorder.output.getvalue())
    child = int(recorder.output.getvalue().split("child ")[1].split()[0])
    began = time.monotonic()
    await runner.stop()

    assert time.monotonic() - began < 5
    assert runner.states["parent"].status == "stopped" and runner.states["parent"].exit_code == -15
    await until(lambda: not Path(f"/proc/{child}").exists() or "Z" in _state(child))


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return "Z"


async def test_the_hub_runs_the_sample_pipeline_and_reports_it_on_edge_agents_twin(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path,
        host="127.0.0.12",  # the Python SDK always connects to 8883: an address of its own
        mqtts_port=8883,
        amqps_port=0,
        https_port=0,
        http_port=0,
        metrics_port=0,
        store="memory",
    )
    deployment = parse_deployment(EXAMPLE)
    modules = load_local_modules(ROOT / "config" / "local-modules.json", deployment.module_names)
    hub = EdgeHub(settings, deployment=deployment, local_modules=modules)
    await hub.start()
    try:
        alert = await hub.upstream.wait_for(lambda r: r.message.properties.get("MessageType") == "Alert", 30)
        assert alert.origin == "edge-device/filtermodule"
        reported = hub.twin("$edgeAgent")["reported"]["modules"]
        assert {name: m["runtimeStatus"] for name, m in reported.items()} == {
            "SimulatedTemperatureSensor": "running",
            "filtermodule": "running",
        }
        api = f"http://{hub.endpoints.http_host}:{hub.endpoints.http_port}/status"
        async with aiohttp.ClientSession() as http, http.get(api) as response:
            listed = (await response.json())["modules"]
        assert {(m["name"], m["runtimeStatus"], m["restartCount"]) for m in listed} == {
            ("SimulatedTemperatureSensor", "running", 0),
            ("filtermodule", "running", 0),
        }
    finally:
        await hub.stop()
    assert hub.twin("$edgeAgent")["reported"]["modules"]["filtermodule"]["runtimeStatus"] == "stopped"


async def test_the_hub_refuses_a_local_module_the_deployment_does_not_have(tmp_path: Path):
    ghost = LocalModule("ghost", (sys.executable, "-c", "pass"), ROOT)
    hub = EdgeHub(Settings(data_dir=tmp_path), deployment=parse_deployment(EXAMPLE), local_modules=[ghost])

    with pytest.raises(HubError, match=r"local module\(s\) ghost not in the deployment \(it has: Simulated"):
        await hub.start()


def _with_filter(env: dict[str, str] | None = None, status: str = "running") -> Any:
    import copy

    doc = copy.deepcopy(EXAMPLE)
    spec = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["filtermodule"]
    spec["env"] = {k: {"value": v} for k, v in (env or {}).items()}
    spec["status"] = status
    return parse_deployment(doc, env={})


async def test_a_reload_restarts_a_local_module_whose_manifest_entry_changed(tmp_path: Path):
    """As edgeAgent: a new env starts the module again with it; status stopped stops it; an unchanged
    module keeps running."""
    seen = tmp_path / "seen"
    writer = (
        "import os, pathlib, time\n"
        f"p = pathlib.Path({str(seen)!r})\n"
        "p.write_text(p.read_text() + os.environ.get('LEVEL', '-') + ' ' if p.exists() else "
        "os.environ.get('LEVEL', '-') + ' ')\n"
        "time.sleep(600)\n"
    )
    idle = LocalModule(
        "SimulatedTemperatureSensor", (sys.executable, "-c", "import time; time.sleep(600)"), ROOT
    )
    filtermodule = LocalModule("filtermodule", (sys.executable, "-c", writer), ROOT)
    settings = Settings(
        data_dir=tmp_path / "hub", mqtts_port=0, amqps_port=0, https_port=0, http_port=0, metrics_port=0
    )
    hub = EdgeHub(settings, deployment=_with_filter({"LEVEL": "1"}), local_modules=[idle, filtermodule])
    await hub.start()
    try:
        assert hub.runner is not None
        await until(lambda: seen.exists() and seen.read_text() == "1 ")
        first, untouched = (
            hub.runner.states["filtermodule"].pid,
            hub.runner.states["SimulatedTemperatureSensor"].pid,
        )

        hub.reload(_with_filter({"LEVEL": "2"}))
        await until(lambda: seen.read_text() == "1 2 ")
        states = hub.runner.states
        assert states["filtermodule"].pid not in (None, first) and states["filtermodule"].status == "running"
        assert states["SimulatedTemperatureSensor"].pid == untouched  # its entry did not change

        hub.reload(_with_filter({"LEVEL": "2"}, status="stopped"))
        await until(lambda: states["filtermodule"].status == "stopped" and states["filtermodule"].pid is None)
        reported = hub.twin("$edgeAgent")["reported"]["modules"]["filtermodule"]
        assert reported["runtimeStatus"] == "stopped"
    finally:
        await hub.stop()
