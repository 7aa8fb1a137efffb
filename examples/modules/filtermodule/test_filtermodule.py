"""The filter module, tested through the ``edgehub`` fixture with the project's deployment manifest."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("main.py")
SENSOR = Path(__file__).parents[1] / "simulated_temperature_sensor" / "main.py"
MANIFEST = json.loads((Path(__file__).resolve().parents[3] / "config" / "deployment.json").read_text())


def eventually(check: Callable[[], bool], timeout: float = 15, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout} s"
        time.sleep(0.02)


def reading(temperature: float) -> dict:
    return {"machine": {"temperature": temperature, "pressure": 1.0}, "ambient": {}, "timeCreated": "now"}


@pytest.mark.edgehub(sdk=True)  # config/deployment.json: filtermodule's env sets tempLimit to 100
def test_readings_above_the_limit_go_upstream_as_alerts_and_the_rest_are_dropped(edgehub, run_module):
    run_module("filtermodule", SCRIPT)

    edgehub.send_to_input("filtermodule", "input1", reading(99.5))
    edgehub.send_to_input("filtermodule", "input1", b"not a reading")
    edgehub.send_to_input("filtermodule", "input1", reading(104), properties={"site": "A"})

    alert = edgehub.upstream.get(timeout=15)
    assert json.loads(alert.body)["machine"]["temperature"] == 104
    assert alert.properties == {"site": "A", "MessageType": "Alert"}
    assert alert.system_properties["connectionModuleId"] == "filtermodule"
    assert len(edgehub.upstream.all()) == 1  # 99.5 and the bad body came first, and were dropped


@pytest.mark.edgehub(sdk=True)
def test_the_desired_property_overrides_the_limit_and_is_reported(edgehub, run_module):
    module = run_module("filtermodule", SCRIPT)
    eventually(lambda: edgehub.twin("filtermodule")["reported"].get("tempLimit") == 100, what="reported 100")

    edgehub.patch_desired("filtermodule", {"tempLimit": 50})
    module.wait_for_line("the limit is now 50")
    eventually(lambda: edgehub.twin("filtermodule")["reported"].get("tempLimit") == 50, what="reported 50")
    edgehub.send_to_input("filtermodule", "input1", reading(60))

    assert json.loads(edgehub.upstream.get(timeout=15).body)["machine"]["temperature"] == 60


LOW_LIMIT = json.loads(json.dumps(MANIFEST))
LOW_LIMIT["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["filtermodule"]["env"] = {
    "tempLimit": {"value": "25"}
}


@pytest.mark.edgehub(manifest=LOW_LIMIT, sdk=True)
def test_the_documentation_pipeline_sensor_to_filter_to_upstream(edgehub, run_module):
    run_module("filtermodule", SCRIPT)
    run_module("SimulatedTemperatureSensor", SENSOR, SendInterval="0.05", MessageCount="0")

    alert = edgehub.upstream.get(timeout=20)

    assert json.loads(alert.body)["machine"]["temperature"] > 25
    assert alert.properties["MessageType"] == "Alert"
    assert alert.system_properties["connectionModuleId"] == "filtermodule"


@pytest.mark.edgehub(sdk=True)
def test_the_module_also_connects_through_the_edge_environment(edgehub, run_module):
    run_module("filtermodule", SCRIPT, edge=True)  # IOTEDGE_* variables: keys signed by the workload API

    edgehub.send_to_input("filtermodule", "input1", reading(120))

    assert json.loads(edgehub.upstream.get(timeout=15).body)["machine"]["temperature"] == 120
