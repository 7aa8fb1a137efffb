"""docker/: no Docker engine runs here, so check what can be checked without one.

Every file the Dockerfiles copy exists; the compose file's services, build files, volumes and module
names agree with the repository and the deployment; and the hub image's install step, run on exactly
the files the image copies, gives a working ``edgehub-emu``, its hot path compiled, in a fresh virtual
environment. (The module
image installs ``examples/modules/requirements.txt``, the file ``make`` builds ``.venv-sdk`` from, which
every SDK test uses.)
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*Dockerfile"))


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for word, rest in instructions(dockerfile):
        if word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            sources += parts[:-1]
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_file_a_dockerfile_copies_exists(dockerfile: Path):
    sources = copy_sources(dockerfile)
    assert sources, f"{dockerfile.name} copies nothing?"
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such file in the repository"


def test_the_hub_image_runs_as_a_user_with_volumes_ports_and_a_health_check():
    steps = instructions(DOCKER / "Dockerfile")
    words = [w for w, _ in steps]
    assert steps[0][1].startswith("python:3.11-slim")
    assert ("USER", "edgehub") in steps and words.index("USER") > words.index("RUN")
    assert ("VOLUME", "/data") in steps and ("EXPOSE", "8883 5671 443") in steps
    health = next(rest for w, rest in steps if w == "HEALTHCHECK")
    assert "http://127.0.0.1:53000/health" in health
    assert ("ENTRYPOINT", '["edgehub-emu"]') in steps and ("CMD", '["run"]') in steps


def test_the_compose_file_agrees_with_the_repository_and_the_deployment():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    manifest = json.loads((ROOT / "config" / "deployment.json").read_text())
    modules = set(manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"])
    services = compose["services"]

    for name, service in services.items():
        build = service["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: volume {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
    module_services = {n for n, s in services.items() if "MODULE" in s.get("environment", {})}
    assert module_services == modules
    for name in module_services:
        environment = services[name]["environment"]
        assert environment["MODULE"] == name
        assert (ROOT / "examples" / "modules" / environment["MODULE_DIR"] / "main.py").is_file()
    words = {word.strip(";") for word in services["credentials"]["command"][0].split()}
    assert modules <= words, "the credentials service must write every module's credentials"
    assert services["edgehub"]["ports"] == ["8883:8883", "5671:5671", "443:443"]


def image_environment(dockerfile: Path) -> dict[str, str]:
    """The ``ENV`` a Dockerfile sets (``KEY=value`` pairs)."""
    environment: dict[str, str] = {}
    for word, rest in instructions(dockerfile):
        if word == "ENV":
            environment.update(pair.split("=", 1) for pair in shlex.split(rest))
    return environment


def _dockerignored(directory: str, names: list[str]) -> list[str]:
    """What .dockerignore keeps out of the image's copy of the package: bytecode, and this checkout's
    build of the compiled hot path (the image compiles its own)."""
    ignored = [n for n in names if n == "__pycache__"]
    if Path(directory) == ROOT / "edgehub_emu" / "compiled":
        ignored += [n for n in names if n.startswith("lib")]
    return ignored


@pytest.mark.timeout(600)  # the install, and the hot path's compile (about 45 s on two cores)
def test_the_hub_images_install_step_and_commands_work_as_the_image_runs_them(tmp_path: Path):
    """`pip install .` on exactly the files the image copies, in a fresh virtual environment; then
    `run` and `creds` in the image's working directory with the image's environment and no checkout
    (the image's /config and /data under tmp_path; ports chosen by the OS, as tests run side by side)."""
    steps = instructions(DOCKER / "Dockerfile")
    workdir = tmp_path / next(rest for word, rest in steps if word == "WORKDIR").lstrip("/")
    for source in copy_sources(DOCKER / "Dockerfile"):
        target = workdir / Path(source).name if source != "config" else tmp_path / "config"
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=_dockerignored)
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target)
    run_step = next(rest for word, rest in steps if word == "RUN")
    # The step's pip and python commands, in order, with the fresh environment's Python (the rest:
    # apt-get and the user, which a container needs and this machine has).
    commands = [shlex.split(c) for c in run_step.split("&&")]
    python_steps = [c for c in commands if c[0] in ("pip", "python")]
    assert [c[:2] for c in python_steps] == [["pip", "install"], ["python", "-P"], ["pip", "uninstall"]]
    assert python_steps[0][2] == "."
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    for command in python_steps:
        argv = [str(python), "-m", *command] if command[0] == "pip" else [str(python), *command[1:]]
        done = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{shlex.join(command)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"

    image_env = image_environment(DOCKER / "Dockerfile")
    assert image_env["EDGEHUB_EMU_MANIFEST"] == "/config/deployment.json"
    env = {
        "PATH": f"{tmp_path / 'venv' / 'bin'}:/usr/bin:/bin",
        **{k: v.replace("/config", str(tmp_path / "config")) for k, v in image_env.items()},
        "EDGEHUB_EMU_DATA_DIR": str(tmp_path / "data"),
        **{f"EDGEHUB_EMU_{port}_PORT": "0" for port in ("MQTTS", "AMQPS", "HTTPS", "HTTP", "METRICS")},
        "EDGEHUB_EMU_HOST": "127.0.0.1",
    }
    exe = str(tmp_path / "venv" / "bin" / "edgehub-emu")
    validated = subprocess.run(
        [exe, "validate", env["EDGEHUB_EMU_MANIFEST"]], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    hub = subprocess.Popen([exe, "run"], cwd=workdir, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert hub.stdout is not None
        banner = ""
        for line in hub.stdout:
            banner += line
            if line.startswith("ready"):
                break
        assert f"deployment {tmp_path / 'config' / 'deployment.json'}" in banner, banner
        assert "AMQP over TLS" in banner
        assert "hot path             compiled (mypyc)" in banner, banner  # the installed package's
        creds = subprocess.run(
            [exe, "creds", "filtermodule"], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
        )
        assert creds.returncode == 0, creds.stderr
        assert "GatewayHostName=edgehub" in creds.stdout  # the image's EDGEHUB_EMU_HOSTNAME
    finally:
        hub.terminate()
        assert hub.wait(30) == 0
