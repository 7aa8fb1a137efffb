"""``--upstream iothub:``: a child edgehub-emu whose upstream is a parent edgehub-emu (nested edge).

Both hubs are real, on 127.0.0.1 with TLS; the child's modules are paho clients. The parent knows the
child as a leaf device (``leaf_devices``), and the child connects up with the parent's connection
string for it and the parent's CA.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgehub_emu.hub import HubError
from edgehub_emu.identity import parse_token, validate
from edgehub_emu.iothub import DESIRED_PROPERTY_UPDATES, METHODS
from edgehub_emu.upstream import IotHubUpstream, Upstream, make_upstream

from .conftest import IOTHUB, Hub, manifest

UP = {"up": "FROM /messages/* INTO $upstream"}
SENSOR_EVENTS = "devices/child/modules/SimulatedTemperatureSensor/messages/events/"


async def eventually(check: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def has_feature(hub: Hub, identity_id: str, feature: str) -> bool:
    """Whether ``identity_id`` is connected to ``hub`` with ``feature`` (methods, desired updates, ...)."""
    return any(i.id == identity_id and feature in i.features for i in hub.hub.snapshot().identities)


def made_here(created: list[Upstream], spec: str, device_id: str, ca_file: Path, **options: Any):
    """An upstream factory for the child hub that keeps what it makes, so that a test can look inside."""

    def factory(capture, hooks) -> Upstream:
        upstream = make_upstream(spec, device_id, capture, hooks, ca_file=ca_file, **options)
        created.append(upstream)
        return upstream

    return factory


def upstream_string(parent: Hub, port: int | None = None) -> str:
    key = parent.hub.identity("child").primary_key  # type: ignore[union-attr]
    return (
        f"iothub:HostName={IOTHUB};DeviceId=child;SharedAccessKey={key};"
        f"GatewayHostName=127.0.0.1;Port={port or parent.port}"
    )


async def start_nested(start_hub: Callable[..., Any], tmp_path: Path, **options: Any) -> tuple[Hub, Hub]:
    """A parent that knows the device "child", and the child hub with the parent as its upstream."""
    parent = await start_hub(manifest(UP), data_dir=tmp_path / "parent", leaf_devices=("child",))
    child = await start_hub(
        manifest(UP),
        data_dir=tmp_path / "child",
        device_id="child",
        upstream=upstream_string(parent),
        upstream_ca=parent.hub.ca_file,
        **options,
    )
    return parent, child


@pytest.fixture
async def nested(start_hub: Callable[..., Any], tmp_path: Path) -> tuple[Hub, Hub]:
    return await start_nested(start_hub, tmp_path)


async def test_module_telemetry_reaches_the_parent_as_the_childs_module(nested: tuple[Hub, Hub]) -> None:
    parent, child = nested
    sensor = await child.client("child/SimulatedTemperatureSensor")
    await sensor.publish(SENSOR_EVENTS + "%24.ct=application%2Fjson&%24.ce=utf-8&alert=yes", b'{"t": 21}')
    record = await eventually(lambda: parent.hub.upstream.messages(), what="the message at the parent")
    message = record[0].message
    assert record[0].origin == "child/SimulatedTemperatureSensor"
    assert message.body == b'{"t": 21}'
    assert message.properties == {"alert": "yes"}
    assert message.system_properties["contentType"] == "application/json"
    assert message.system_properties["contentEncoding"] == "utf-8"
    assert message.system_properties["connectionDeviceId"] == "child"
    # the child's own capture shows what it sent up
    await eventually(lambda: [r.message.body for r in child.hub.upstream.messages()] == [b'{"t": 21}'])


async def test_calls_and_twin_changes_flow_down_and_reports_flow_up(nested: tuple[Hub, Hub]) -> None:
    parent, child = nested
    module = await child.client("child/filtermodule")
    await module.subscribe(
        "$iothub/methods/POST/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/twin/res/#"
    )
    await eventually(
        lambda: has_feature(parent, "child/filtermodule", METHODS), what="the upstream connection"
    )
    await eventually(lambda: has_feature(parent, "child/filtermodule", DESIRED_PROPERTY_UPDATES))

    async def answer() -> None:
        request = await module.next()
        assert request.topic.startswith("$iothub/methods/POST/reset/")
        rid = request.topic.rsplit("=", 1)[1]
        await module.publish(
            f"$iothub/methods/res/200/?$rid={rid}", json.dumps({"was": json.loads(request.payload)})
        )

    answering = asyncio.ensure_future(answer())
    result = await parent.hub.invoke_method("child/filtermodule", "reset", {"hard": True})
    await answering
    assert (result.status, result.payload) == (200, {"was": {"hard": True}})

    parent.hub.patch_desired("child/filtermodule", {"tempLimit": 42})
    patch = await module.next()
    assert patch.topic.startswith("$iothub/twin/PATCH/properties/desired/")
    assert json.loads(patch.payload)["tempLimit"] == 42
    assert child.hub.twin("filtermodule")["desired"]["tempLimit"] == 42

    await module.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", b'{"status": "ok"}')
    await eventually(
        lambda: parent.hub.twin("child/filtermodule")["reported"].get("status") == "ok",
        what="the report upstream",
    )


async def test_a_method_for_an_absent_module_answers_404_through_the_child(nested: tuple[Hub, Hub]) -> None:
    parent, child = nested
    module = await child.client("child/filtermodule")
    await module.subscribe("$iothub/twin/res/#")  # connected, but not listening for methods
    # the upstream connection listens for methods at the parent, though the module does not here
    await eventually(
        lambda: has_feature(parent, "child/filtermodule", METHODS), what="the upstream connection"
    )
    result = await parent.hub.invoke_method("child/filtermodule", "reset", {})
    assert result.status == 404


async def test_a_parent_outage_loses_nothing(start_hub: Callable[..., Any], tmp_path: Path) -> None:
    parent, child = await start_nested(start_hub, tmp_path, delivery_retry_first=0.2)
    port = parent.port
    sensor = await child.client("child/SimulatedTemperatureSensor")
    await sensor.publish(SENSOR_EVENTS, b"0")
    await eventually(lambda: len(child.hub.upstream.messages()) == 1, what="the first message up")
    await parent.hub.stop()
    for i in range(1, 21):  # acknowledged by the child while the parent is away
        await sensor.publish(SENSOR_EVENTS, str(i).encode())
    await asyncio.sleep(1.0)
    assert len(child.hub.upstream.messages()) == 1  # nothing went up
    parent = await start_hub(
        manifest(UP), data_dir=tmp_path / "parent", leaf_devices=("child",), mqtts_port=port
    )
    records = await eventually(
        lambda: (r := parent.hub.upstream.messages()) and len(r) >= 21 and r, timeout=60, what="the backlog"
    )
    assert [r.message.body for r in records] == [str(i).encode() for i in range(21)]


async def test_a_bad_upstream_is_refused_with_a_clear_error(start_hub: Callable[..., Any]) -> None:
    with pytest.raises(HubError, match="--upstream: iothub connection string: missing SharedAccessKey"):
        await start_hub(manifest(UP), upstream="iothub:HostName=h;DeviceId=child")
    with pytest.raises(HubError, match="--upstream: 'http://x': use mqtt://"):
        await start_hub(manifest(UP), upstream="http://x")


async def test_tokens_are_renewed_by_connecting_again(start_hub: Callable[..., Any], tmp_path: Path) -> None:
    parent = await start_hub(manifest(UP), data_dir=tmp_path / "parent", leaf_devices=("child",))
    created: list[Upstream] = []
    child = await start_hub(
        manifest(UP),
        data_dir=tmp_path / "child",
        device_id="child",
        make_upstream=made_here(created, upstream_string(parent), "child", parent.hub.ca_file),
    )
    (upstream,) = created
    assert isinstance(upstream, IotHubUpstream)
    upstream.token_lifetime = 3  # connections made from now on renew after 2.4 s
    module = await child.client("child/filtermodule")
    await module.subscribe("$iothub/methods/POST/#")
    connection = await eventually(lambda: upstream.connections.get("child/filtermodule"))
    await eventually(lambda: connection.connections >= 2, timeout=15, what="a second connection")
    await eventually(
        lambda: has_feature(parent, "child/filtermodule", METHODS), what="the renewed connection"
    )


async def test_per_identity_connection_strings_sign_with_their_own_key(
    start_hub: Callable[..., Any], tmp_path: Path
) -> None:
    parent = await start_hub(manifest(UP), data_dir=tmp_path / "parent", leaf_devices=("child",))
    own_key = "b3duLWtleS1vZi10aGUtZmlsdGVyLW1vZHVsZQ=="
    created: list[Upstream] = []
    identities = (f"HostName={IOTHUB};DeviceId=child;ModuleId=filtermodule;SharedAccessKey={own_key}",)
    await start_hub(
        manifest(UP),
        data_dir=tmp_path / "child",
        make_upstream=made_here(
            created, upstream_string(parent), "edge-device", parent.hub.ca_file, identities=identities
        ),
    )
    (upstream,) = created
    assert isinstance(upstream, IotHubUpstream)
    assert upstream.upstream_id("edge-device/filtermodule") == "child/filtermodule"  # the device id is mapped
    assert upstream.keys == {"edge-device/filtermodule": own_key}
    client = upstream.connection("edge-device/filtermodule")
    token = client.options.password().decode()
    assert parse_token(token).audience == f"{IOTHUB}/devices/child/modules/filtermodule"
    validate(token, device_id="child", module_id="filtermodule", identity_keys=(own_key,), hostnames=[IOTHUB])


async def test_a_refusing_parent_is_reported_and_messages_wait(
    start_hub: Callable[..., Any], tmp_path: Path
) -> None:
    parent = await start_hub(manifest(UP), data_dir=tmp_path / "parent", leaf_devices=("child",))
    wrong_key = "d3Jvbmcta2V5LWZvci10aGUtY2hpbGQtZGV2aWNlISE="
    child = await start_hub(
        manifest(UP),
        data_dir=tmp_path / "child",
        device_id="child",
        upstream=upstream_string(parent).replace(
            parent.hub.identity("child").primary_key,  # type: ignore[union-attr]
            wrong_key,
        ),
        upstream_ca=parent.hub.ca_file,
    )
    sensor = await child.client("child/SimulatedTemperatureSensor")
    await sensor.publish(SENSOR_EVENTS, b"waiting")
    await eventually(
        lambda: (
            "CONNACK 5"
            in str(child.hub.snapshot().upstream["connections"].get("child/SimulatedTemperatureSensor"))
        ),
        what="the refusal in the status",
    )
    assert sum(child.hub.snapshot().depths()["iothub"].values()) == 1

    assert parent.hub.upstream.messages() == []


async def test_desired_changes_made_while_the_connection_was_down_arrive_after_it(
    start_hub: Callable[..., Any], tmp_path: Path
) -> None:
    parent = await start_hub(manifest(UP), data_dir=tmp_path / "parent", leaf_devices=("child",))
    created: list[Upstream] = []
    child = await start_hub(
        manifest(UP),
        data_dir=tmp_path / "child",
        device_id="child",
        make_upstream=made_here(created, upstream_string(parent), "child", parent.hub.ca_file),
    )
    (upstream,) = created
    module = await child.client("child/filtermodule")
    await module.subscribe("$iothub/twin/PATCH/properties/desired/#", "$iothub/twin/res/#")
    await eventually(lambda: upstream.counters["twin_reads"] == 1, what="the first twin read")  # type: ignore[attr-defined]
    assert child.hub.twin("filtermodule")["desired"].get("tempLimit") is None  # the baseline changed nothing
    assert parent.hub.disconnect("child/filtermodule", "network trouble")

    parent.hub.patch_desired("child/filtermodule", {"tempLimit": 77})  # nobody listening at the parent now
    patch = await module.next(timeout=15)
    assert json.loads(patch.payload)["tempLimit"] == 77
    assert child.hub.twin("filtermodule")["desired"]["tempLimit"] == 77
