"""The local module runner's configuration and restart policies, by calling functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgehub_emu.runner import (
    LocalModulesError,
    backoff_seconds,
    load_local_modules,
    parse_module_option,
    should_restart,
)

MODULES = ["SimulatedTemperatureSensor", "filtermodule"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("policy", "exit_code", "restart"),
    [
        ("always", 0, True),
        ("always", 1, True),
        ("on-failure", 0, False),
        ("on-failure", 2, True),
        ("on-failure", -9, True),
        ("on-unhealthy", 0, False),
        ("on-unhealthy", 1, True),
        ("never", 1, False),
        ("never", 0, False),
    ],
)
def test_restart_policies_as_edge_agent_applies_them(policy: str, exit_code: int, restart: bool):
    assert should_restart(policy, exit_code) is restart


def test_backoff_doubles_from_one_second_up_to_a_minute():
    assert [backoff_seconds(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_the_project_local_modules_file_names_both_sample_modules():
    modules = load_local_modules(ROOT / "config" / "local-modules.json", MODULES)

    assert [m.name for m in modules] == MODULES
    assert modules[1].command[-1] == "examples/modules/filtermodule/main.py"
    assert modules[1].env == {"tempLimit": "30"} and not modules[1].edge


def test_every_problem_is_named_with_its_field(tmp_path: Path):
    path = tmp_path / "local.json"
    path.write_text(
        json.dumps(
            {
                "modules": {
                    "nosuchmodule": {"command": ["x"]},
                    "filtermodule": {"command": [], "credentials": "x509", "colour": "red"},
                    "SimulatedTemperatureSensor": {"command": "python main.py --fast", "env": {"n": [1]}},
                }
            }
        )
    )

    with pytest.raises(LocalModulesError) as failure:
        load_local_modules(path, MODULES)

    text = str(failure.value)
    assert text.startswith(f"{path}: ")
    assert (
        "modules.nosuchmodule: no such module in the deployment (it has: SimulatedTemperatureSensor" in text
    )
    assert "modules.filtermodule: unknown field(s) colour" in text
    assert "modules.filtermodule.command: must be a non-empty list" in text
    assert "modules.filtermodule.credentials: must be one of connection-string, edge, got 'x509'" in text
    assert "modules.SimulatedTemperatureSensor.env: must be an object of names to strings" in text


def test_a_command_line_string_is_split_like_a_shell_and_edge_credentials_are_kept(tmp_path: Path):
    path = tmp_path / "local.json"
    path.write_text(
        json.dumps(
            {
                "modules": {
                    "filtermodule": {
                        "command": "python 'my module.py' -v",
                        "credentials": "edge",
                        "cwd": str(tmp_path),
                    }
                }
            }
        )
    )

    (module,) = load_local_modules(path, MODULES)

    assert module.command == ("python", "my module.py", "-v") and module.edge and module.cwd == tmp_path


def test_unreadable_and_malformed_files_say_so(tmp_path: Path):
    with pytest.raises(LocalModulesError, match="cannot read the file"):
        load_local_modules(tmp_path / "missing.json", MODULES)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(LocalModulesError, match=r"not JSON: .*line 1"):
        load_local_modules(tmp_path / "bad.json", MODULES)
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(LocalModulesError, match="modules: is required"):
        load_local_modules(tmp_path / "empty.json", MODULES)


def test_module_options_from_the_command_line():
    assert parse_module_option("filtermodule=python main.py", MODULES).command == ("python", "main.py")
    with pytest.raises(LocalModulesError, match="expected NAME=COMMAND"):
        parse_module_option("filtermodule", MODULES)
    with pytest.raises(LocalModulesError, match="no such module in the deployment"):
        parse_module_option("other=python main.py", MODULES)
