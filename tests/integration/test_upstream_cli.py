"""The README's nested-edge walk-through, with real processes: a parent ``edgehub-emu run`` that knows
the child device, ``creds --format string`` for it, and a child ``run --upstream iothub:…`` whose
filter module's output reaches the parent's own ``$upstream``, both on the default deployment."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from edgehub_emu.client import HubClient

from .conftest import ROOT, HubSubprocess


def test_nested_edge_from_the_command_line(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("edgehub-emu"))
    parent = HubSubprocess(tmp_path / "parent", "--leaf-device", "child")
    child: HubSubprocess | None = None
    try:
        connection_string = subprocess.run(
            [exe, "creds", "child", "--data-dir", str(tmp_path / "parent"), "--format", "string"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert connection_string.startswith("HostName=") and "DeviceId=child;" in connection_string
        child = HubSubprocess(
            tmp_path / "child",
            "--upstream",
            f"iothub:{connection_string};Port={parent.port}",
            "--upstream-ca",
            str(tmp_path / "parent" / "certs" / "edge-ca.pem"),
            device_id="child",
        )
        assert any("upstream" in line and "as child" in line for line in child.banner), child.banner

        def answer(client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
            if message.topic.startswith("$iothub/methods/POST/ping/"):
                rid = message.topic.rsplit("=", 1)[1]
                client.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"pong": true}', 1)

        module = child.client("filtermodule", on_message=answer)
        module.subscribe("$iothub/methods/POST/#", 1)
        info = module.publish(
            "devices/child/modules/filtermodule/messages/events/%24.on=output1", b'{"t": 99}', 1
        )
        info.wait_for_publish(5)
        api = HubClient(tmp_path / "parent")
        deadline = time.monotonic() + 20
        records: list = []
        while not records and time.monotonic() < deadline:
            records = api.request("GET", "/upstream/messages")["messages"]
            time.sleep(0.1)
        assert records, "nothing reached the parent's $upstream"
        record = records[0]
        assert record["systemProperties"]["connectionDeviceId"] == "child"
        assert record["systemProperties"]["connectionModuleId"] == "filtermodule"
        assert json.loads(record["body"]) == {"t": 99}
        # the cloud side of the parent reaches the module connected to the child
        invoked = subprocess.run(
            [exe, "invoke", "child/filtermodule", "ping", "--data-dir", str(tmp_path / "parent")],
            capture_output=True,
            text=True,
        )
        assert invoked.returncode == 0, invoked.stderr
        assert '"pong": true' in invoked.stdout and "200" in invoked.stdout
        module.disconnect()
        module.loop_stop()
    finally:
        if child is not None:
            child.stop()
        parent.stop()


def test_broker_mode_for_local_tools_from_the_command_line(tmp_path: Path) -> None:
    """`run -m config/broker.json --dev`: anonymous local tools publish and subscribe on user topics."""
    hub = HubSubprocess(tmp_path, "-m", str(ROOT / "config" / "broker.json"), "--dev", "--mqtt-port", "0")
    try:
        assert any("MQTT broker mode" in line for line in hub.banner), hub.banner
        port = json.loads((tmp_path / "endpoints.json").read_text())["mqtt_port"]
        received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        tool = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tool", protocol=mqtt.MQTTv311)
        tool.on_message = lambda _c, _u, m: received.put(m)
        tool.connect("127.0.0.1", port)
        tool.loop_start()
        tool.subscribe("sync/#", 1)
        time.sleep(0.3)
        tool.publish("sync/state", b"on", 1, retain=True).wait_for_publish(5)
        assert received.get(timeout=5).payload == b"on"
        tool.disconnect()
        tool.loop_stop()
    finally:
        hub.stop()
