"""Store-and-forward, priority and time-to-live, end to end, on your machine.

    .venv/bin/python examples/store_and_forward.py

1. Start a hub whose routes send a sensor's "alerts" output at priority 0, its "telemetry" at
   priority 2, and its "debug" output with a 2-second time-to-live, all to a filter module's input.
2. With the filter offline, the sensor sends interleaved messages on the three outputs.
3. The hub is stopped and started again on the same data directory: the queue survives.
4. After the debug messages' time-to-live has passed, the filter connects: alerts arrive first, then
   telemetry, in the order they were sent; the debug messages never arrive.
"""

from __future__ import annotations

import asyncio
import json
import queue
import ssl
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from edgehub_emu.hub import EdgeHub
from edgehub_emu.identity import make_token
from edgehub_emu.manifest import parse_deployment
from edgehub_emu.settings import Settings

DEVICE = "edge-device"
MANIFEST = json.loads((Path(__file__).resolve().parents[1] / "config" / "deployment.json").read_text())
SOURCE = "FROM /messages/modules/SimulatedTemperatureSensor/outputs"
SINK = 'INTO BrokeredEndpoint("/modules/filtermodule/inputs/input1")'
MANIFEST["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {
    "alerts": {"route": f"{SOURCE}/alerts {SINK}", "priority": 0},
    "telemetry": {"route": f"{SOURCE}/telemetry {SINK}", "priority": 2},
    "debug": {"route": f"{SOURCE}/debug {SINK}", "priority": 1, "timeToLiveSecs": 2},
}


def connect(hub: EdgeHub, module: str, received: queue.Queue | None = None) -> mqtt.Client:
    identity = hub.identity(module)
    host = hub.settings.iothub_hostname
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=identity.id)
    token = make_token(
        f"{host}/devices/{DEVICE}/modules/{module}", identity.primary_key, int(time.time()) + 600
    )
    client.username_pw_set(f"{host}/{identity.id}/?api-version=2019-10-01", token)
    client.tls_set_context(ssl.create_default_context(cafile=str(hub.ca_file)))
    if received is not None:
        client.on_message = lambda _c, _u, message: received.put(message.payload.decode())
    client.connect("127.0.0.1", hub.endpoints.mqtts_port)
    client.loop_start()
    return client


async def main() -> list[str]:
    data = Path(tempfile.mkdtemp(prefix="store-and-forward-"))
    # every listener on a free port: this runs beside a hub of `make run` (which holds 8883, 53000, …)
    settings = Settings(data_dir=data, mqtts_port=0, amqps_port=0, https_port=0, http_port=0, metrics_port=0)
    deployment = parse_deployment(MANIFEST, env={})

    async with EdgeHub(settings, deployment=deployment) as hub:
        sensor = await asyncio.to_thread(connect, hub, "SimulatedTemperatureSensor")
        topic = f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on="
        for i in range(3):
            for output in ("telemetry", "debug", "alerts"):
                info = sensor.publish(topic + output, f"{output}-{i}", qos=1)
                await asyncio.to_thread(info.wait_for_publish, 5)  # acknowledged = stored
        sensor.disconnect()
        sensor.loop_stop()
        print("queued while the filter is offline:", hub.snapshot().depths()[f"{DEVICE}/filtermodule/input1"])

    await asyncio.sleep(2.5)  # the hub is down; the debug messages' time-to-live runs out

    async with EdgeHub(settings, deployment=deployment) as hub:
        received: queue.Queue[str] = queue.Queue()
        filter_module = await asyncio.to_thread(connect, hub, "filtermodule", received)
        filter_module.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/#", qos=1)
        arrived = []
        while True:
            try:
                arrived.append(await asyncio.to_thread(received.get, True, 1.0))
            except queue.Empty:
                break
        filter_module.disconnect()
        filter_module.loop_stop()
        print("arrived after the restart, in this order:", arrived)
        print("dropped because their time-to-live ran out:", hub.snapshot().dropped["ttl_expiry"])
    return arrived


if __name__ == "__main__":
    asyncio.run(main())
