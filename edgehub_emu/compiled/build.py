"""Compiles the hot path's modules with mypyc into ``edgehub_emu/compiled/lib`` (``make`` runs this).

    python -m edgehub_emu.compiled.build            # build if the sources changed; else say so and stop
    python -m edgehub_emu.compiled.build --require  # and fail (exit 1) when it cannot be built

Needs mypy (the dev extra has it) and a C compiler. Without them the hub runs as Python, and this says
so. The build goes to a temporary directory first and replaces ``lib`` whole, so a failed or
interrupted build leaves the last good one (or none) in place, never half of one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from .loader import GROUP, LIB, MODULES, PACKAGE, library_of, manifest, mismatch, source_of


def _compiler() -> str | None:
    configured = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(os.environ.get("CC", configured).split()[0]) or shutil.which("cc")


def _compile_into(out: Path) -> None:
    """(In a child process, whose output goes to a log.) mypyc's C for the modules, built into ``out``."""
    from mypyc.build import mypycify
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    os.chdir(PACKAGE.parent)  # (the copy's directory, where it runs already) mypy names modules by path
    extensions = mypycify(
        [
            *(str(source_of(module).relative_to(PACKAGE.parent)) for module in MODULES),
            # errors only in what is compiled: the rest is type-checked by `make lint`, against the
            # versions of the dependencies pinned there, not whichever this environment has
            "--follow-imports=silent",
            "--ignore-missing-imports",
        ],
        opt_level="3",
        group_name=GROUP,
        target_dir=str(out / "c"),
    )
    command = build_ext(Distribution({"name": "edgehub-emu-compiled", "ext_modules": extensions}))
    command.build_lib = str(out / "lib")
    command.build_temp = str(out / "objects")
    command.parallel = os.cpu_count() or 1
    command.ensure_finalized()
    command.run()


def build(require: bool = False) -> int:
    reason = mismatch()
    if reason is None:
        print("compiled hot path: up to date")
        return 0
    failed = 1 if require else 0
    try:
        import mypyc  # noqa: F401
    except ImportError:
        print("compiled hot path: mypyc is not installed (pip install mypy); the hub runs as Python")
        return failed
    if _compiler() is None:
        print("compiled hot path: no C compiler found (install gcc); the hub runs as Python")
        return failed
    print(f"compiled hot path: it {reason}; compiling {len(MODULES)} modules with mypyc (~45 s on 2 cores)…")
    started = time.monotonic()
    before = manifest()
    with tempfile.TemporaryDirectory(prefix="edgehub-emu-mypyc-") as directory:
        out = Path(directory)
        # A copy of the package is compiled, from a directory of its own: mypy run among an
        # environment's installed packages takes them for the project's own modules.
        shutil.copytree(PACKAGE, out / "src" / PACKAGE.name, ignore=_not_sources)
        log_path = out / "build.log"
        with log_path.open("w") as log:
            done = subprocess.run(
                [sys.executable, "-m", "edgehub_emu.compiled.build", "--compile-into", str(out)],
                cwd=out / "src",
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        built = out / "lib"
        missing = [m for m in (*MODULES, GROUP + "__mypyc") if not library_of(m, built).exists()]
        if done.returncode != 0 or missing:
            tail = log_path.read_text(errors="replace").splitlines()[-30:]
            print("\n".join(tail))
            print(f"compiled hot path: the build failed (exit {done.returncode}); the hub runs as Python")
            return failed
        if manifest() != before or manifest(out / "src") != before:
            print("compiled hot path: a source changed during the build; run it again")
            return failed
        (built / "manifest.json").write_text(json.dumps(before, indent=2) + "\n")
        _replace(built, LIB)
    print(f"compiled hot path: built in {time.monotonic() - started:.0f} s")
    return 0


def _not_sources(directory: str, names: list[str]) -> list[str]:
    """Bytecode, and builds of the compiled hot path (this one's ``lib``, and its ``lib.*`` while swapped)."""
    ignored = [name for name in names if name == "__pycache__"]
    if Path(directory) == LIB.parent:
        ignored += [name for name in names if name.startswith(LIB.name)]
    return ignored


def _replace(built: Path, lib: Path) -> None:
    """``lib`` becomes ``built``: moved beside it, then swapped in, the old one removed after."""
    incoming = lib.with_name(lib.name + ".incoming")
    outgoing = lib.with_name(lib.name + ".outgoing")
    for leftover in (incoming, outgoing):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(built, incoming)
    if lib.exists():
        lib.rename(outgoing)
    incoming.rename(lib)
    shutil.rmtree(outgoing, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgehub_emu.compiled.build", description=__doc__)
    parser.add_argument("--require", action="store_true", help="exit 1 if it cannot be built")
    parser.add_argument("--compile-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile_into is not None:
        _compile_into(args.compile_into)
        return 0
    return build(args.require)


if __name__ == "__main__":
    sys.exit(main())
