"""The `edgehub-emu` command: validate, route test and run, with exit codes and clear messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from edgehub_emu.cli import app
from edgehub_emu.testing import HubProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "deployment.json"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(doc))
    return path


def test_validate_accepts_the_example():
    result = invoke("validate", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert "valid: 2 routes, 2 modules, 0 warnings" in result.output


def test_validate_lists_every_error_with_its_path_and_exits_1(tmp_path: Path):
    doc = json.loads(EXAMPLE.read_text())
    routes = doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    routes["sensorToFilter"]["priority"] = 12
    routes["filterToIoTHub"]["route"] = "FROM /* WHERE temp > 30 INTO $upstream"
    result = invoke("validate", str(write(tmp_path, doc)))
    assert result.exit_code == 1
    assert "routes.sensorToFilter.priority: must be 0–9, got 12" in result.output
    assert "Traceback" not in result.output


def test_validate_strict_fails_on_warnings(tmp_path: Path):
    doc = json.loads(EXAMPLE.read_text())
    doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["x"] = (
        "FROM /* WHERE a!=b INTO $upstream"
    )
    path = write(tmp_path, doc)
    assert invoke("validate", str(path)).exit_code == 0
    strict = invoke("validate", "--strict", str(path))
    assert strict.exit_code == 1
    assert "operator-spacing" in strict.output


def test_validate_reads_dot_env_beside_the_manifest(tmp_path: Path):
    doc = json.loads(EXAMPLE.read_text())
    doc["modulesContent"]["$edgeHub"]["properties.desired"]["storeAndForwardConfiguration"][
        "timeToLiveSecs"
    ] = "${TTL}"
    path = write(tmp_path, doc)
    assert "${TTL} is not set" in invoke("validate", str(path)).output
    (tmp_path / ".env").write_text("# comment\nTTL=300\n")
    # a string where a number belongs: reported as such, not as a missing variable
    result = invoke("validate", str(path))
    assert "${TTL}" not in result.output


def test_route_test_shows_fired_routes_and_endpoints():
    result = invoke(
        "route",
        "test",
        "--manifest",
        str(EXAMPLE),
        "--from",
        "SimulatedTemperatureSensor/temperatureOutput",
        "--json",
        "--body",
        '{"machine": {"temperature": 30}}',
    )
    assert result.exit_code == 0, result.output
    assert "sensorToFilter" in result.output and "fires" in result.output
    assert (
        'BrokeredEndpoint("/modules/filtermodule/inputs/input1")  priority 0  time-to-live 1800 s'
        in result.output
    )


def test_route_test_explains_undefined_and_drops(tmp_path: Path):
    doc = json.loads(EXAMPLE.read_text())
    doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {
        "hot": "FROM /messages/* WHERE $body.machine.temperature > 100 INTO $upstream"
    }
    result = invoke(
        "route", "test", "-m", str(write(tmp_path, doc)), "--from", "filtermodule/output1", "--body", "{}"
    )
    assert "undefined" in result.output
    assert "no contentType" in result.output
    assert "drops this message" in result.output


def test_route_test_rejects_a_bad_property_argument():
    result = invoke("route", "test", "--from", "m", "--prop", "=x", "-m", str(EXAMPLE))
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output


def test_console_script_runs_the_hub_until_interrupted(tmp_path: Path):
    hub = HubProcess(tmp_path, "-m", str(EXAMPLE))
    try:
        assert any("MQTT over TLS" in line for line in hub.banner), hub.banner
        assert hub.endpoints["mqtts_port"] > 0 and hub.endpoints["https_port"] > 0
        assert hub.stop() == 0  # Ctrl-C stops it cleanly
        assert not (tmp_path / "endpoints.json").exists()  # no hub runs here any more
    finally:
        hub.process.kill()


def test_creds_prints_connection_string_and_ca_file(tmp_path: Path):
    result = invoke(
        "creds", "filtermodule", "-m", str(EXAMPLE), "--data-dir", str(tmp_path), "--hostname", "gw.local"
    )
    assert result.exit_code == 0, result.output
    lines = dict(line.split("=", 1) for line in result.stdout.strip().splitlines())
    assert lines["EdgeHubConnectionString"].startswith("HostName=")
    assert "ModuleId=filtermodule;SharedAccessKey=" in lines["EdgeHubConnectionString"]
    assert lines["EdgeHubConnectionString"].endswith(";GatewayHostName=gw.local")
    assert Path(lines["EdgeModuleCACertificateFile"]).is_file()
    again = invoke(
        "creds",
        "filtermodule",
        "--format",
        "json",
        "-m",
        str(EXAMPLE),
        "--data-dir",
        str(tmp_path),
        "--hostname",
        "gw.local",
    )
    assert (
        json.loads(again.stdout)["EdgeHubConnectionString"] == lines["EdgeHubConnectionString"]
    )  # keys are kept
    shell = invoke(
        "creds", "filtermodule", "--format", "shell", "-m", str(EXAMPLE), "--data-dir", str(tmp_path)
    )
    exported = subprocess.run(
        ["bash", "-c", 'eval "$1"; echo "$EdgeHubConnectionString"', "-", shell.stdout],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert (
        exported.stdout.strip().split(";GatewayHostName=")[0]
        == lines["EdgeHubConnectionString"].split(";GatewayHostName=")[0]
    )
    unknown = invoke("creds", "nobody", "-m", str(EXAMPLE), "--data-dir", str(tmp_path))
    assert unknown.exit_code == 1 and "SimulatedTemperatureSensor, filtermodule" in unknown.output


def test_validate_of_a_missing_file_is_a_message_not_a_traceback(tmp_path: Path):
    exe = shutil.which("edgehub-emu", path=str(Path(sys.executable).parent))
    assert exe is not None
    missing = subprocess.run(
        [exe, "validate", str(tmp_path / "none.json")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1
    assert "cannot read the file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_run_refuses_local_modules_it_cannot_start_and_names_the_problem(tmp_path: Path):
    local = tmp_path / "local.json"
    local.write_text(json.dumps({"modules": {"ghost": {"command": "python ghost.py"}}}))

    result = invoke("run", "-m", str(EXAMPLE), "--data-dir", str(tmp_path), "--local-modules", str(local))
    assert result.exit_code == 1
    assert "modules.ghost: no such module in the deployment" in result.output

    result = invoke("run", "-m", str(EXAMPLE), "--data-dir", str(tmp_path), "--module", "filtermodule")
    assert result.exit_code == 1 and "expected NAME=COMMAND" in result.output


def test_a_missing_body_or_payload_file_is_a_message_not_a_traceback(tmp_path: Path):
    exe = shutil.which("edgehub-emu", path=str(Path(sys.executable).parent))
    assert exe is not None
    for command in (
        ["send", "filtermodule/input1", "--body", "@reading.json"],
        ["invoke", "filtermodule", "reset", "--payload", "@reading.json"],
    ):
        done = subprocess.run(
            [exe, *command, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 2, done.stderr
        said = " ".join(done.stderr.replace("│", " ").split())  # rich wraps the message in a box
        assert "cannot read reading.json: No such file or directory" in said
        assert "Traceback" not in done.stderr


def test_status_says_when_queued_messages_expire_in_words_that_hold():
    from edgehub_emu.cli import _expiry

    assert _expiry(1000.0 + 42.4, now=1000.0) == "next expiry in 42 s"
    assert _expiry(1000.3, now=1000.0) == "next expiry in under a second"  # not "in 0 s"
    assert _expiry(None, now=1000.0) == "all expired: dropped at the next purge (within 30 s)"


def test_run_warns_when_local_modules_cannot_reach_a_hub_off_the_sdks_ports(tmp_path: Path):
    hub = HubProcess(tmp_path, "-m", str(EXAMPLE), "--module", "filtermodule=sleep 60")  # free ports
    try:
        banner = " ".join("".join(hub.banner).split())
        assert "warning: local modules written with Microsoft's SDKs dial port 8883" in banner
    finally:
        assert hub.stop() == 0
