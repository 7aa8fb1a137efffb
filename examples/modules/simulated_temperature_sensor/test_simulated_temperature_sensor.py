"""The simulated temperature sensor, tested through the ``edgehub`` fixture."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from edgehub_emu.routing import Message

SCRIPT = Path(__file__).with_name("main.py")
MANIFEST = json.loads((Path(__file__).resolve().parents[3] / "config" / "deployment.json").read_text())
SENSOR_OUTPUT = "/messages/modules/SimulatedTemperatureSensor/outputs/temperatureOutput"
MANIFEST["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {
    "sensorToCloud": f"FROM {SENSOR_OUTPUT} INTO $upstream"
}
sensor_to_cloud = pytest.mark.edgehub(manifest=MANIFEST, sdk=True)


def machine_temperature(message: Message) -> float:
    return json.loads(message.body)["machine"]["temperature"]


@sensor_to_cloud
def test_sends_readings_in_the_simulated_sensors_shape_and_stops_after_message_count(edgehub, run_module):
    sensor = run_module("SimulatedTemperatureSensor", SCRIPT, SendInterval="0.05", MessageCount="3")
    readings = [edgehub.upstream.get(timeout=15) for _ in range(3)]
    sensor.wait_for_line("sent 3 readings")

    for message in readings:
        body = json.loads(message.body)
        assert set(body) == {"machine", "ambient", "timeCreated"}
        assert set(body["machine"]) == {"temperature", "pressure"}
        assert set(body["ambient"]) == {"temperature", "humidity"}
        assert datetime.fromisoformat(body["timeCreated"]).tzinfo is not None
        assert message.system_properties["contentType"] == "application/json"
        assert message.system_properties["connectionModuleId"] == "SimulatedTemperatureSensor"
    temperatures = [machine_temperature(m) for m in readings]
    assert temperatures == sorted(temperatures) and 21 < temperatures[0] < temperatures[-1] <= 21 + 3 * 1.5
    assert len(edgehub.upstream.all()) == 3


@sensor_to_cloud
def test_the_machine_runs_no_hotter_than_100_degrees(edgehub, run_module):
    sensor = run_module("SimulatedTemperatureSensor", SCRIPT, SendInterval="0.005", MessageCount="200")
    # 200 steps of 0.5 degrees or more: 121 degrees or more without the cap
    temperatures = [machine_temperature(edgehub.upstream.get(timeout=15)) for _ in range(200)]
    sensor.wait_for_line("sent 200 readings (MessageCount=200")
    assert max(temperatures) <= 100 and temperatures[-1] >= 99


@sensor_to_cloud
def test_the_reset_method_cools_the_machine_down(edgehub, run_module):
    run_module("SimulatedTemperatureSensor", SCRIPT, SendInterval="0.02", MessageCount="0")
    edgehub.upstream.get(timeout=15, where=lambda m: machine_temperature(m) > 26)

    result = edgehub.invoke_method("SimulatedTemperatureSensor", "reset", {})

    assert (result.status, result.payload) == (200, {"reset": True})
    edgehub.upstream.get(timeout=15, where=lambda m: machine_temperature(m) <= 22.5)
    unknown = edgehub.invoke_method("SimulatedTemperatureSensor", "explode", {})
    assert unknown.status == 404
