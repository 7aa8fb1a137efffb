"""The compiled hot path: used only while it matches the sources, and kept clear of what mypyc gets wrong."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgehub_emu.compiled import MODULES, PURE_VARIABLE, mismatch, status
from edgehub_emu.compiled.loader import LIB, source_of

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def test_the_hot_path_runs_compiled():
    """``make test`` builds it first; this fails when the build was skipped or left stale (run
    ``make compiled``), so that the suite never passes on the Python sources alone unnoticed."""
    assert status() == "compiled (mypyc)", status()
    for name in MODULES:
        module = importlib.import_module(name)
        assert module.__file__ is not None and module.__file__.endswith(SUFFIX), (name, module.__file__)


def recorded() -> dict:
    return json.loads((LIB / "manifest.json").read_text())


def test_a_source_changed_since_the_build_turns_the_whole_build_off(tmp_path: Path):
    manifest = recorded()
    manifest["sources"]["edgehub_emu.mqtt.codec"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert mismatch(tmp_path) == "is older than edgehub_emu/mqtt/codec.py"


def test_a_build_is_refused_for_another_interpreter_a_lost_library_or_a_damaged_manifest(tmp_path: Path):
    assert mismatch(tmp_path) == "is not built"
    manifest = recorded()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))  # hashes right, libraries absent
    assert mismatch(tmp_path) == f"lacks edgehub_emu.mqtt.codec (codec{SUFFIX})"
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "python": "cpython-39"}))
    assert mismatch(tmp_path) == f"was built for cpython-39, not {sys.implementation.cache_tag}"
    del manifest["sources"]["edgehub_emu.store.log"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert mismatch(tmp_path) == "was built for another set of modules (edgehub_emu.store.log)"
    (tmp_path / "manifest.json").write_text("{not json")
    assert (mismatch(tmp_path) or "").startswith("has an unreadable manifest")


def test_asking_for_python_loads_the_sources():
    code = (
        "import edgehub_emu.compiled as c, edgehub_emu.mqtt.codec as codec;"
        "print(c.status()); print(codec.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, PURE_VARIABLE: "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    said, file = done.stdout.splitlines()
    assert said == f"Python ({PURE_VARIABLE} is set)"
    assert file.endswith("edgehub_emu/mqtt/codec.py")


# --- what mypyc compiles wrongly or not at all, kept out of the compiled modules ---------------------


def parsed() -> list[tuple[str, ast.Module]]:
    return [(name, ast.parse(source_of(name).read_text())) for name in MODULES]


@pytest.mark.parametrize(("name", "tree"), parsed(), ids=[name for name in MODULES])
def test_one_function_never_names_two_kinds_of_exception_alike(name: str, tree: ast.Module):
    """mypyc gives ``except A as exc`` and ``except B as exc`` in one function one variable, typed by
    the first: catching B then raises TypeError (a CONNECT refused for a bad password crashed so)."""
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            kinds: dict[str, set[str]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    kinds.setdefault(node.name, set()).add(ast.unparse(node.type))
            clashes = {variable: types for variable, types in kinds.items() if len(types) > 1}
            assert not clashes, f"{name}.{function.name}: {clashes}"


@pytest.mark.parametrize(("name", "tree"), parsed(), ids=[name for name in MODULES])
def test_no_compiled_class_subclasses_a_thread_or_an_os_error(name: str, tree: ast.Module):
    """A compiled subclass of ``threading.Thread`` crashed the interpreter; mypyc refuses subclasses of
    ``OSError`` (``ConnectionError`` and the rest). Such classes live in modules that are not compiled."""
    refused = {"Thread", "threading.Thread", "OSError", "ConnectionError", "TimeoutError", "IOError"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(base) for base in node.bases}
            assert not bases & refused, f"{name}.{node.name} subclasses {bases & refused}"
