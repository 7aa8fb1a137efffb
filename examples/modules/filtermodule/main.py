"""The filter module of the IoT Edge documentation's example, written with the Azure IoT SDK for Python.

It reads temperature readings on ``input1`` and forwards those whose ``machine.temperature`` is above
the limit to ``output1``, with the application property ``MessageType=Alert`` added; the others are
dropped. The limit comes from the environment variable ``tempLimit`` (the manifest's ``env``; default
25) and is overridden, at start and at any time, by the desired property ``tempLimit``; the module
reports the limit it uses as the reported property ``tempLimit``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

from azure.iot.device import IoTHubModuleClient, Message


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


def temperature(body: bytes) -> float | None:
    """The reading's machine temperature, or None when the body is not a reading."""
    try:
        value = json.loads(body)["machine"]["temperature"]
    except (ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def main() -> int:
    limit = float(os.environ.get("tempLimit", "25"))
    client = connect()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())

    def use_limit(desired: dict[str, Any]) -> None:
        nonlocal limit
        value = desired.get("tempLimit")
        if isinstance(value, int | float) and not isinstance(value, bool):
            limit = float(value)
            log(f"the limit is now {limit:g}")
        client.patch_twin_reported_properties({"tempLimit": limit})

    def on_message(message: Message) -> None:
        if message.input_name != "input1":
            return
        reading = temperature(message.data)
        if reading is None:
            log("dropped a message that is not a temperature reading")
            return
        if reading <= limit:
            return
        alert = Message(message.data, content_encoding="utf-8", content_type="application/json")
        # The Python SDK leaves the hub's $.cdid/$.cmid (who sent the reading) among custom_properties:
        # keep only the application's own properties.
        kept = {k: v for k, v in message.custom_properties.items() if not k.startswith("$.")}
        alert.custom_properties = {**kept, "MessageType": "Alert"}
        client.send_message_to_output(alert, "output1")
        log(f"alert: machine temperature {reading:g} is above {limit:g}")

    client.on_message_received = on_message
    client.on_twin_desired_properties_patch_received = use_limit
    client.connect()
    use_limit(client.get_twin().get("desired", {}))
    log(f"forwarding readings above {limit:g} to output1")
    stopping.wait()
    client.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
