"""The ``edgehub-emu`` command: ``run``, ``validate`` and ``route test``.

Every command turns bad input into a message that names the file, the JSON path and the rule, and an
exit code (0 fine, 1 problems); a traceback is a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shlex
import signal
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from .client import ApiError, HubClient, HubNotRunning
from .compiled import status as hot_path_status
from .data_files import DamagedFile
from .heap import freeze_start_up_objects
from .hub import EdgeHub, HubError
from .identity import (
    IdentityRegistry,
    credentials,
    ensure_certificates,
    service_connection_string,
    service_key,
)
from .manifest import (
    TARGET,
    Deployment,
    ManifestError,
    compile_routes,
    input_names,
    lint_deployment,
    load_deployment,
    single_module_manifest,
)
from .routing import DEFAULT_PRIORITY, Message, RouteTable
from .routing.message import CONNECTION_DEVICE_ID, CONNECTION_MODULE_ID, OUTPUT_NAME
from .runner import LocalModulesError, load_local_modules, parse_module_option
from .settings import DEFAULT_MANIFEST, Settings, SettingsError
from .store import read_queues
from .views import deployment_graph, format_trace, to_dot, to_mermaid, to_svg

app = typer.Typer(
    name="edgehub-emu",
    help="A local Azure IoT Edge hub: real modules connect, routes, twins and methods work offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
route_app = typer.Typer(help="Try a deployment's routes against a message.", no_args_is_help=True)
app.add_typer(route_app, name="route")

out = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

ManifestOption = typer.Option(
    None,
    "--manifest",
    "-m",
    help=f"Deployment manifest (JSON) [env EDGEHUB_EMU_MANIFEST, else {DEFAULT_MANIFEST}].",
)
DeviceOption = typer.Option(None, "--device-id", help="Edge device id [env EDGEHUB_EMU_DEVICE_ID].")
EnvFileOption = typer.Option(
    None, "--env-file", help="KEY=VALUE file for ${VAR} in the manifest (default: .env beside the manifest)."
)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as deployment template tools read ``.env`` (comments and blanks skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _environment(manifest: Path, env_file: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    candidate = env_file or manifest.parent / ".env"
    if env_file is not None and not env_file.is_file():
        err.print(f"error: --env-file {env_file}: no such file", style="red")
        raise typer.Exit(1)
    if candidate.is_file():
        env.update(read_env_file(candidate))
    return env


def _print_manifest_error(exc: ManifestError) -> None:
    count = len(exc.problems)
    err.print(f"{exc.source}: {count} problem{'s' if count != 1 else ''}", style="bold red")
    for problem in exc.problems:
        err.print(f"  error: {problem}", style="red")


def _load(manifest: Path, device_id: str, env_file: Path | None) -> tuple[Deployment, RouteTable]:
    try:
        deployment = load_deployment(manifest, env=_environment(manifest, env_file))
        return deployment, compile_routes(deployment, device_id)
    except ManifestError as exc:
        _print_manifest_error(exc)
        raise typer.Exit(1) from None


def _settings(**flags: Any) -> Settings:
    """The ``EDGEHUB_EMU_*`` environment, then the flags that were given."""
    try:
        return Settings.from_env(**flags)
    except SettingsError as exc:
        err.print(f"error: {exc}", style="red")
        raise typer.Exit(1) from None


def _device(device_id: str | None) -> str:
    return _settings(device_id=device_id).device_id


def _priority(value: int) -> str:
    return "lowest" if value == DEFAULT_PRIORITY else str(value)


def _print_routes(table: RouteTable) -> None:
    out.print(
        f"{len(table)} route{'s' if len(table) != 1 else ''} (global time-to-live {table.global_ttl_secs} s):"
    )
    for r in table.routes:
        ttl = r.time_to_live_secs or table.global_ttl_secs
        out.print(f"  {r.name}  priority {_priority(r.priority)}, time-to-live {ttl} s")
        where = f" WHERE {r.condition.text}" if r.condition.text != "true" else ""
        out.print(f"    FROM {r.source}{where} INTO {r.endpoint}", style="dim")


@app.command()
def validate(
    manifest: Path = typer.Argument(..., help="Deployment manifest to check."),
    device_id: str | None = DeviceOption,
    env_file: Path | None = EnvFileOption,
    strict: bool = typer.Option(False, "--strict", help="Fail on warnings too."),
) -> None:
    """Check a deployment manifest as edgeHub would, and warn about edgeHub's traps."""
    deployment, table = _load(manifest, _device(device_id), env_file)
    warnings = lint_deployment(deployment, table)
    real = [w for w in warnings if w.severity == "warning"]
    for w in warnings:
        style = "yellow" if w.severity == "warning" else "dim"
        out.print(f"  {w.severity}: {w}", style=style)
    modules = len(deployment.module_names)
    summary = (
        f"{manifest}: valid: {len(table)} route{'s' if len(table) != 1 else ''}, "
        f"{modules} module{'s' if modules != 1 else ''}, {len(real)} warning{'s' if len(real) != 1 else ''}"
    )
    out.print(summary, style="bold green" if not real else "bold yellow")
    if deployment.broker is not None:
        out.print(
            f"  MQTT broker mode: {len(deployment.broker.authorizations)} authorization statements, "
            f"{len(deployment.broker.bridges)} bridges"
        )
    if strict and real:
        raise typer.Exit(1)


def _pairs(values: list[str], option: str) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        result[key] = value if sep else None
    return result


def _message(
    from_: str, device_id: str, body: str | None, props: list[str], sys_props: list[str], as_json: bool
) -> Message:
    system: dict[str, str | None] = {}
    if from_.startswith("device:"):
        leaf = from_.removeprefix("device:")
        if not leaf:
            raise typer.BadParameter("device:ID needs an id", param_hint="--from")
        system[CONNECTION_DEVICE_ID] = leaf
    else:
        module, _, output = from_.partition("/")
        if not module:
            raise typer.BadParameter("expected MODULE, MODULE/OUTPUT or device:ID", param_hint="--from")
        system[CONNECTION_DEVICE_ID] = device_id
        system[CONNECTION_MODULE_ID] = module
        if output:
            system[OUTPUT_NAME] = output
    if as_json:
        system["contentType"] = "application/json"
        system["contentEncoding"] = "utf-8"
    system.update(_pairs(sys_props, "--sys"))
    data = b""
    if body is not None:
        if body.startswith("@"):
            try:
                data = Path(body[1:]).read_bytes()
            except OSError as exc:
                raise typer.BadParameter(
                    f"cannot read {body[1:]}: {exc.strerror}", param_hint="--body"
                ) from None
        else:
            data = body.encode("utf-8")
    return Message(body=data, properties=_pairs(props, "--prop"), system_properties=system)


_OUTCOME = {
    "fired": ("fires", "green"),
    "false": ("false", "default"),
    "undefined": ("undefined", "yellow"),
    "source_mismatch": ("no match", "dim"),
}


@route_app.command("test")
def route_test(
    from_: str = typer.Option(..., "--from", help="MODULE, MODULE/OUTPUT, or device:ID for a leaf device."),
    manifest: Path | None = ManifestOption,
    body: str | None = typer.Option(None, "--body", help="Message body, or @FILE."),
    prop: list[str] = typer.Option([], "--prop", help="Application property KEY=VALUE (repeatable)."),
    sys_prop: list[str] = typer.Option(
        [], "--sys", help="System property KEY=VALUE by edgeHub's name: contentType, cid, messageId, ..."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Set contentType=application/json and contentEncoding=utf-8 (needed by $body)."
    ),
    device_id: str | None = DeviceOption,
    env_file: Path | None = EnvFileOption,
) -> None:
    """Show which routes a message fires, which are false or undefined and why, and where it goes."""
    settings = _settings(device_id=device_id, manifest=manifest)
    device = settings.device_id
    _, table = _load(settings.manifest, device, env_file)
    message = _message(from_, device, body, prop, sys_prop, as_json)
    explanation = table.explain(message)
    out.print(f"message source: {explanation.message_source}")
    width = max((len(v.route.name) for v in explanation.verdicts), default=0)
    for verdict in explanation.verdicts:
        label, style = _OUTCOME[verdict.outcome]
        out.print(f"  {label:9}  {verdict.route.name:{width}}", style=style)
        for reason in verdict.reasons:
            out.print(f"             {reason}", style=style)
    if not explanation.endpoints:
        out.print("no route fired: edgeHub drops this message (reason no_route)", style="bold yellow")
        return
    out.print("delivered to:", style="bold")
    for copy in explanation.endpoints:
        out.print(
            f"  {copy.endpoint}  priority {_priority(copy.priority)}  "
            f"time-to-live {copy.time_to_live_secs} s  (route {copy.route})"
        )


DataDirOption = typer.Option(None, "--data-dir", help="Keys, certificates, twins, sessions [.edgehub-emu].")
HostOption = typer.Option(None, "--host", help="Address to listen on [127.0.0.1].")
HostnameOption = typer.Option(None, "--hostname", help="Gateway host name modules connect to [the host].")


@app.command()
def run(
    manifest: Path | None = ManifestOption,
    device_id: str | None = DeviceOption,
    env_file: Path | None = EnvFileOption,
    data_dir: Path | None = DataDirOption,
    host: str | None = HostOption,
    hostname: str | None = HostnameOption,
    mqtts_port: int | None = typer.Option(
        None, "--mqtts-port", help="MQTT over TLS [8883]; 0 picks a free port."
    ),
    amqps_port: int | None = typer.Option(
        None, "--amqps-port", help="AMQP over TLS [5671]; 0 picks a free port."
    ),
    https_port: int | None = typer.Option(
        None, "--https-port", help="MQTT and AMQP over WebSocket (HTTPS) [443]."
    ),
    mqtt_port: int | None = typer.Option(
        None, "--mqtt-port", help="Plain MQTT for local tools, loopback only [off]."
    ),
    http_port: int | None = typer.Option(
        None, "--http-port", help="Management API (HTTP) [53000]; 0: a free port."
    ),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Prometheus metrics [9600]."),
    api_token: str | None = typer.Option(
        None, "--api-token", help="Bearer token for the management API; needed to serve it beyond loopback."
    ),
    workload_socket: Path | None = typer.Option(
        None, "--workload-socket", help="Unix socket of the workload API [DATA_DIR/workload.sock]."
    ),
    workload_port: int | None = typer.Option(
        None, "--workload-port", help="Also serve the workload API on TCP."
    ),
    store: str | None = typer.Option(
        None, "--store", help="durable (the message log in the data directory) or memory [durable]."
    ),
    watch: bool = typer.Option(True, "--watch/--no-watch", help="Reload the manifest when the file changes."),
    delivery_window: int | None = typer.Option(
        None,
        "--delivery-window",
        min=1,
        help="Module deliveries in flight per client [64]; 1 paces like edgeHub.",
    ),
    local_modules: Path | None = typer.Option(
        None,
        "--local-modules",
        help="JSON mapping modules to local commands: start them as edgeAgent would (README).",
    ),
    module_commands: list[str] = typer.Option(
        [], "--module", help="NAME=COMMAND: start a module of the deployment as a local process (repeatable)."
    ),
    upstream: str | None = typer.Option(
        None,
        "--upstream",
        help="Where $upstream goes instead of the local capture: mqtt://host:port, mqtts://host:port, or "
        "iothub:<edge device connection string> (an IoT hub or a parent edge hub).",
    ),
    upstream_ca: Path | None = typer.Option(
        None,
        "--upstream-ca",
        help="CA certificate of the upstream (a parent edgehub-emu's certs/edge-ca.pem).",
    ),
    upstream_identities: list[str] = typer.Option(
        [],
        "--upstream-identity",
        help="A module's or device's own connection string for iothub: (repeatable; else the device key).",
    ),
    leaf_devices: list[str] = typer.Option(
        [], "--leaf-device", help="A downstream device id (repeatable); a child edge device's modules too."
    ),
    dev: bool = typer.Option(
        False,
        "--dev",
        help="Broker mode: let anonymous local tools use user topics on plain MQTT (127.0.0.1, port 1883 "
        "unless --mqtt-port).",
    ),
    inputs: list[str] = typer.Option(
        [],
        "--inputs",
        "-i",
        help="iotedgehubdev's single-module mode: one module 'target' with these inputs (input1,input2), "
        "fed by POST /api/v1/messages; its outputs go to $upstream. No manifest is read.",
    ),
    max_queued_messages: int | None = typer.Option(
        None,
        "--max-queued-messages",
        min=1,
        help="Broker mode: QoS 1/2 user-topic messages kept for a subscriber that lags [1000]; QoS 0 ones "
        "are dropped (counted).",
    ),
    trace_size: int | None = typer.Option(
        None,
        "--trace-size",
        min=0,
        help="Messages the message trace keeps for 'edgehub-emu trace' and the dashboard [2000]; 0: off.",
    ),
    reset_damaged: bool = typer.Option(
        False,
        "--reset-damaged",
        help="Move a damaged file of the data directory aside (NAME.corrupt-<time>) and start without it, "
        "instead of stopping; what was lost is logged.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every connection and message decision."),
) -> None:
    """Start the hub on a deployment: modules connect over MQTT or AMQP (TLS or WebSocket) and are routed."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if store is not None and store not in ("durable", "memory", "sqlite"):
        raise typer.BadParameter("durable or memory", param_hint="--store")
    settings = _settings(
        manifest=manifest,
        device_id=device_id,
        data_dir=data_dir,
        host=host,
        hostname=hostname,
        mqtts_port=mqtts_port,
        amqps_port=amqps_port,
        https_port=https_port,
        mqtt_port=mqtt_port,
        http_port=http_port,
        metrics_port=metrics_port,
        api_token=api_token,
        workload_socket=workload_socket,
        workload_port=workload_port,
        delivery_window=delivery_window,
        max_queued_messages=max_queued_messages,
        trace_size=trace_size,
        store={"sqlite": "durable"}.get(store or "", store),
        upstream=upstream,
        upstream_ca=upstream_ca,
        upstream_identities=tuple(upstream_identities) or None,
        watch_manifest=watch,
        https_port_fallback=https_port is None and "EDGEHUB_EMU_HTTPS_PORT" not in os.environ,
    )
    if leaf_devices:
        settings = dataclasses.replace(settings, leaf_devices=(*settings.leaf_devices, *leaf_devices))
    if reset_damaged:
        settings = dataclasses.replace(settings, reset_damaged=True)
    if inputs or settings.inputs:
        settings = _single_module(settings, inputs or list(settings.inputs))
    if dev or settings.dev:
        settings = dataclasses.replace(
            settings, dev=True, mqtt_port=1883 if settings.mqtt_port is None else settings.mqtt_port
        )
    manifest = settings.manifest
    deployment, table = _load(manifest, settings.device_id, env_file)
    try:
        modules = load_local_modules(local_modules, deployment.module_names) if local_modules else []
        for option in module_commands:
            chosen = parse_module_option(option, deployment.module_names)
            modules = [m for m in modules if m.name != chosen.name] + [chosen]
    except LocalModulesError as exc:
        err.print(f"error: {exc}", style="red")
        raise typer.Exit(1) from None
    if modules and settings.mqtts_port != 8883:
        err.print(
            f"warning: local modules written with Microsoft's SDKs dial port 8883 (5671 over AMQP) of their "
            f"GatewayHostName, and this hub's MQTT over TLS is on {settings.mqtts_port or 'a free port'}: "
            "they cannot connect unless they are told the port (or use --host with an address of its own)",
            style="yellow",
        )
    try:
        hub = EdgeHub(
            settings,
            deployment=deployment,
            loader=lambda: load_deployment(manifest, env=_environment(manifest, env_file)),
            local_modules=modules,
        )
        _run_until_stopped(hub, table)
    except HubError as exc:
        err.print(f"error: {exc}", style="red")
        raise typer.Exit(1) from None


def _single_module(settings: Settings, inputs: list[str]) -> Settings:
    """iotedgehubdev's ``start -i``: the deployment of the single-module mode, written to the data
    directory (so that ``creds target`` and ``status`` read it too), and the inputs it serves."""
    try:
        names = input_names(inputs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--inputs") from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "single-module.json"
    path.write_text(json.dumps(single_module_manifest(), indent=2), encoding="utf-8")
    return dataclasses.replace(settings, manifest=path, inputs=names, watch_manifest=False)


def _run_until_stopped(hub: EdgeHub, table: RouteTable) -> None:
    async def main() -> None:
        await hub.start()
        stop = asyncio.Event()

        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        _print_started(hub, table)
        freeze_start_up_objects()
        try:
            await stop.wait()
        finally:
            out.print("stopping")
            await hub.stop()

    runner_factory = _loop_factory()
    with asyncio.Runner(loop_factory=runner_factory) as runner:
        runner.run(main())


def _loop_factory():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _print_started(hub: EdgeHub, table: RouteTable) -> None:
    s, e = hub.settings, hub.endpoints
    assert e is not None
    snapshot = hub.snapshot()
    out.print(f"edgehub-emu: edge device '{s.device_id}', deployment {s.manifest}", style="bold")
    if e.mqtts_port is not None:
        out.print(
            f"  MQTT over TLS        {e.host}:{e.mqtts_port}   (modules use GatewayHostName={e.hostname})"
        )
    if e.amqps_port is not None:
        out.print(f"  AMQP over TLS        {e.host}:{e.amqps_port}")
    if e.https_port is not None:
        out.print(f"  MQTT/AMQP over WebSocket  wss://{e.hostname}:{e.https_port}/$iothub/websocket")

    if e.mqtt_port is not None:
        anonymous = "   (anonymous local tools allowed: --dev)" if s.dev and snapshot.broker else ""
        out.print(f"  plain MQTT           {e.mqtt_host}:{e.mqtt_port}{anonymous}")
    if snapshot.upstream["target"] != "local capture":
        out.print(f"  upstream             {snapshot.upstream['target']}")
    if snapshot.broker is not None:
        out.print(
            f"  MQTT broker mode     {snapshot.broker['authorizations']} authorization statements, "
            f"{snapshot.broker['bridges']} bridges (mqttBroker)"
        )
    if e.http_port is not None:
        out.print(f"  dashboard            http://{e.http_host}:{e.http_port}/", style="bold")
        out.print(f"  management API       http://{e.http_host}:{e.http_port}   (docs: /openapi.json)")
    if e.metrics_port is not None:
        out.print(f"  metrics              http://{e.http_host}:{e.metrics_port}/metrics")
    out.print(
        f"  workload API         {e.workload_uri}"
        + (f" and http://127.0.0.1:{e.workload_tcp_port}/" if e.workload_tcp_port else "")
    )
    out.print(f"  edge CA certificate  {e.ca_file}")
    out.print(f"  data directory       {s.data_dir}   (ports in endpoints.json)")
    out.print(f"  hot path             {hot_path_status()}")
    modules = hub.modules
    out.print(f"modules: {', '.join(modules) or '(none)'}")
    if s.inputs:
        out.print(
            f"  single-module mode: '{TARGET}' with inputs {', '.join(s.inputs)}; feed them with POST "
            f'http://{e.http_host}:{e.http_port}/api/v1/messages {{"inputName": …, "data": …}}; its '
            "outputs go to $upstream (edgehub-emu monitor)"
        )
    if modules:
        out.print(f"  credentials for a module: edgehub-emu creds {modules[0]}")
    if snapshot.modules:
        out.print(f"  started here as local processes: {', '.join(m['name'] for m in snapshot.modules)}")
    _print_routes(table)
    out.print("ready; Ctrl-C stops the hub")


@app.command()
def creds(
    module: str | None = typer.Argument(None, help="A module of the deployment, or a leaf device id."),
    output_format: str = typer.Option(
        "env",
        "--format",
        help="env (KEY=value lines, an env file), shell (export lines, for eval), json, or string (the "
        "connection string alone).",
    ),
    edge: bool = typer.Option(
        False, "--edge", help="The IOTEDGE_* variables of the edge environment (workload API) instead."
    ),
    service: bool = typer.Option(
        False,
        "--service",
        help="The cloud side's: an iothubowner connection string for azure-iot-hub (IoTHubRegistryManager), "
        "and the CA to trust (REQUESTS_CA_BUNDLE).",
    ),
    manifest: Path | None = ManifestOption,
    device_id: str | None = DeviceOption,
    env_file: Path | None = EnvFileOption,
    data_dir: Path | None = DataDirOption,
    host: str | None = HostOption,
    hostname: str | None = HostnameOption,
) -> None:
    """Print EdgeHubConnectionString and EdgeModuleCACertificateFile for a module (or a leaf device)."""
    if output_format not in ("env", "shell", "json", "string"):
        raise typer.BadParameter("env, shell, json or string", param_hint="--format")
    settings = _settings(
        manifest=manifest, device_id=device_id, data_dir=data_dir, host=host, hostname=hostname
    )
    if service:
        return _service_creds(settings, output_format)
    if module is None:
        raise typer.BadParameter(
            "name a module (or a leaf device), or ask for --service", param_hint="MODULE"
        )
    settings = _as_the_running_hub(settings, manifest, device_id)
    manifest = settings.manifest
    running = settings.data_dir / "endpoints.json"
    if hostname is None and running.is_file():
        with contextlib.suppress(ValueError, KeyError, OSError):
            settings = dataclasses.replace(settings, hostname=json.loads(running.read_text())["hostname"])
    deployment, _ = _load(manifest, settings.device_id, env_file)
    registry = IdentityRegistry(
        settings.device_id,
        deployment.module_names,
        list(settings.leaf_devices),
        settings.data_dir / "identities.json",
    )
    identity = registry.get(registry.identity_id(module))
    if identity is None and module in registry.stored_ids():  # a leaf device the hub ran with
        registry = IdentityRegistry(
            settings.device_id,
            deployment.module_names,
            [*settings.leaf_devices, module.partition("/")[0]],
            settings.data_dir / "identities.json",
        )
        identity = registry.get(module)
    if identity is None:
        modules = ", ".join(deployment.module_names) or "(none)"
        err.print(
            f"error: no module or leaf device {module!r}; the deployment's modules: {modules}", style="red"
        )
        raise typer.Exit(1)
    ca = ensure_certificates(settings.data_dir / "certs", settings.certificate_names()).ca_cert.resolve()
    if edge and identity.module_id is None:
        err.print(
            "error: the edge environment is for modules; leaf devices use the connection string", style="red"
        )
        raise typer.Exit(1)
    workload_uri = f"unix://{settings.workload_socket_path}"
    with contextlib.suppress(ValueError, KeyError, OSError):
        workload_uri = json.loads(running.read_text())["workload_uri"] or workload_uri
    values = credentials(
        identity,
        settings.iothub_hostname,
        settings.gateway_hostname,
        ca_file=ca,
        workload_uri=workload_uri,
        edge=edge,
    )
    if output_format == "string":
        if edge:
            raise typer.BadParameter("--edge has no connection string", param_hint="--format")
        out.print(values["EdgeHubConnectionString"])
    elif output_format == "json":
        out.print(json.dumps(values, indent=2))
    elif output_format == "shell":
        for key, value in values.items():
            out.print(f"export {key}={shlex.quote(value)}")
    else:
        for key, value in values.items():
            out.print(f"{key}={value}")


def _service_creds(settings: Settings, output_format: str) -> None:
    """The iothubowner connection string of the hub on this data directory (its HTTPS port, where the
    running hub has it) and the CA file that its certificate chains to."""
    about = _running_hub(settings.data_dir) or {}
    host = about.get("hostname") or settings.gateway_hostname
    port = about.get("https_port", settings.https_port)
    if port is None:
        err.print(
            "error: the HTTPS listener is off (--https-port): the service API is served there", style="red"
        )
        raise typer.Exit(1)
    ca = ensure_certificates(settings.data_dir / "certs", settings.certificate_names()).ca_cert.resolve()
    values = {
        "IOTHUB_CONNECTION_STRING": service_connection_string(
            host if port == 443 else f"{host}:{port}", service_key(settings.data_dir)
        ),
        "REQUESTS_CA_BUNDLE": str(ca),
    }
    if output_format == "string":
        out.print(values["IOTHUB_CONNECTION_STRING"])
    elif output_format == "json":
        out.print(json.dumps(values, indent=2))
    else:
        prefix = "export " if output_format == "shell" else ""
        for key, value in values.items():
            out.print(f"{prefix}{key}={shlex.quote(value) if prefix else value}")


def _running_hub(data_dir: Path) -> dict[str, Any] | None:
    """What the hub running on this data directory wrote about itself (``endpoints.json``), if one runs."""
    try:
        about: dict[str, Any] = json.loads((data_dir / "endpoints.json").read_text())
        os.kill(int(about["pid"]), 0)  # still alive (a killed hub leaves the file behind)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return about


def _as_the_running_hub(settings: Settings, manifest: Path | None, device_id: str | None) -> Settings:
    """The running hub's device id and manifest where the command line gives none; without a running
    hub, say which manifest is read (on stderr: the output may be a file's content)."""
    about = _running_hub(settings.data_dir)
    if about is None:
        err.print(f"(no hub runs on {settings.data_dir}: reading {settings.manifest})", style="dim")
        return settings
    changes: dict[str, Any] = {}
    if device_id is None and about.get("device_id"):
        changes["device_id"] = about["device_id"]
    if manifest is None and about.get("manifest"):
        changes["manifest"] = Path(about["manifest"])
    if about.get("iothub_hostname"):
        changes["iothub_hostname"] = about["iothub_hostname"]
    return dataclasses.replace(settings, **changes)


def _running_status(data_dir: Path) -> dict[str, Any] | None:
    """``GET /status`` of the hub running on this data directory, if one is."""
    try:
        status: dict[str, Any] = HubClient(data_dir, os.environ.get("EDGEHUB_EMU_API_TOKEN")).request(
            "GET", "/status"
        )
        return status
    except (HubNotRunning, ApiError):
        return None


def _print_listeners(endpoints_file: Path) -> None:
    """Where the running hub listens, from the ``endpoints.json`` it wrote."""
    try:
        e = json.loads(endpoints_file.read_text())
    except (OSError, ValueError):
        return
    listeners = [
        ("MQTT over TLS", e.get("mqtts_port"), e.get("host")),
        ("AMQP over TLS", e.get("amqps_port"), e.get("host")),
        ("MQTT/AMQP over WebSocket", e.get("https_port"), e.get("host")),
        ("plain MQTT", e.get("mqtt_port"), e.get("mqtt_host")),
        ("management API", e.get("http_port"), e.get("http_host")),
    ]
    out.print(f"listening (GatewayHostName={e.get('hostname')}):")
    for name, port, host in listeners:
        if port is not None:
            out.print(f"  {name:26} {host}:{port}")


def _print_running_hub(hub_status: dict[str, Any]) -> None:
    """Connections, route hits, the upstream and local modules of a running hub."""
    out.print("identities:")
    for identity in hub_status["identities"]:
        transport = f" over {identity['transport']}" if identity.get("transport") else ""
        state = f"connected{transport}" if identity["connected"] else "not connected"
        subscriptions = f", {len(identity['subscriptions'])} subscriptions" if identity["connected"] else ""
        out.print(f"  {identity['id']:40} {identity['kind']:12} {state}{subscriptions}")
    out.print("routes:")
    for route in hub_status["routes"]:
        hits = route["hits"]
        out.print(f"  {route['name']:24} {hits:>8} message{'' if hits == 1 else 's'} routed")
    upstream = hub_status.get("upstream")
    if upstream:
        out.print(f"upstream: {upstream['target']}")
        for name, connection in upstream["connections"].items():
            state = "connected" if connection["connected"] else f"not connected ({connection['error']})"
            out.print(f"  {name:40} {state}")
    broker = hub_status.get("broker")
    if broker:
        counters = broker["counters"]
        out.print(
            f"broker mode: {broker['authorizations']} authorization statements, {broker['bridges']} bridges, "
            f"{len(broker['retained'])} retained messages, {broker.get('sessions', 0)} sessions holding "
            f"{broker.get('subscriptions', 0)} subscriptions; refused: {counters.get('refused_connect', 0)} "
            f"connects, {counters.get('denied_subscribe', 0)} subscriptions, "
            f"{counters.get('denied_publish', 0)} publishes"
        )
    if hub_status.get("modules"):
        out.print("local modules:")
        for module in hub_status["modules"]:
            code = f", last exit code {module['exitCode']}" if "exitCode" in module else ""
            out.print(
                f"  {module['name']:32} {module['runtimeStatus']:8} {module['restartCount']} restarts{code}"
                f"  {module['statusDescription']}"
            )


@app.command()
def status(
    manifest: Path | None = ManifestOption,
    data_dir: Path | None = DataDirOption,
    device_id: str | None = DeviceOption,
    env_file: Path | None = EnvFileOption,
) -> None:
    """Show connections, routes and what waits in the queues (from the running hub, else from its files)."""
    settings = _settings(manifest=manifest, device_id=device_id, data_dir=data_dir)
    settings = _as_the_running_hub(settings, manifest, device_id)
    running = _running_status(settings.data_dir)
    if running is not None:
        _print_listeners(settings.data_dir / "endpoints.json")
        _print_running_hub(running)
        queues = [
            (q["endpoint"], q["priority"], q["messages"], _epoch(q["nextExpiry"])) for q in running["queues"]
        ]
        where = "the running hub"
    else:
        out.print("no hub is running on this data directory", style="dim")
        if (settings.data_dir / "store.sqlite").is_file():
            out.print(
                f"{settings.data_dir / 'store.sqlite'}: an earlier store format; the next start moves it"
            )
        queues = [
            (q.endpoint_id, q.priority, q.messages, q.next_expiry)
            for q in read_queues(settings.data_dir / "queue")
        ]
        where = str(settings.data_dir / "queue")
    _, table = _load(settings.manifest, settings.device_id, env_file)
    routed = {r.endpoint.id: str(r.endpoint) for r in table.routes}
    out.print(f"queues ({where}):")
    if not queues:
        out.print("  all queues are empty")
        return
    now = time.time()
    for endpoint, priority, count, next_expiry in queues:
        name = routed.get(endpoint)
        note = "" if name is not None else "   no route names it any more: kept until the time-to-live"
        out.print(
            f"  {name or endpoint}  priority {_priority(priority)}: {count} waiting, "
            f"{_expiry(next_expiry, now)}{note}"
        )


def _expiry(next_expiry: float | None, now: float) -> str:
    """When the next waiting message's time-to-live runs out (``None``: every one's has)."""
    left = None if next_expiry is None else next_expiry - now
    if left is None or left <= 0:
        return "all expired: dropped at the next purge (within 30 s)"
    return f"next expiry in {left:.0f} s" if left >= 1 else "next expiry in under a second"


def _epoch(iso: str | None) -> float | None:
    if iso is None:
        return None
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --- the cloud side: commands that talk to a running hub ---------------------------------------

TokenOption = typer.Option(None, "--api-token", envvar="EDGEHUB_EMU_API_TOKEN", help="The hub's API token.")


def _client(data_dir: Path | None, token: str | None) -> HubClient:
    try:
        return HubClient(_settings(data_dir=data_dir).data_dir, token)
    except HubNotRunning as exc:
        err.print(f"error: {exc}", style="red")
        raise typer.Exit(1) from None


def _call(action):
    try:
        return action()
    except (ApiError, HubNotRunning) as exc:
        err.print(f"error: {exc}", style="red")
        raise typer.Exit(1) from None


def _file_argument(value: str, option: str) -> bytes:
    """The bytes of ``@FILE``, or a CLI error naming the option and the file."""
    try:
        return Path(value[1:]).read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {value[1:]}: {exc.strerror}", param_hint=option) from None


def _json_argument(value: str | None, option: str) -> Any:
    if value is None:
        return None
    text = _file_argument(value, option).decode("utf-8", "replace") if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from None


@app.command()
def invoke(
    module: str = typer.Argument(..., help="The module (or DEVICE/MODULE)."),
    method: str = typer.Argument(..., help="The method name."),
    payload: str | None = typer.Option(None, "--payload", help="JSON payload, or @FILE."),
    timeout: float = typer.Option(30, "--timeout", help="Seconds to wait for the answer (5 to 300)."),
    connect_timeout: float = typer.Option(
        0, "--connect-timeout", help="Seconds to wait for the module to connect."
    ),
    data_dir: Path | None = DataDirOption,
    token: str | None = TokenOption,
) -> None:
    """Call a direct method on a connected module, as the cloud would."""
    arguments = _json_argument(payload, "--payload")
    client = _client(data_dir, token)
    device, module_id = _device_module(module, data_dir)
    body = {
        "methodName": method,
        "payload": arguments,
        "responseTimeoutInSeconds": timeout,
        "connectTimeoutInSeconds": connect_timeout,
    }
    result = _call(lambda: client.json("POST", f"/twins/{device}/modules/{module_id}/methods", body))
    out.print(json.dumps(result, indent=2))


def _device_module(module: str, data_dir: Path | None) -> tuple[str, str]:
    """DEVICE/MODULE as given, or the running hub's device."""
    if "/" in module:
        device, _, module_id = module.partition("/")
        return device, module_id
    settings = _settings(data_dir=data_dir)
    about = _running_hub(settings.data_dir) or {}
    return about.get("device_id") or settings.device_id, module


twin_app = typer.Typer(help="Show or change a module's twin.", no_args_is_help=True)
app.add_typer(twin_app, name="twin")


@twin_app.command("show")
def twin_show(
    module: str = typer.Argument(..., help="The module (or DEVICE/MODULE)."),
    data_dir: Path | None = DataDirOption,
    token: str | None = TokenOption,
) -> None:
    """Print a module's twin: desired and reported properties with versions and timestamps."""
    client = _client(data_dir, token)
    device, module_id = _device_module(module, data_dir)
    out.print(
        json.dumps(_call(lambda: client.request("GET", f"/twins/{device}/modules/{module_id}")), indent=2)
    )


@twin_app.command("set")
def twin_set(
    module: str = typer.Argument(..., help="The module (or DEVICE/MODULE)."),
    desired: str = typer.Option(..., "--desired", help="A JSON patch of desired properties, or @FILE."),
    data_dir: Path | None = DataDirOption,
    token: str | None = TokenOption,
) -> None:
    """Patch desired properties; the module receives the patch if it listens for them."""
    client = _client(data_dir, token)
    device, module_id = _device_module(module, data_dir)
    patch = _json_argument(desired, "--desired")
    if not isinstance(patch, dict):
        raise typer.BadParameter("a JSON object", param_hint="--desired")
    body = {"properties": {"desired": patch}}
    twin = _call(lambda: client.json("PATCH", f"/twins/{device}/modules/{module_id}", body))
    out.print(json.dumps(twin["properties"]["desired"], indent=2))


@app.command()
def send(
    target: str = typer.Argument(..., help="MODULE/INPUT to deliver to."),
    body: str = typer.Option("", "--body", help="The message body, or @FILE (sent byte for byte)."),
    prop: list[str] = typer.Option([], "--prop", help="Application property KEY=VALUE (repeatable)."),
    content_type: str | None = typer.Option(None, "--content-type", help="e.g. application/json"),
    content_encoding: str | None = typer.Option(None, "--content-encoding", help="e.g. utf-8"),
    message_id: str | None = typer.Option(None, "--message-id"),
    correlation_id: str | None = typer.Option(None, "--correlation-id"),
    data_dir: Path | None = DataDirOption,
    token: str | None = TokenOption,
) -> None:
    """Queue a message for a module input, as if a route had sent it."""
    module, _, input_name = target.partition("/")
    if not module or not input_name:
        raise typer.BadParameter("expected MODULE/INPUT", param_hint="TARGET")
    data = _file_argument(body, "--body") if body.startswith("@") else body.encode()
    client = _client(data_dir, token)
    headers = {"edgehub-properties": json.dumps(_pairs(prop, "--prop"))}
    for header, value in (
        ("content-type", content_type),
        ("content-encoding", content_encoding),
        ("iothub-messageid", message_id),
        ("iothub-correlationid", correlation_id),
    ):
        if value is not None:
            headers[header] = value
    headers.setdefault("content-type", "application/octet-stream")
    result = _call(
        lambda: client.request("POST", f"/modules/{module}/inputs/{input_name}/messages", data, headers)
    )
    out.print(f"queued for {result['queued']} (time-to-live {result['timeToLiveSecs']} s)")


@app.command()
def graph(
    manifest: Path | None = ManifestOption,
    output_format: str = typer.Option(
        "mermaid", "--format", "-f", help="mermaid (GitHub and VS Code markdown), dot (Graphviz) or svg."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    device_id: str | None = DeviceOption,
    env_file: Path | None = EnvFileOption,
) -> None:
    """Draw the deployment's routes: modules with their outputs and inputs, $upstream, bridges, and
    each route as an arrow labelled with its name, priority, time-to-live and condition."""
    if output_format not in ("mermaid", "dot", "svg"):
        raise typer.BadParameter("mermaid, dot or svg", param_hint="--format")
    settings = _settings(device_id=device_id, manifest=manifest)
    deployment, table = _load(settings.manifest, settings.device_id, env_file)
    picture = deployment_graph(deployment, table)
    text = {"mermaid": to_mermaid, "dot": to_dot, "svg": to_svg}[output_format](picture)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    err.print(f"wrote {output} ({output_format}, {len(picture.nodes)} nodes, {len(picture.edges)} routes)")


@app.command()
def trace(
    message_id: str | None = typer.Option(None, "--id", help="The edgeMessageId of one message."),
    module: str | None = typer.Option(None, "--module", "-m", help="Only messages from this module."),
    output: str | None = typer.Option(None, "--output", "-o", help="Only messages sent on this output."),
    last: int = typer.Option(5, "--last", "-n", min=1, max=1000, help="How many of the latest messages."),
    as_json: bool = typer.Option(False, "--json", help="Print the trace as JSON."),
    data_dir: Path | None = DataDirOption,
    token: str | None = TokenOption,
) -> None:
    """Where did my message go? Who sent it, what each route made of it and why, where it was queued,
    and whether it was delivered, retried, dropped or expired (the running hub's latest messages)."""
    client = _client(data_dir, token)
    query = urllib.parse.urlencode(
        {k: v for k, v in {"id": message_id, "module": module, "output": output, "limit": last}.items() if v}
    )
    answer = _call(lambda: client.request("GET", f"/trace?{query}"))
    messages = answer["messages"]
    if not answer["tracing"] and not messages:
        err.print(
            "error: the hub's message trace is off (--trace-size 0) or paused (PUT /trace)", style="red"
        )
        raise typer.Exit(1)
    if as_json:
        out.print_json(json.dumps(messages))
        return
    if not messages:
        wanted = f"message {message_id}" if message_id else "messages" + (f" from {module}" if module else "")
        err.print(f"no {wanted} in the trace (it keeps the hub's latest messages)", style="yellow")
        raise typer.Exit(1)
    for message in messages:
        out.print(format_trace(message), highlight=False, markup=False)
        out.print()


@app.command()
def monitor(
    properties: bool = typer.Option(False, "--properties", help="Show application and system properties."),
    data_dir: Path | None = DataDirOption,
    token: str | None = TokenOption,
) -> None:
    """Show messages as they reach $upstream (Ctrl-C to stop), like 'az iot hub monitor-events'."""
    client = _client(data_dir, token)
    events = _call(lambda: client.stream("/upstream/stream"))
    out.print(f"monitoring $upstream of the hub at {client.base}; Ctrl-C to stop", style="dim")
    try:
        for event in events:
            body = event["body"]
            try:
                shown = (
                    json.dumps(json.loads(body), indent=2)
                    if body is not None
                    else f"<{len(event['bodyBase64'])} base64>"
                )
            except ValueError:
                shown = body
            out.print(f"[{event['enqueuedTime']}] from {event['origin']}:", style="bold")
            out.print(shown)
            if properties:
                out.print(f"  properties: {json.dumps(event['properties'])}", style="dim")
                out.print(f"  system properties: {json.dumps(event['systemProperties'])}", style="dim")
    except KeyboardInterrupt:
        pass


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except DamagedFile as damaged:  # (creds and the like read the data directory's files too)
        err.print(f"error: {damaged}. It holds {damaged.holds}.", style="red")
        sys.exit(1)
