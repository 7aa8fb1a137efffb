"""Loads the hot path's compiled modules in place of their sources, only while they match the sources.

The build (``python -m edgehub_emu.compiled.build``, run by ``make``) compiles the modules every message
goes through to C with mypyc, as one group, into ``lib/`` beside this file, and records a SHA-256 of each
source in ``lib/manifest.json``. At start, ``install`` checks every recorded hash against the file
(about a millisecond): if all match, an import finder hands out the compiled modules; if one source
changed, none is used, since compiled modules call each other directly and would keep running the old
code of a module loaded as Python. The hub then runs as plain Python: the same behaviour at more CPU
per message (the README's performance section has both), and ``status()`` says why.
``EDGEHUB_EMU_PURE_PYTHON=1`` asks for plain Python.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parents[1]
LIB = Path(__file__).resolve().parent / "lib"
GROUP = "edgehub_emu._compiled"
"""The group's shared library is the module ``edgehub_emu._compiled__mypyc``."""
PURE_VARIABLE = "EDGEHUB_EMU_PURE_PYTHON"

MODULES = (
    "edgehub_emu.mqtt.codec",
    "edgehub_emu.mqtt.server",
    "edgehub_emu.mqtt.session",
    "edgehub_emu.heads.mqtt.head",
    "edgehub_emu.heads.mqtt.proxy",
    "edgehub_emu.iothub.topics",
    "edgehub_emu.iothub.property_bag",
    "edgehub_emu.core.telemetry",
    "edgehub_emu.core.trace",
    "edgehub_emu.routing.message",
    "edgehub_emu.routing.router",
    "edgehub_emu.store.base",
    "edgehub_emu.store.log",
    "edgehub_emu.delivery.modules",
    "edgehub_emu.delivery.stats",
    "edgehub_emu.delivery.window",
)
"""What every routed message runs through, from the MQTT bytes in to the delivery's PUBACK."""


def source_of(module: str) -> Path:
    return PACKAGE.parent / (module.replace(".", "/") + ".py")


def library_of(module: str, lib: Path = LIB) -> Path:
    return lib / (module.replace(".", "/") + importlib.machinery.EXTENSION_SUFFIXES[0])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(root: Path = PACKAGE.parent) -> dict[str, object]:
    """What a build records: the interpreter it is for and the hash of each source, in the package under
    ``root`` (this one by default; the build's copy of it too)."""
    return {
        "python": sys.implementation.cache_tag,
        "sources": {m: digest(root / source_of(m).relative_to(PACKAGE.parent)) for m in MODULES},
    }


def mismatch(lib: Path = LIB) -> str | None:
    """Why the build in ``lib`` cannot be used now, as words after "the compiled hot path" (None: it
    matches the sources)."""
    try:
        recorded = json.loads((lib / "manifest.json").read_text())
    except FileNotFoundError:
        return "is not built"
    except (OSError, ValueError) as exc:
        return f"has an unreadable manifest ({exc})"
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sources"), dict):
        return "has a manifest that is not a build's"
    if recorded.get("python") != sys.implementation.cache_tag:
        return f"was built for {recorded.get('python')}, not {sys.implementation.cache_tag}"
    sources: dict[str, str] = recorded["sources"]
    different = sorted(set(sources).symmetric_difference(MODULES))
    if different:
        return f"was built for another set of modules ({', '.join(different)})"
    for module in MODULES:
        try:
            if digest(source_of(module)) != sources[module]:
                return f"is older than {source_of(module).relative_to(PACKAGE.parent)}"
        except OSError as exc:
            return f"cannot be checked against {module}'s source ({exc})"
        if not library_of(module, lib).exists():
            return f"lacks {module} ({library_of(module, lib).name})"
    return None


class _CompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled module for each name in the build, ahead of its source."""

    def __init__(self, lib: Path) -> None:
        self._files = {name: library_of(name, lib) for name in (*MODULES, GROUP + "__mypyc")}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self._files.get(fullname)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(fullname, file)


_status = "Python (not checked yet)"


def install(lib: Path = LIB) -> str:
    """Use the compiled modules if they match the sources (before any of them is imported); returns
    what the hub runs as, also given by ``status()``."""
    global _status
    if any(isinstance(finder, _CompiledFinder) for finder in sys.meta_path):
        return _status
    if os.environ.get(PURE_VARIABLE, "") not in ("", "0"):
        _status = f"Python ({PURE_VARIABLE} is set)"
        return _status
    reason = mismatch(lib)
    if reason is not None:
        _status = f"Python (the compiled hot path {reason}; `make compiled` builds it)"
        return _status
    sys.meta_path.insert(0, _CompiledFinder(lib))
    _status = "compiled (mypyc)"
    return _status


def status() -> str:
    """``compiled (mypyc)`` or ``Python (why)``: for the start-up banner and the bench report."""
    return _status
