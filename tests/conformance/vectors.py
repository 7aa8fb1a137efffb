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

from edgehub_emu.iothub import topics
from edgehub_emu.iothub.property_bag import PropertyBagError, decode
from edgehub_emu.mqtt.topic_trie import filter_matches
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

NOT_YET: dict[str, str] = {}

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


def run_topic_inbound(v: dict[str, Any]) -> Any:
    try:
        t = topics.parse_telemetry(v["input"])
    except topics.TopicError:
        return "dropped"
    return {"system_properties": t.system_properties, "properties": t.properties}


def run_topic_template_inbound(v: dict[str, Any]) -> Any:
    bound = topics.match_templates(v["message"]["inbound_templates"], v["input"])
    if bound is None:
        return "no_match"
    params = bound.pop("params", None)
    properties: dict[str, Any] = dict(bound)
    if params is not None:
        try:
            properties.update(decode(params))
        except PropertyBagError:
            return "dropped"
    return {"properties": properties}


def run_topic_outbound(v: dict[str, Any]) -> Any:
    i = v["input"]
    message = v.get("message") or {}
    props = i.get("properties", message.get("properties", {}))
    system = i.get("system_properties", message.get("system_properties", {}))
    template = i["template"]
    if template == "ModuleEndpoint":
        return topics.module_input_topic(i["device"], i["module"], i["input"], props, system)
    if template == "C2D":
        return topics.c2d_topic(i["device"], props, system)
    if template == "TwinEndpoint":
        return topics.twin_response_topic(i["statusCode"], i["rid"])
    if template == "TwinDesiredPropertyUpdate":
        return topics.desired_patch_topic(i["version"])
    raise NotImplementedError(template)


def run_topic_template_outbound(v: dict[str, Any]) -> Any:
    i = v["input"]
    address = topics.fill_template(i["template"], i["system_properties"])
    bag = topics.property_bag.encode(i["properties_to_send"].items())
    return topics.with_bag(address, bag)


def run_topic_twin_address(v: dict[str, Any]) -> Any:
    try:
        a = topics.parse_twin_address(v["input"])
    except topics.TopicError:
        return "error"
    return {"operation": a.operation, "subresource": a.subresource, "properties": a.properties}


def run_topic_twin_request(v: dict[str, Any]) -> Any:
    try:
        request = topics.parse_twin_request(v["input"])
    except topics.TopicError:
        return "error_disconnect"
    response = None if request.rid is None else topics.twin_response_topic(200, request.rid)
    return {"response_topic": response}


def run_topic_method_request(v: dict[str, Any]) -> Any:
    return topics.method_request_topic(v["input"]["method"], v["input"]["rid"])


def run_topic_username(v: dict[str, Any]) -> Any:
    try:
        u = topics.parse_username(v["input"])
    except topics.UsernameError:
        return "error"
    return {
        "deviceId": u.device_id,
        "moduleId": u.module_id,
        "deviceClientType": u.device_client_type,
        "modelId": u.model_id,
    }


RUNNERS = {
    "topic/inbound": run_topic_inbound,
    "topic/template_inbound": run_topic_template_inbound,
    "topic/outbound": run_topic_outbound,
    "topic/template_outbound": run_topic_template_outbound,
    "topic/twin_address": run_topic_twin_address,
    "topic/twin_request": run_topic_twin_request,
    "topic/method_request_outbound": run_topic_method_request,
    "topic/username": run_topic_username,
    "topic/subscription_classification": lambda v: topics.classify_subscription(v["input"]),
    "topic/filter_match": lambda v: filter_matches(v["input"]["filter"], v["input"]["topic"]),
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
