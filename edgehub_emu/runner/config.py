"""How to start each module locally: ``local-modules.json`` and ``--module NAME=COMMAND``.

The file maps module names of the deployment to a command::

    {"modules": {"filtermodule": {"command": [".venv-sdk/bin/python", "filter/main.py"],
                                  "cwd": ".", "env": {"LOG_LEVEL": "debug"}, "credentials": "edge"}}}

``command`` is a list or a shell-like string; ``cwd`` (default: where the hub was started) and
relative command paths resolve against the current directory; ``env`` adds to (and overrides) the
manifest's ``env``; ``credentials`` is ``connection-string`` (default) or ``edge`` (the workload API).
Errors name the file, the field and the rule, all at once.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CREDENTIAL_STYLES = ("connection-string", "edge")


class LocalModulesError(ValueError):
    """The local modules' configuration is wrong; the message names every problem."""


@dataclass(frozen=True)
class LocalModule:
    name: str
    command: tuple[str, ...]
    cwd: Path = field(default_factory=Path.cwd)
    env: dict[str, str] = field(default_factory=dict)
    edge: bool = False


def load_local_modules(path: Path, module_names: list[str]) -> list[LocalModule]:
    """The modules of ``path``, checked against the deployment's ``module_names``."""
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise LocalModulesError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise LocalModulesError(
            f"{path}: not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    problems: list[str] = []
    modules: list[LocalModule] = []
    entries = document.get("modules") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise LocalModulesError(f'{path}: modules: is required, an object of module name -> {{"command": …}}')
    for name, spec in entries.items():
        module = _module(name, spec, module_names, problems)
        if module is not None:
            modules.append(module)
    if problems:
        raise LocalModulesError(f"{path}: " + "; ".join(problems))
    return modules


def parse_module_option(option: str, module_names: list[str]) -> LocalModule:
    """``NAME=COMMAND`` from the command line."""
    name, sep, command = option.partition("=")
    if not sep or not name or not command.strip():
        raise LocalModulesError(
            f"--module {option!r}: expected NAME=COMMAND, e.g. filtermodule='python main.py'"
        )
    problems: list[str] = []
    module = _module(name, {"command": command}, module_names, problems)
    if module is None:
        raise LocalModulesError(f"--module {option!r}: " + "; ".join(problems))
    return module


def _module(name: str, spec: Any, module_names: list[str], problems: list[str]) -> LocalModule | None:
    where = f"modules.{name}"
    before = len(problems)
    if name not in module_names:
        problems.append(f"{where}: no such module in the deployment (it has: {', '.join(module_names)})")
    if not isinstance(spec, dict):
        problems.append(f'{where}: must be an object with "command"')
        return None
    unknown = sorted(set(spec) - {"command", "cwd", "env", "credentials"})
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {', '.join(unknown)} (known: command, cwd, env, credentials)"
        )
    command = spec.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    if not isinstance(command, list) or not command or not all(isinstance(p, str) and p for p in command):
        problems.append(f"{where}.command: must be a non-empty list of strings or a command line")
    cwd = spec.get("cwd", ".")
    if not isinstance(cwd, str):
        problems.append(f"{where}.cwd: must be a path")
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str | int | float | bool) for v in env.values()):
        problems.append(f"{where}.env: must be an object of names to strings")
    credentials = spec.get("credentials", "connection-string")
    if credentials not in CREDENTIAL_STYLES:
        problems.append(
            f"{where}.credentials: must be one of {', '.join(CREDENTIAL_STYLES)}, got {credentials!r}"
        )
    if len(problems) > before:
        return None
    assert isinstance(command, list)
    return LocalModule(
        name=name,
        command=tuple(command),
        cwd=Path(cwd).resolve(),
        env={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()},
        edge=credentials == "edge",
    )
