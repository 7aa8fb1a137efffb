"""Loading and running edgeHub conformance vectors (data derived from edgeHub's own unit tests).

The runner reads every ``*.json`` in ``data/`` plus every file named in ``EDGEHUB_VECTORS`` (paths
separated by ``os.pathsep``). Each vector is checked by the function for its ``kind/test``; a vector
kind this build does not implement yet is an expected failure, visible in the summary, never skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgehub_emu.routing import (
    UNDEF,
    ConditionCompileError,
    EndpointError,
    Message,
    RouteError,
    RouteSyntaxError,
    compile_condition,
    compile_route,
    normalize_source,
    parse_route,
)
from edgehub_emu.routing.endpoints import parse_brokered_address
from edgehub_emu.routing.route import source_matches

DATA = Path(__file__).parent / "data"

NOT_YET = {
    "topic": "IoT Hub topic conventions arrive with the MQTT protocol head (issue 3)",
}

# Vectors we deliberately do not reproduce: (kind, test, input) -> reason. Empty today; every entry
# here must say why.
KNOWN_DIFFERENCES: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Vector:
    file: str
    index: int
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return f"{self.data['kind']}/{self.data.get('test', '')}"

    @property
    def id(self) -> str:
        text = self.data["input"] if isinstance(self.data["input"], str) else json.dumps(self.data["input"])
        return f"{self.file}#{self.index}:{self.kind}:{text[:60]}"

    def known_difference(self) -> str | None:
        inp = self.data["input"] if isinstance(self.data["input"], str) else json.dumps(self.data["input"])
        return KNOWN_DIFFERENCES.get((self.data["kind"], self.data.get("test", ""), inp))


def vector_files() -> list[Path]:
    files = sorted(DATA.glob("*.json"))
    extra = os.environ.get("EDGEHUB_VECTORS", "")
    files.extend(Path(p) for p in extra.split(os.pathsep) if p)
    return files


def load_vectors() -> list[Vector]:
    vectors = []
    for path in vector_files():
        for i, data in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            vectors.append(Vector(path.name, i, data))
    return vectors


def _message(m: dict[str, Any]) -> Message:
    body = m.get("body")
    encoding = m.get("body_encoding", "utf-8")
    if body is None:
        data = b""
    elif isinstance(body, str):
        data = body.encode(encoding)
    else:
        data = json.dumps(body).encode(encoding)
    return Message(
        body=data,
        properties=dict(m.get("properties") or {}),
        system_properties=dict(m.get("system_properties") or {}),
    )


def run_condition(v: dict[str, Any]) -> Any:
    try:
        compiled = compile_condition(v["input"], v["message"].get("source"))
    except RouteError:
        return "compile_error"
    result = compiled.evaluate(_message(v["message"]))
    return "undefined" if result is UNDEF else ("true" if result else "false")


def run_route_parse(v: dict[str, Any]) -> Any:
    expected = v["expected"]
    try:
        parsed = parse_route(v["input"])
    except RouteSyntaxError:
        return "parse_error"
    if expected == "config_error":
        try:
            compile_route("r", v["input"], device_id="device")
        except (ConditionCompileError, EndpointError):
            return "config_error"
        return "compiled"
    if parsed.sink.system is not None:
        sink: Any = parsed.sink.system.lower()
    else:
        sink = {"function": parsed.sink.function, "address": parsed.sink.address}
        if (
            isinstance(expected, dict)
            and isinstance(expected.get("sink"), dict)
            and "module" in expected["sink"]
        ):
            module_input = parse_brokered_address(parsed.sink.address or "")
            if module_input is not None:
                sink["module"], sink["input"] = module_input
    return {"source": parsed.source, "condition": parsed.condition, "sink": sink}


def run_route_source_match(v: dict[str, Any]) -> Any:
    route_source = normalize_source(v["route_source"])
    return "match" if source_matches(route_source, v["message"]["message_source"]) else "no_match"


RUNNERS = {
    "condition/compile": run_condition,
    "condition/evaluate": run_condition,
    "route/parse": run_route_parse,
    "route/source_match": run_route_source_match,
}


def run(vector: Vector) -> Any:
    runner = RUNNERS.get(vector.kind)
    if runner is None:
        raise NotImplementedError(
            f"no runner for {vector.kind}: {NOT_YET.get(vector.data['kind'], 'unknown kind')}"
        )
    return runner(vector.data)
