"""The AMQP head over real TLS connections, with a client built on proton's engine: authentication as
edgeHub does it (CBS put-token checked at attach, SASL PLAIN, no SASL), link addresses, edgeHub's
outcomes, flow control, and bad input that closes one connection while the hub serves the others."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from proton import Delivery, Message, int32

from edgehub_emu.core import MethodError
from edgehub_emu.heads.amqp.connection import WRITE_BUFFER_LIMIT
from edgehub_emu.routing import Message as HubMessage

from .amqp_client import AmqpTestClient
from .conftest import DEVICE, Hub

pytestmark = pytest.mark.timeout(60)

SENSOR = f"{DEVICE}/SimulatedTemperatureSensor"
FILTER = f"{DEVICE}/filtermodule"


def audience(hub: Hub, identity_id: str) -> str:
    device, _, module = identity_id.partition("/")
    resource = f"{hub.hub.settings.iothub_hostname}/devices/{device}"
    return resource + (f"/modules/{module}" if module else "")


async def connect(hub: Hub, **options: Any) -> AmqpTestClient:
    endpoints = hub.hub.endpoints
    assert endpoints is not None and endpoints.amqps_port is not None
    return await AmqpTestClient.connect("127.0.0.1", endpoints.amqps_port, str(hub.hub.ca_file), **options)


async def authenticated(hub: Hub, identity_id: str) -> AmqpTestClient:
    client = await connect(hub)
    reply = await client.put_token(hub.token(identity_id), audience(hub, identity_id))
    assert reply.properties["status-code"] == 200
    return client


def events(identity_id: str) -> str:
    device, _, module = identity_id.partition("/")
    return f"/devices/{device}/modules/{module}/messages/events"


async def test_telemetry_after_a_cbs_token_is_routed_with_edgehubs_properties(start_hub):
    hub = await start_hub()
    client = await authenticated(hub, SENSOR)
    sender = await client.sender(events(SENSOR))
    assert client.refused(sender) is None
    message = Message(
        body=b'{"machine": {"temperature": 30}}',
        inferred=True,
        id="m-1",
        correlation_id="c-1",
        content_type="application/json",
        content_encoding="utf-8",
    )
    message.properties = {"iothub-outputname": "temperatureOutput", "alert": "yes", "count": 3}
    delivery = await client.send(sender, message)
    assert delivery.remote_state == Delivery.ACCEPTED
    (queued,) = hub.hub.queued("filtermodule", "input1")
    assert queued.body == b'{"machine": {"temperature": 30}}'
    assert queued.properties == {"alert": "yes", "count": None}  # not a string: a key without a value
    system = queued.system_properties
    assert system["outputName"] == "temperatureOutput"
    assert system["connectionModuleId"] == "SimulatedTemperatureSensor"
    assert (system["messageId"], system["cid"], system["contentType"]) == ("m-1", "c-1", "application/json")
    client.close()


async def test_a_token_is_checked_when_a_link_attaches_not_when_it_is_put(start_hub):
    hub = await start_hub()
    client = await connect(hub)
    wrong = hub.token(SENSOR, key="d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgIQ==")
    reply = await client.put_token(wrong, audience(hub, SENSOR))
    assert reply.properties["status-code"] == 200  # edgeHub stores it unverified
    link = await client.sender(events(SENSOR))
    assert client.refused(link) == "amqp:not-allowed"
    assert "could not be authenticated" in link.remote_condition.description
    assert not hub.hub.is_connected("SimulatedTemperatureSensor")
    client.close()


async def test_an_expired_or_malformed_token_is_refused_with_400(start_hub):
    hub = await start_hub()
    client = await connect(hub)
    expired = hub.token(SENSOR, expiry=int(time.time()) - 3600)
    reply = await client.put_token(expired, audience(hub, SENSOR))
    assert reply.properties["status-code"] == 400
    assert isinstance(reply.properties["status-code"], int32)
    assert "expired" in reply.properties["status-description"]
    reply = await client.put_token("not a token", audience(hub, SENSOR))
    assert reply.properties["status-code"] == 400
    client.close()


async def test_links_to_another_identity_or_an_unknown_address_are_refused(start_hub):
    hub = await start_hub()
    client = await authenticated(hub, SENSOR)
    others = await client.receiver(events(FILTER))  # the filter's inputs, with the sensor's token
    assert client.refused(others) == "amqp:not-allowed"
    unknown = await client.sender(f"/devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/foo")
    assert client.refused(unknown) == "amqp:not-allowed"
    assert "Matching template not found" in unknown.remote_condition.description
    mine = await client.sender(events(SENSOR))  # the connection still serves what it may
    assert client.refused(mine) is None
    client.close()


async def test_sasl_plain_authenticates_one_identity_for_the_whole_connection(start_hub):
    hub = await start_hub()
    hub_name = hub.hub.settings.iothub_hostname.split(".")[0]
    user = f"{DEVICE}/modules/SimulatedTemperatureSensor@sas.{hub_name}"
    client = await connect(hub, sasl=(user, hub.token(SENSOR)))
    mine = await client.sender(events(SENSOR))
    assert client.refused(mine) is None
    assert hub.hub.is_connected("SimulatedTemperatureSensor")
    other = await client.receiver(events(FILTER))
    assert client.refused(other) == "amqp:not-allowed"
    cbs = await client.sender("$cbs")
    assert client.refused(cbs) == "amqp:not-allowed"
    client.close()

    refused = await connect(
        hub, sasl=(user, hub.token(SENSOR, key="d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgIQ=="))
    )
    await refused.until(lambda: refused.closed.done(), what="the connection to close")


async def test_module_inputs_follow_credit_and_nothing_waits_in_memory(start_hub):
    hub = await start_hub()
    for i in range(20):
        await hub.hub.send_to_input("filtermodule", "input1", HubMessage(body=str(i).encode()))
    client = await authenticated(hub, FILTER)
    inputs = await client.receiver(events(FILTER), credit=0)
    assert hub.hub.is_connected("filtermodule")
    inputs.flow(1)
    client.pump()
    got = await client.until(lambda: client.received.get(inputs.name), what="the first input")
    assert [m.body for m in got] == [b"0"]  # exactly what the credit allowed
    assert got[0].annotations["x-opt-input-name"] == "input1"
    assert len(hub.hub.queued("filtermodule", "input1", limit=100)) == 20  # the rest wait in the queue
    inputs.flow(50)
    client.pump()
    await client.until(lambda: len(client.received[inputs.name]) == 20, what="the other inputs")
    assert [m.body for m in client.received[inputs.name]] == [str(i).encode() for i in range(20)]
    await client.until(lambda: not hub.hub.queued("filtermodule", "input1"), what="the acknowledgements")
    client.close()


@pytest.mark.parametrize("outcome", [Delivery.REJECTED, Delivery.RELEASED])
async def test_a_rejected_or_released_input_is_dropped_as_edgehub_drops_it(start_hub, outcome):
    hub = await start_hub()
    client = await authenticated(hub, FILTER)
    inputs = await client.receiver(events(FILTER), credit=10, auto_accept=False)
    await hub.hub.send_to_input("filtermodule", "input1", HubMessage(body=b"first"))
    (first,) = await client.until(lambda: client.received.get(inputs.name), what="the first input")
    first.delivery.update(outcome)
    first.delivery.settle()
    client.pump()
    await hub.hub.send_to_input("filtermodule", "input1", HubMessage(body=b"sentinel"))
    await client.until(lambda: len(client.received[inputs.name]) == 2, what="the sentinel")
    assert [m.body for m in client.received[inputs.name]] == [b"first", b"sentinel"]  # not again
    client.close()


async def test_a_method_response_status_must_be_an_amqp_int(start_hub):
    hub = await start_hub()
    client = await authenticated(hub, FILTER)
    address = f"/devices/{DEVICE}/modules/filtermodule/methods/devicebound"
    requests = await client.receiver(address)
    responses = await client.sender(address)
    for status, expected in ((int32(201), 201), (201, 400000)):  # a Python int is an AMQP long
        call = hub.hub.invoke_method(
            "filtermodule", "reset", {"n": 1}, response_timeout=10, connect_timeout=5
        )
        task = asyncio.ensure_future(call)
        request = (await client.until(lambda: client.received.get(requests.name), what="the request"))[-1]
        client.received[requests.name].clear()
        assert request.properties["IoThub-methodname"] == "reset"
        answer = Message(body=b'{"done": true}', inferred=True, correlation_id=request.correlation_id)
        answer.properties = {"IoThub-status": status}
        await client.send(responses, answer)
        result = await task
        assert result.status == expected
    client.close()


async def test_garbage_closes_that_connection_and_the_hub_serves_the_others(start_hub):
    hub = await start_hub()
    bad = await connect(hub)
    bad.write_raw(b"\x00\x00\x00\x10\x02\x00\x00\x00garbage!")
    await bad.until(lambda: bad.closed.done(), what="the bad connection to close")
    good = await authenticated(hub, SENSOR)
    sender = await good.sender(events(SENSOR))
    message = Message(body=b"still here", inferred=True)
    message.properties = {"iothub-outputname": "temperatureOutput"}
    assert (await good.send(sender, message)).remote_state == Delivery.ACCEPTED
    good.close()


async def test_an_amqp_value_body_is_rejected_as_edgehub_rejects_it(start_hub):
    hub = await start_hub()
    client = await authenticated(hub, SENSOR)
    sender = await client.sender(events(SENSOR))
    delivery = await client.send(sender, Message(body="a string, not data"))
    assert delivery.remote_state == Delivery.REJECTED
    assert delivery.remote.condition.name == "amqp:not-allowed"
    client.close()


async def test_an_unanswered_method_over_amqp_times_out_with_504(start_hub):
    hub = await start_hub()
    client = await authenticated(hub, FILTER)
    await client.receiver(f"/devices/{DEVICE}/modules/filtermodule/methods/devicebound")
    with pytest.raises(MethodError) as timed_out:
        await hub.hub.invoke_method("filtermodule", "reset", response_timeout=5, connect_timeout=5)
    assert timed_out.value.status == 504
    client.close()


async def test_a_renewed_token_keeps_the_connection_and_an_expired_one_ends_it(start_hub):
    hub = await start_hub()
    now = int(time.time())
    client = await connect(hub)
    first = await client.put_token(hub.token(SENSOR, expiry=now + 60), audience(hub, SENSOR))
    assert first.properties["status-code"] == 200
    sender = await client.sender(events(SENSOR))
    assert client.refused(sender) is None
    renewal = await client.put_token(hub.token(SENSOR, expiry=now + 7200), audience(hub, SENSOR))
    assert renewal.properties["status-code"] == 200
    # edgeHub's five-minute check, after the first token's expiry (and its skew): the renewal counts
    assert hub.hub.check_tokens(now=now + 60 + 600) == []
    assert hub.hub.is_connected("SimulatedTemperatureSensor")
    # after the renewed token's: the whole connection is closed
    assert hub.hub.check_tokens(now=now + 7200 + 600) == [SENSOR]
    await client.until(lambda: client.closed.done(), what="the connection to close")
    await client.until(lambda: not hub.hub.is_connected("SimulatedTemperatureSensor"), what="the hub")


async def test_a_renewal_that_does_not_authenticate_ends_the_connection_at_the_next_check(start_hub):
    hub = await start_hub()
    client = await authenticated(hub, SENSOR)
    await client.sender(events(SENSOR))
    wrong = hub.token(SENSOR, key="d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgIQ==")
    assert (await client.put_token(wrong, audience(hub, SENSOR))).properties["status-code"] == 200
    assert hub.hub.check_tokens() == [SENSOR]
    await client.until(lambda: client.closed.done(), what="the connection to close")


async def test_a_receiver_that_stops_reading_holds_its_inputs_in_the_queue_not_in_memory(start_hub):
    hub = await start_hub()
    client = await authenticated(hub, FILTER)
    inputs = await client.receiver(events(FILTER), credit=5000)  # plenty of credit, then no reading
    assert client.transport is not None
    client.transport.pause_reading()
    body = b"x" * 200_000
    for _ in range(200):  # a full delivery window of these is more than the socket buffers hold
        await hub.hub.send_to_input("filtermodule", "input1", HubMessage(body=body))
    (connection,) = hub.hub.amqp.connections
    await client.until(connection.backed_up, what="the hub to stop writing")
    assert connection.transport.get_write_buffer_size() < WRITE_BUFFER_LIMIT + 2 * len(body)
    assert len(hub.hub.queued("filtermodule", "input1", limit=500)) == 200  # all still queued
    client.transport.resume_reading()
    await client.until(lambda: len(client.received.get(inputs.name, [])) == 200, what="every input")
    await client.until(lambda: not hub.hub.queued("filtermodule", "input1"), what="the acknowledgements")
    client.close()


async def test_a_leaf_device_gets_cloud_to_device_messages_on_its_devicebound_link(start_hub):
    hub = await start_hub(leaf_devices=("leaf1",))
    client = await authenticated(hub, "leaf1")
    c2d = await client.receiver("/devices/leaf1/messages/devicebound")
    assert client.refused(c2d) is None
    await client.until(lambda: hub.hub.is_connected("leaf1"), what="the leaf device")
    hub.hub.send_c2d("leaf1", b"to the device", {"k": "v"}, {"messageId": "c2d-1"})
    (message,) = await client.until(lambda: client.received.get(c2d.name), what="the C2D message")
    assert (message.body, message.properties, message.id) == (b"to the device", {"k": "v"}, "c2d-1")
    assert message.annotations["x-opt-lock-token"]
    client.close()
