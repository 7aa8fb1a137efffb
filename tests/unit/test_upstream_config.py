"""``--upstream`` values: what is accepted, and errors that say which part is wrong."""

from __future__ import annotations

import pytest

from edgehub_emu.iothub import parse_telemetry, telemetry_topic
from edgehub_emu.upstream import (
    IotHubUpstreamConfig,
    MqttUpstreamConfig,
    UpstreamError,
    parse_upstream,
)

KEY = "c2VjcmV0LWtleS1vZi10aGUtY2hpbGQtZGV2aWNl"


def test_mqtt_urls() -> None:
    assert parse_upstream("mqtt://broker") == MqttUpstreamConfig("broker", 1883, False)
    assert parse_upstream("mqtts://u%40x:p%3Aw@broker:9000?client_id=me") == MqttUpstreamConfig(
        "broker", 9000, True, "u@x", "p:w", "me"
    )


def test_iothub_connection_strings() -> None:
    config = parse_upstream(f"iothub:HostName=hub.azure-devices.net;DeviceId=child;SharedAccessKey={KEY}")
    assert config == IotHubUpstreamConfig("hub.azure-devices.net", "child", KEY)
    assert config.connect_host == "hub.azure-devices.net"
    nested = parse_upstream(
        f"iothub:HostName=hub.azure-devices.net;DeviceId=child;SharedAccessKey={KEY};GatewayHostName=parent;Port=18883"
    )
    assert isinstance(nested, IotHubUpstreamConfig)
    assert (nested.connect_host, nested.port) == ("parent", 18883)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("amqp://broker", "use mqtt://host:port"),
        ("mqtt://broker:99999", "port is not a number in range"),
        ("mqtt://broker?qos=2", "unknown option(s) qos"),
        ("iothub:HostName=h;DeviceId=d", "missing SharedAccessKey"),
        (f"iothub:HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey={KEY}", "not a module's"),
        ("iothub:HostName=h;DeviceId=d;SharedAccessKey=not base64!", "not base64"),
        (f"iothub:HostName=h;DeviceId=d;SharedAccessKey={KEY};Port=x", "port 'x' is not a number"),
        ("iothub:HostName", "is not Key=value"),
    ],
)
def test_errors_name_the_part(text: str, words: str) -> None:
    with pytest.raises(UpstreamError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_upstream(text)


def test_telemetry_topic_round_trips_through_the_parents_parser() -> None:
    system = {
        "messageId": "m1",
        "contentType": "application/json",
        "outputName": "alerts",
        "edgeMessageId": "x",
    }
    topic = telemetry_topic("child", "filter", {"level": "high", "empty": None}, system)
    parsed = parse_telemetry(topic)
    assert parsed.properties == {"level": "high", "empty": None}
    assert parsed.system_properties["outputName"] == "alerts"
    assert parsed.system_properties["messageId"] == "m1"
    assert "edgeMessageId" not in parsed.system_properties  # the parent makes its own
