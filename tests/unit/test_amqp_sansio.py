"""The AMQP head's sans-IO pieces, called as functions: SASL, link addresses, CBS, message mapping.

The vectors are edgeHub's own (its AMQP tests), as ``reference/amqp-head.md`` lists them.
"""

from __future__ import annotations

import time
import uuid

import pytest
from proton import Message as AmqpMessage
from proton import int32, symbol

from edgehub_emu.heads.amqp.addresses import AddressError, LinkKind, parse_address
from edgehub_emu.heads.amqp.cbs import CbsError, put_token, reply
from edgehub_emu.heads.amqp.convert import NoBody, from_amqp, lock_token_tag, to_amqp
from edgehub_emu.heads.amqp.sasl import (
    AMQP_HEADER,
    SASL_HEADER,
    Principal,
    SaslLayer,
    Stage,
    decode_frame,
    encode_init,
    parse_authcid,
)
from edgehub_emu.identity import make_token
from edgehub_emu.routing import Message

HUB = "hub1.azure-devices.net"
KEY = "c2VjcmV0IGtleSBzZWNyZXQga2V5IHNlY3JldCBrZXk="

# --- SASL PLAIN's user name ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authcid", "identity"),
    [
        ("dev1/modules/mod1@sas.hub1", "dev1/mod1"),
        ("dev1@sas.hub1", "dev1"),
        ("dev1/modules/mod1@hub1", "dev1/mod1"),  # "sas." is optional
        ("dev1@SAS.HUB1", "dev1"),  # the hub's name in any case
        ("d%40n.f/modules/m%40n.p@sas.hub1", "d@n.f/m@n.p"),
    ],
)
def test_a_plain_user_names_a_device_or_a_module(authcid, identity):
    assert parse_authcid(authcid, HUB) == identity


@pytest.mark.parametrize(
    "authcid",
    ["key1@sas.root.hub1", "dev1@sas.otherhub", "dev1", "@sas.hub1", "dev1/modules/@sas.hub1", "a/b@hub1"],
)
def test_a_plain_user_for_another_hub_or_of_another_shape_is_refused(authcid):
    with pytest.raises(ValueError, match="SASL PLAIN user"):
        parse_authcid(authcid, HUB)


# --- the SASL exchange --------------------------------------------------------------------------------


def _check(authcid: str, password: str) -> Principal:
    if password != "good":
        raise ValueError("bad token")
    return Principal(parse_authcid(authcid, HUB), password)


def _outcome(reply_bytes: bytes) -> int:
    descriptor, fields = decode_frame(reply_bytes)
    assert descriptor == 0x44  # sasl-outcome
    return int(fields[0])  # type: ignore[call-overload]


def test_the_hub_offers_edgehubs_mechanisms_in_its_order():
    layer = SaslLayer(_check)
    out, rest = layer.feed(SASL_HEADER)
    assert out.startswith(SASL_HEADER) and rest == b""
    descriptor, fields = decode_frame(out[8:])
    assert descriptor == 0x40  # sasl-mechanisms
    assert [str(m) for m in fields[0]] == ["ANONYMOUS", "MSSBCBS", "PLAIN"]  # type: ignore[attr-defined]
    assert layer.stage is Stage.INIT


@pytest.mark.parametrize("mechanism", ["ANONYMOUS", "MSSBCBS"])
def test_anonymous_succeeds_and_the_amqp_stream_follows_in_the_same_read(mechanism):
    layer = SaslLayer(_check)
    layer.feed(SASL_HEADER)
    out, rest = layer.feed(encode_init(mechanism, b"") + AMQP_HEADER + b"open...")
    assert _outcome(out) == 0
    assert decode_frame(out)[1][1] == b"Welcome!"
    assert layer.stage is Stage.DONE and layer.principal is None and layer.used_sasl
    assert rest == AMQP_HEADER + b"open..."  # the engine reads the header itself


def test_plain_with_a_good_token_authenticates_one_identity():
    layer = SaslLayer(_check)
    layer.feed(SASL_HEADER)
    out, _ = layer.feed(encode_init("PLAIN", b"\0dev1/modules/mod1@sas.hub1\0good"))
    assert _outcome(out) == 0
    assert layer.principal == Principal("dev1/mod1", "good")


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (b"\0dev1@sas.hub1\0bad", 2),  # a bad token: sys
        (b"\0key1@sas.root.hub1\0good", 2),  # another hub
        (b"dev1@sas.hub1\0good", 1),  # two fields: auth
        (b"\0\0good", 1),  # an empty user: auth
    ],
)
def test_plain_failures_get_edgehubs_outcome_codes(response, code):
    layer = SaslLayer(_check)
    layer.feed(SASL_HEADER)
    out, rest = layer.feed(encode_init("PLAIN", response))
    assert _outcome(out) == code
    assert layer.stage is Stage.FAILED and layer.failure and rest == b""


def test_a_mechanism_not_offered_fails():
    layer = SaslLayer(_check)
    layer.feed(SASL_HEADER)
    out, _ = layer.feed(encode_init("EXTERNAL", b""))
    assert _outcome(out) == 1
    assert "EXTERNAL" in (layer.failure or "")


def test_clients_that_skip_sasl_go_straight_to_amqp():
    layer = SaslLayer(_check)
    out, rest = layer.feed(AMQP_HEADER + b"more")
    assert out == b"" and rest == AMQP_HEADER + b"more"
    assert layer.stage is Stage.DONE and not layer.used_sasl


def test_bytes_arriving_one_at_a_time_give_the_same_exchange():
    layer = SaslLayer(_check)
    stream = SASL_HEADER + encode_init("PLAIN", b"\0dev1@sas.hub1\0good") + AMQP_HEADER
    replies = b"".join(layer.feed(stream[i : i + 1])[0] for i in range(len(stream)))
    assert layer.stage is Stage.DONE and layer.principal == Principal("dev1", "good")
    assert replies.startswith(SASL_HEADER)


@pytest.mark.parametrize(
    "stream",
    [
        b"HTTP/1.1",  # not AMQP at all
        SASL_HEADER + b"\x00\x00\x00\x08\x02\x00\x00\x00",  # an AMQP frame where SASL belongs
        SASL_HEADER + b"\xff\xff\xff\xff\x02\x01\x00\x00",  # a 4 GiB frame
        SASL_HEADER + b"\x00\x00\x00\x0c\x02\x01\x00\x00garb",  # undecodable
    ],
)
def test_garbage_fails_the_exchange_without_raising(stream):
    layer = SaslLayer(_check)
    layer.feed(stream)
    assert layer.stage is Stage.FAILED and layer.failure
    assert layer.feed(b"anything") == (b"", b"")


# --- link addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "client_sends", "kind", "identity"),
    [
        ("$cbs", True, LinkKind.CBS, None),
        ("/$CBS", False, LinkKind.CBS, None),
        ("/devices/device1/messages/events", True, LinkKind.EVENTS, "device1"),
        ("//devices/device1/messages/events", True, LinkKind.EVENTS, "device1"),
        ("/devices/d1/modules/m1/messages/events", True, LinkKind.EVENTS, "d1/m1"),
        ("/devices/d1/modules/m1/messages/events", False, LinkKind.MODULE_MESSAGES, "d1/m1"),
        ("amqps://anyhost/devices/d1/messages/deviceBound", False, LinkKind.C2D, "d1"),
        ("/devices/d1/messages/devicebound", False, LinkKind.C2D, "d1"),  # the Node SDK's case
        ("/devices/d1/modules/m1/twin", True, LinkKind.TWIN_RECEIVING, "d1/m1"),
        ("/devices/d1/modules/m1/twin", False, LinkKind.TWIN_SENDING, "d1/m1"),
        ("/devices/d1/modules/m1/methods/devicebound", True, LinkKind.METHOD_RECEIVING, "d1/m1"),
        ("/devices/d1/modules/m1/methods/deviceBound", False, LinkKind.METHOD_SENDING, "d1/m1"),
        ("/devices/d%40n.f/modules/m%40n.p/twin", True, LinkKind.TWIN_RECEIVING, "d@n.f/m@n.p"),
        ("/devices/a+b/messages/events", True, LinkKind.EVENTS, "a b"),
    ],
)
def test_edgehubs_addresses(address, client_sends, kind, identity):
    link = parse_address(address, client_sends)
    assert (link.kind, link.identity_id) == (kind, identity)


@pytest.mark.parametrize(
    ("address", "client_sends"),
    [
        ("/devices/device1/messages/events", False),  # a device has no inputs
        ("/devices/device1/messages/deviceBound", True),  # nobody sends C2D to the hub
        ("/$cbs2", True),
        ("/devices/d1/modules/m1/twin2", True),
        ("/devices/d1/modules/m1/messages/foo", True),
        ("", True),
        (None, False),
    ],
)
def test_addresses_edgehub_refuses(address, client_sends):
    with pytest.raises(AddressError):
        parse_address(address, client_sends)


# --- CBS put-token --------------------------------------------------------------------------------------


def _request(token: object, **properties: str) -> AmqpMessage:
    request = AmqpMessage(body=token, id=42)
    request.properties = {
        "operation": "put-token",
        "type": "servicebus.windows.net:sastoken",
        "name": "some name",
    } | properties
    return request


def _token(resource: str, expiry: float | None = None) -> str:
    return make_token(resource, KEY, int(expiry if expiry is not None else time.time() + 3600))


def test_put_token_takes_the_identity_from_the_tokens_resource_not_its_name():
    token = _token(f"{HUB}/devices/device1/modules/mod1")
    stored = put_token(_request(token, name=f"{HUB}/devices/device1"))
    assert stored.identity_id == "device1/mod1" and stored.token == token


def test_put_token_url_decodes_the_ids():
    stored = put_token(_request(_token(f"{HUB}/devices/d%40n.f/modules/m%40n.p")))
    assert stored.identity_id == "d@n.f/m@n.p"


def test_put_token_accepts_both_token_types_in_any_case():
    token = _token(f"{HUB}/devices/device1")
    assert put_token(_request(token, type="AZURE-DEVICES.NET:SASTOKEN")).identity_id == "device1"


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (_request(_token(f"{HUB}/device/x/module/y")), "names no device"),
        (_request(_token(f"{HUB}/devices/d1"), operation="delete-token"), "unsupported operation"),
        (_request(_token(f"{HUB}/devices/d1"), type="jwt"), "unsupported token type"),
        (_request(_token(f"{HUB}/devices/d1"), name=""), "no name"),
        (_request(b"binary"), "not a string"),
        (_request("SharedAccessSignature nonsense"), "invalid token"),
        (_request(_token(f"{HUB}/devices/d1", expiry=time.time() - 400)), "expired"),
    ],
)
def test_put_token_refusals_say_why(request_, why):
    with pytest.raises(CbsError, match=why):
        put_token(request_)


def test_a_token_within_the_clock_skew_is_still_taken():
    put_token(_request(_token(f"{HUB}/devices/d1", expiry=time.time() - 200)))


def test_the_reply_carries_an_int_status_and_the_request_id():
    answer = reply(42, 200, "OK")
    assert answer.correlation_id == 42
    assert answer.properties == {"status-code": 200, "status-description": "OK"}
    assert type(answer.properties["status-code"]) is int32  # AMQP int, not long


# --- messages both ways --------------------------------------------------------------------------------


def test_an_output_keeps_everything_a_route_can_see():
    amqp = AmqpMessage(body=b'{"t": 21}', inferred=True, id="m-1", correlation_id="c-1")
    amqp.content_type = symbol("application/json")
    amqp.content_encoding = symbol("utf-8")
    amqp.properties = {
        "iothub-outputname": "temperatureOutput",
        "iothub-message-schema": "schema-1",
        "iothub-creation-time-utc": "2026-11-30T00:00:00Z",
        "alert": "true",
        "count": 3,  # not a string: kept as a key without a value, as edgeHub keeps it
    }
    message = from_amqp(amqp)
    assert message.body == b'{"t": 21}'
    assert message.properties == {"alert": "true", "count": None}
    assert message.system_properties == {
        "messageId": "m-1",
        "cid": "c-1",
        "contentType": "application/json",
        "contentEncoding": "utf-8",
        "outputName": "temperatureOutput",
        "messageSchema": "schema-1",
        "creationTime": "2026-11-30T00:00:00Z",
    }


def test_a_message_without_a_data_body_is_refused():
    with pytest.raises(NoBody):
        from_amqp(AmqpMessage(body="an amqp-value string"))


def test_absent_content_type_is_absent_not_the_text_none():
    message = from_amqp(AmqpMessage(body=b"x", inferred=True))
    assert "contentType" not in message.system_properties
    assert "contentEncoding" not in message.system_properties


def test_binary_and_uuid_ids_become_text():
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    message = from_amqp(AmqpMessage(body=b"x", inferred=True, id=ident, correlation_id=b"\x01\xff"))
    assert message.system_properties["messageId"] == str(ident)
    assert message.system_properties["cid"] == "01ff"


def test_an_input_carries_the_input_name_lock_token_and_the_senders_ids():
    routed = Message(
        body=b"hi",
        properties={"alert": "true"},
        system_properties={
            "messageId": "m-1",
            "cid": "c-1",
            "contentType": "application/json",
            "contentEncoding": "utf-8",
            "messageSchema": "schema-1",
            "connectionDeviceId": "edge-device",
            "connectionModuleId": "sensor",
            "outputName": "temperatureOutput",
        },
    )
    token = str(uuid.uuid4())
    amqp = to_amqp(routed, "input1", token)
    assert amqp.body == b"hi" and amqp.inferred
    assert (amqp.id, amqp.correlation_id) == ("m-1", "c-1")
    assert (amqp.content_type, amqp.content_encoding) == ("application/json", "utf-8")
    assert amqp.annotations == {
        "iothub-connection-device-id": "edge-device",
        "iothub-connection-module-id": "sensor",
        "x-opt-input-name": "input1",
        "x-opt-lock-token": token,
    }
    assert amqp.properties == {"iothub-message-schema": "schema-1", "alert": "true"}
    assert "iothub-outputname" not in amqp.properties  # the output name stays behind


def test_a_message_survives_amqp_out_and_back_in():
    original = Message(
        body=b"\x00\x01binary",
        properties={"a": "1", "b": "two"},
        system_properties={"messageId": "id-9", "contentType": "application/octet-stream"},
    )
    back = from_amqp(_decoded(original))  # through the wire encoding
    assert back.body == original.body
    assert back.properties == original.properties
    assert back.system_properties["messageId"] == "id-9"
    assert back.system_properties["contentType"] == "application/octet-stream"


def _decoded(message: Message) -> AmqpMessage:
    amqp = AmqpMessage()
    amqp.decode(to_amqp(message).encode())
    return amqp


def test_the_delivery_tag_is_the_lock_tokens_guid_in_dotnet_byte_order():
    token = "00112233-4455-6677-8899-aabbccddeeff"
    assert lock_token_tag(token) == bytes.fromhex("33221100554477668899aabbccddeeff")
