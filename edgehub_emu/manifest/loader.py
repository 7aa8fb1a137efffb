"""Load a deployment manifest: JSON, ``${VAR}`` substitution, models, routes, all problems at once.

Accepted shapes: ``{"modulesContent": {...}}`` (what ``az iot edge set-modules`` takes), the same inside
``{"content": ...}``, and a bare ``{"$edgeAgent": ..., "$edgeHub": ...}``. Every problem is reported
with the JSON path it is at, in the manifest's own shape, and the rule it breaks; one bad route fails
the whole manifest, as one bad route fails edgeHub's whole configuration update.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..broker import BrokerConfig, PolicyError, parse_broker_config
from ..routing import (
    DEFAULT_TIME_TO_LIVE_SECS,
    Route,
    RouteError,
    RouteTable,
    compile_route,
)
from .errors import ManifestError, ManifestProblem
from .models import EdgeAgentDesired, EdgeHubDesired

DESIRED = "properties.desired"
MAX_MODULES = 50
"""IoT Hub's limit on modules in one IoT Edge deployment (IoT Edge's documented limits)."""
M = TypeVar("M", bound=BaseModel)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route as the manifest gives it: name, text, priority (None: lowest) and TTL (0: global)."""

    name: str
    text: str
    priority: int | None
    time_to_live_secs: int
    path: str


@dataclass(frozen=True, slots=True)
class Deployment:
    """A validated deployment manifest."""

    edge_agent: EdgeAgentDesired
    edge_hub: EdgeHubDesired
    routes: tuple[RouteSpec, ...]
    module_twins: dict[str, dict[str, Any]] = field(default_factory=dict)
    prefix: str = "modulesContent."
    source: str = "<manifest>"
    broker: BrokerConfig | None = None
    """``mqttBroker`` (schema 1.2): when present, the hub is also an MQTT broker for user topics."""

    @property
    def module_names(self) -> list[str]:
        return list(self.edge_agent.modules)

    @property
    def global_ttl_secs(self) -> int:
        return self.edge_hub.storeAndForwardConfiguration.timeToLiveSecs or DEFAULT_TIME_TO_LIVE_SECS

    def hub_path(self, *parts: str) -> str:
        return ".".join([f"{self.prefix}$edgeHub", DESIRED, *parts])


def substitute_env(value: Any, env: Mapping[str, str], path: str, problems: list[ManifestProblem]) -> Any:
    """Replace ``${NAME}`` in every string of a JSON value, as deployment templates do."""
    if isinstance(value, str):

        def replace(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                problems.append(ManifestProblem(path, f"${{{name}}} is not set in the environment"))
                return m.group(0)
            return env[name]

        return _VARIABLE.sub(replace, value)
    if isinstance(value, dict):
        return {k: substitute_env(v, env, _join(path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _model_problems(exc: ValidationError, base: str) -> list[ManifestProblem]:
    problems = []
    for error in exc.errors():
        path = base
        for part in error["loc"]:
            path = _join(path, part)
        message = error["msg"]
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "extra_forbidden":  # pragma: no cover - models allow extra fields
            message = "is not allowed"
        problems.append(ManifestProblem(path, message))
    return problems


def _validate(model: type[M], data: Any, path: str, problems: list[ManifestProblem]) -> M | None:
    if not isinstance(data, dict):
        problems.append(ManifestProblem(path, f"must be an object, got {_json_type(data)}"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(_model_problems(exc, path))
        return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _route_specs(hub: EdgeHubDesired, base: str, problems: list[ManifestProblem]) -> list[RouteSpec]:
    specs: list[RouteSpec] = []
    for name, value in hub.routes.items():
        path = f"{base}.routes.{name}"
        if isinstance(value, str):
            specs.append(RouteSpec(name, value, None, 0, path))
            continue
        if not isinstance(value, dict):
            problems.append(
                ManifestProblem(path, f"must be a route string or an object, got {_json_type(value)}")
            )
            continue
        if hub.schemaVersion == "1.0":
            problems.append(
                ManifestProblem(
                    path, "route objects (with priority and timeToLiveSecs) need schemaVersion 1.1 or later"
                )
            )
            continue
        ok = True
        text = value.get("route")
        if not isinstance(text, str):
            message = "is required" if text is None else f"must be a string, got {_json_type(text)}"
            problems.append(ManifestProblem(f"{path}.route", message))
            ok = False
        priority = value.get("priority")
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9
        ):
            shown = (
                priority
                if isinstance(priority, int) and not isinstance(priority, bool)
                else _json_type(priority)
            )
            problems.append(ManifestProblem(f"{path}.priority", f"must be 0–9, got {shown}"))
            ok = False
        ttl = value.get("timeToLiveSecs", 0)
        if ttl is None:
            ttl = 0
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 4294967295:
            problems.append(
                ManifestProblem(
                    f"{path}.timeToLiveSecs", f"must be a whole number of seconds ≥ 0, got {_json_type(ttl)}"
                )
            )
            ok = False
        if ok:
            specs.append(RouteSpec(name, text, priority, ttl, path))  # type: ignore[arg-type]
    return specs


def _locate(document: Any, problems: list[ManifestProblem]) -> tuple[dict[str, Any] | None, str]:
    if not isinstance(document, dict):
        problems.append(
            ManifestProblem("", f"a deployment manifest is a JSON object, got {_json_type(document)}")
        )
        return None, ""
    if isinstance(document.get("content"), dict) and "modulesContent" in document["content"]:
        document, prefix = document["content"], "content."
    else:
        prefix = ""
    if "modulesContent" in document:
        content = document["modulesContent"]
        if not isinstance(content, dict):
            problems.append(
                ManifestProblem(f"{prefix}modulesContent", f"must be an object, got {_json_type(content)}")
            )
            return None, ""
        return content, f"{prefix}modulesContent."
    if "$edgeAgent" in document or "$edgeHub" in document:
        return document, ""
    problems.append(
        ManifestProblem(
            "", "no modulesContent (and no $edgeAgent/$edgeHub): this is not a deployment manifest"
        )
    )
    return None, ""


def parse_deployment(
    document: Any, *, env: Mapping[str, str] | None = None, source: str = "<manifest>"
) -> Deployment:
    """Validate a parsed manifest; raise ManifestError listing every problem."""
    problems: list[ManifestProblem] = []
    document = substitute_env(document, os.environ if env is None else env, "", problems)
    content, prefix = _locate(document, problems)
    if content is None:
        raise ManifestError(source, problems)
    desired: dict[str, Any] = {}
    for system in ("$edgeAgent", "$edgeHub"):
        twin = content.get(system)
        path = f"{prefix}{system}"
        if twin is None:
            problems.append(ManifestProblem(path, "is required"))
        elif not isinstance(twin, dict) or DESIRED not in twin:
            problems.append(ManifestProblem(_join(path, DESIRED), "is required"))
        else:
            desired[system] = twin[DESIRED]
    agent = (
        _validate(EdgeAgentDesired, desired.get("$edgeAgent", {}), f"{prefix}$edgeAgent.{DESIRED}", problems)
        if "$edgeAgent" in desired
        else None
    )
    if agent is not None and len(agent.modules) > MAX_MODULES:
        problems.append(
            ManifestProblem(
                f"{prefix}$edgeAgent.{DESIRED}.modules",
                f"{len(agent.modules)} modules: IoT Hub deploys at most {MAX_MODULES} modules per IoT Edge "
                "deployment (IoT Edge's limits: modules in a deployment)",
            )
        )
    hub = (
        _validate(EdgeHubDesired, desired.get("$edgeHub", {}), f"{prefix}$edgeHub.{DESIRED}", problems)
        if "$edgeHub" in desired
        else None
    )
    specs = _route_specs(hub, f"{prefix}$edgeHub.{DESIRED}", problems) if hub is not None else []
    # Compile every route now too, so that route errors come with all the others in one report.
    _compile_specs(specs, "", problems)
    broker = _broker_config(hub, f"{prefix}$edgeHub.{DESIRED}", problems) if hub is not None else None
    twins: dict[str, dict[str, Any]] = {}
    for name, twin in content.items():
        if name in ("$edgeAgent", "$edgeHub"):
            continue
        path = f"{prefix}{name}"
        if not isinstance(twin, dict) or not isinstance(twin.get(DESIRED), dict):
            problems.append(
                ManifestProblem(_join(path, DESIRED), "a module twin needs an object of desired properties")
            )
            continue
        twins[name] = twin[DESIRED]
    if problems or agent is None or hub is None:
        raise ManifestError(source, problems)
    return Deployment(agent, hub, tuple(specs), twins, prefix, source, broker)


def _broker_config(hub: EdgeHubDesired, base: str, problems: list[ManifestProblem]) -> BrokerConfig | None:
    """``mqttBroker`` belongs to IoT Edge 1.2's MQTT broker preview and schema 1.2 and later; older
    schemas ignore it, as edgeHub does (lint says so)."""
    if hub.mqttBroker is None or hub.schemaVersion in ("1.0", "1.1"):
        return None
    path = f"{base}.mqttBroker"
    try:
        return parse_broker_config(hub.mqttBroker)
    except PolicyError as exc:
        problems.extend(ManifestProblem(_join(path, p) if p else path, m) for p, m in exc.problems)
        return None


def load_deployment(path: str | Path, *, env: Mapping[str, str] | None = None) -> Deployment:
    """Read and validate a manifest file; raise ManifestError (never a traceback for bad input)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(
            str(path), [ManifestProblem("", f"cannot read the file: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ManifestError(str(path), [ManifestProblem("", f"not UTF-8 text: {exc.reason}")]) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = ManifestProblem("", f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
        raise ManifestError(str(path), [problem]) from None
    return parse_deployment(document, env=env, source=str(path))


def _compile_specs(
    specs: Iterable[RouteSpec], device_id: str, problems: list[ManifestProblem]
) -> list[Route]:
    routes: list[Route] = []
    for spec in specs:
        try:
            routes.append(
                compile_route(
                    spec.name,
                    spec.text,
                    device_id=device_id,
                    priority=spec.priority,
                    time_to_live_secs=spec.time_to_live_secs,
                )
            )
        except RouteError as exc:
            for p in exc.problems:
                where = f"line {p.line}, column {p.column}" if "\n" in exc.text else f"column {p.column}"
                problems.append(
                    ManifestProblem(spec.path, f"{exc.kind} at {where} of {exc.text!r}: {p.message}")
                )
    return routes


def compile_routes(deployment: Deployment, device_id: str) -> RouteTable:
    """Compile the deployment's routes for an edge device (endpoints are ``{device_id}/{module}/{input}``)."""
    problems: list[ManifestProblem] = []
    routes = _compile_specs(deployment.routes, device_id, problems)
    if problems:
        raise ManifestError(deployment.source, problems)
    return RouteTable(routes, deployment.global_ttl_secs)
