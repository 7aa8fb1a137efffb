"""A simulated temperature sensor, written with the Azure IoT SDK for Python as any module would be.

It sends readings in the shape of Microsoft's SimulatedTemperatureSensor module on the output
``temperatureOutput``::

    {"machine": {"temperature": 23.4, "pressure": 1.2},
     "ambient": {"temperature": 20.8, "humidity": 25},
     "timeCreated": "2026-11-26T10:30:00.123456+00:00"}

The machine heats up with every reading (by 0.5 to 1.5 degrees) until it runs at 99 to 100 degrees,
and its pressure follows; the direct method ``reset`` cools it back to its starting temperature.
Settings, from the environment or (taking precedence, at any time) from desired properties:

- ``SendInterval``: seconds between readings (default 5);
- ``SendData``: ``false`` pauses sending (default true);
- ``MessageCount``: readings to send before it stops sending, as Microsoft's module does (environment
  only; default 500, 0 = no limit). It says so, and keeps answering ``reset``.

Run it with the credentials edgehub-emu gives (``edgehub-emu creds SimulatedTemperatureSensor``) or in
the edge environment (``--edge``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse

MACHINE_START = 21.0
MACHINE_PRESSURE_LOW, MACHINE_PRESSURE_HIGH = 1.0, 10.0
MACHINE_HOT = 100.0  # the machine runs no hotter; the pressure reaches its high mark here
AMBIENT = 21.0


class Machine:
    """The simulated machine: its state, and one reading at a time."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lock = threading.Lock()
        self.temperature = MACHINE_START

    def reset(self) -> None:
        with self.lock:
            self.temperature = MACHINE_START

    def reading(self) -> dict[str, Any]:
        with self.lock:
            self.temperature += self.rng.uniform(0.5, 1.5)
            if self.temperature > MACHINE_HOT:  # as hot as it gets: it hovers just below
                self.temperature = MACHINE_HOT - self.rng.uniform(0.0, 1.0)
            heat = min(1.0, (self.temperature - MACHINE_START) / (MACHINE_HOT - MACHINE_START))
            machine = {
                "temperature": round(self.temperature, 2),
                "pressure": round(
                    MACHINE_PRESSURE_LOW + heat * (MACHINE_PRESSURE_HIGH - MACHINE_PRESSURE_LOW), 2
                ),
            }
        return {
            "machine": machine,
            "ambient": {
                "temperature": round(AMBIENT + self.rng.uniform(-0.5, 0.5), 2),
                "humidity": self.rng.randint(24, 27),
            },
            "timeCreated": datetime.now(UTC).isoformat(),
        }


class Settings:
    """SendInterval and SendData, changed by desired properties while the module runs."""

    def __init__(self) -> None:
        self.interval = float(os.environ.get("SendInterval", "5"))
        self.send = os.environ.get("SendData", "true").lower() != "false"
        self.count = int(os.environ.get("MessageCount", "500"))
        self.changed = threading.Event()

    def apply(self, desired: dict[str, Any]) -> None:
        if isinstance(desired.get("SendInterval"), int | float) and desired["SendInterval"] > 0:
            self.interval = float(desired["SendInterval"])
        if isinstance(desired.get("SendData"), bool):
            self.send = desired["SendData"]
        self.changed.set()


def log(text: str) -> None:
    print(text, flush=True)


def connect() -> IoTHubModuleClient:
    if "IOTEDGE_WORKLOADURI" in os.environ:
        return IoTHubModuleClient.create_from_edge_environment()
    with open(os.environ["EdgeModuleCACertificateFile"]) as f:
        ca = f.read()
    return IoTHubModuleClient.create_from_connection_string(
        os.environ["EdgeHubConnectionString"],
        server_verification_cert=ca,
    )


def main() -> int:
    machine = Machine(random.Random())
    settings = Settings()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (stopping.set(), settings.changed.set()))

    client = connect()

    def on_method(request: Any) -> None:
        if request.name == "reset":
            machine.reset()
            response = MethodResponse.create_from_method_request(request, 200, {"reset": True})
            log("reset by a direct method")
        else:
            response = MethodResponse.create_from_method_request(
                request, 404, {"error": f"no method {request.name}"}
            )
        client.send_method_response(response)

    client.on_method_request_received = on_method
    client.on_twin_desired_properties_patch_received = settings.apply
    client.connect()
    settings.apply(client.get_twin().get("desired", {}))
    log(f"sending a reading every {settings.interval:g} s")

    sent = 0
    while not stopping.is_set() and (settings.count <= 0 or sent < settings.count):
        if settings.send:
            message = Message(
                json.dumps(machine.reading()), content_encoding="utf-8", content_type="application/json"
            )
            client.send_message_to_output(message, "temperatureOutput")
            sent += 1
        settings.changed.clear()
        settings.changed.wait(settings.interval)
    if stopping.is_set():
        log("stopping")
    else:
        log(
            f"sent {sent} readings (MessageCount={settings.count}, as Microsoft's sensor): no more readings; "
            "the reset method still answers (MessageCount=0 sends for ever)"
        )
    if not stopping.is_set():  # done sending: keep answering methods until told to stop, as the original
        stopping.wait()
    client.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
