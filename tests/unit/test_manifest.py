"""Deployment manifests: shapes, ${VAR} substitution, every problem at its path, edgeHub's route rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub_emu.manifest import ManifestError, compile_routes, load_deployment, parse_deployment
from edgehub_emu.routing import Message, ModuleEndpoint, UpstreamEndpoint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "deployment.json"
HUB = "modulesContent.$edgeHub.properties.desired"


def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def problems(document) -> list[str]:
    with pytest.raises(ManifestError) as exc:
        d = parse_deployment(document, env={})
        compile_routes(d, "dev")
    return [str(p) for p in exc.value.problems]


def hub(document: dict) -> dict:
    return document["modulesContent"]["$edgeHub"]["properties.desired"]


def test_documentation_example_validates_and_routes_as_edgehub():
    deployment = load_deployment(EXAMPLE, env={})
    assert deployment.module_names == ["SimulatedTemperatureSensor", "filtermodule"]
    assert deployment.global_ttl_secs == 100
    table = compile_routes(deployment, "dev")

    def send(module: str, output: str | None) -> list:
        system = {"connectionDeviceId": "dev", "connectionModuleId": module}
        if output:
            system["outputName"] = output
        return table.route(Message(body=b"{}", system_properties=system))

    [to_filter] = send("SimulatedTemperatureSensor", "temperatureOutput")
    assert to_filter.endpoint == ModuleEndpoint("dev", "filtermodule", "input1")
    assert (to_filter.priority, to_filter.time_to_live_secs) == (0, 1800)
    [upstream] = send("filtermodule", "output1")
    assert upstream.endpoint == UpstreamEndpoint()
    assert (upstream.priority, upstream.time_to_live_secs) == (1, 1800)
    assert send("SimulatedTemperatureSensor", "other") == []
    assert send("filtermodule", None) == []  # no output name: /outputs/output1 does not match


def test_bare_and_content_wrapped_forms_are_accepted():
    content = example()["modulesContent"]
    assert parse_deployment(content, env={}).module_names == ["SimulatedTemperatureSensor", "filtermodule"]
    wrapped = parse_deployment({"content": {"modulesContent": content}}, env={})
    assert wrapped.prefix == "content.modulesContent."


def test_environment_variables_are_substituted_and_missing_ones_reported():
    doc = example()
    agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    agent["modules"]["filtermodule"]["settings"]["image"] = "${ACR}/filtermodule:${TAG}"
    d = parse_deployment(doc, env={"ACR": "myacr.azurecr.io", "TAG": "1.0"})
    assert d.edge_agent.modules["filtermodule"].settings.image == "myacr.azurecr.io/filtermodule:1.0"
    found = problems(doc)
    image = "modulesContent.$edgeAgent.properties.desired.modules.filtermodule.settings.image"
    assert found == [
        f"{image}: ${{ACR}} is not set in the environment",
        f"{image}: ${{TAG}} is not set in the environment",
    ]


def test_priority_outside_0_to_9_names_path_and_value():
    doc = example()
    hub(doc)["routes"]["sensorToFilter"]["priority"] = 12
    assert problems(doc) == [f"{HUB}.routes.sensorToFilter.priority: must be 0–9, got 12"]


def test_more_than_50_modules_is_an_error_naming_the_limit():
    doc = example()
    modules = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    template = modules["filtermodule"]
    for i in range(50 - len(modules)):
        modules[f"extra{i}"] = template
    parse_deployment(doc, env={})  # 50: fine
    modules["one-too-many"] = template
    (problem,) = problems(doc)
    assert problem.startswith("modulesContent.$edgeAgent.properties.desired.modules: 51 modules:")
    assert "at most 50 modules per IoT Edge deployment" in problem


def test_every_problem_is_reported_at_once():
    doc = example()
    hub(doc)["routes"]["sensorToFilter"]["priority"] = -1
    hub(doc)["routes"]["filterToIoTHub"] = "FROM /* WHERE temp > 30 INTO $upstream"
    hub(doc)["routes"]["bad"] = 42
    del doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["filtermodule"]["status"]
    found = problems(doc)
    assert any(p.startswith(f"{HUB}.routes.sensorToFilter.priority") for p in found)
    assert any(p.startswith(f"{HUB}.routes.bad: must be a route string or an object") for p in found)
    assert any(p.endswith("modules.filtermodule.status: is required") for p in found)
    compile_error = next(p for p in found if p.startswith(f"{HUB}.routes.filterToIoTHub:"))
    assert compile_error.startswith(f"{HUB}.routes.filterToIoTHub: compile error at column 6")
    assert "as_number(temp)" in compile_error
    assert len(found) == 4


def test_route_errors_name_the_route_and_the_kind_of_error():
    doc = example()
    hub(doc)["routes"]["r1"] = "FROM /* INTO $nowhere"
    hub(doc)["routes"]["r2"] = "FROM /* WHERE a == 'b' INTO $upstream"
    found = problems(doc)
    assert found[0].startswith(f"{HUB}.routes.r1: endpoint error at column 14")
    assert found[1].startswith(f"{HUB}.routes.r2: syntax error at column 18")


@pytest.mark.parametrize("version", ["0.9", "1.4", "2.0"])
def test_unknown_edgehub_schema_version_is_rejected(version: str):
    doc = example()
    hub(doc)["schemaVersion"] = version
    [problem] = problems(doc)
    assert problem == f"{HUB}.schemaVersion: must be one of 1.0, 1.1, 1.2, 1.3, got '{version}'"


def test_route_objects_need_schema_1_1():
    doc = example()
    hub(doc)["schemaVersion"] = "1.0"
    assert all("need schemaVersion 1.1" in p for p in problems(doc))
    hub(doc)["routes"] = {"r": "FROM /* INTO $upstream"}
    assert len(parse_deployment(doc, env={}).routes) == 1


def test_missing_priority_is_lowest_and_ttl_zero_is_global():
    doc = example()
    hub(doc)["routes"] = {"r": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": 0}}
    del hub(doc)["storeAndForwardConfiguration"]
    table = compile_routes(parse_deployment(doc, env={}), "dev")
    [copy_] = table.route(Message())
    assert copy_.priority == 2_000_000_000
    assert copy_.time_to_live_secs == 7200


def test_module_twins_are_kept_and_must_be_objects():
    doc = example()
    doc["modulesContent"]["filtermodule"] = {"properties.desired": {"tempLimit": 25}}
    assert parse_deployment(doc, env={}).module_twins == {"filtermodule": {"tempLimit": 25}}
    doc["modulesContent"]["filtermodule"] = {"properties.desired": 5}
    assert problems(doc) == [
        "modulesContent.filtermodule.properties.desired: a module twin needs an object of desired properties"
    ]


def test_create_options_must_be_json():
    doc = example()
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["filtermodule"]["settings"][
        "createOptions"
    ] = "{nope"
    [problem] = problems(doc)
    assert "settings.createOptions" in problem and "JSON" in problem


def test_files_that_are_not_json_or_missing_give_one_clear_problem(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"modulesContent": ')
    with pytest.raises(ManifestError, match=r"not valid JSON: .* line 1"):
        load_deployment(bad, env={})
    with pytest.raises(ManifestError, match="cannot read the file"):
        load_deployment(tmp_path / "missing.json", env={})
    with pytest.raises(ManifestError, match="not a deployment manifest"):
        parse_deployment({"hello": 1}, env={})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200)
@given(_json, st.sampled_from(["$edgeAgent", "$edgeHub", "routes", "modules", "settings"]))
def test_arbitrary_json_in_any_section_is_a_manifest_error_never_a_crash(value, where: str):
    doc = copy.deepcopy(example())
    content = doc["modulesContent"]
    if where in ("$edgeAgent", "$edgeHub"):
        content[where]["properties.desired"] = value
    elif where == "routes":
        hub(doc)["routes"] = value
    elif where == "modules":
        content["$edgeAgent"]["properties.desired"]["modules"] = value
    else:
        content["$edgeAgent"]["properties.desired"]["modules"]["filtermodule"]["settings"] = value
    try:
        compile_routes(parse_deployment(doc, env={}), "dev")
    except ManifestError as exc:
        assert exc.problems
