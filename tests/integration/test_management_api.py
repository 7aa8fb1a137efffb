"""The management API over real HTTP: methods, twins, input injection, C2D, upstream, status, errors."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import unquote

import aiohttp
import pytest
import yarl

from edgehub_emu.api.management import ROUTES
from edgehub_emu.api.openapi import OPENAPI

from .conftest import DEVICE, manifest


def api(hub) -> str:
    return f"http://127.0.0.1:{hub.hub.endpoints.http_port}"


async def test_invoke_method_answers_404_and_200(start_hub):
    hub = await start_hub()
    url = f"{api(hub)}/twins/{DEVICE}/modules/filtermodule/methods"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"methodName": "reset"}) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "DeviceNotOnline"
        module = await hub.client("filtermodule")
        await module.subscribe("$iothub/methods/POST/#")

        async def answer() -> None:
            request = await module.next()
            rid = request.topic.split("$rid=")[1]
            await module.publish(
                f"$iothub/methods/res/200/?$rid={rid}", json.dumps({"got": json.loads(request.payload)})
            )

        answering = asyncio.ensure_future(answer())
        async with http.post(
            url, json={"methodName": "reset", "payload": {"hard": True}, "responseTimeoutInSeconds": 10}
        ) as response:
            assert response.status == 200
            assert await response.json() == {"status": 200, "payload": {"got": {"hard": True}}}
        await answering
        async with http.post(url, json={"methodName": "slow", "responseTimeoutInSeconds": 5}) as response:
            assert response.status == 504
        async with http.post(url, json={"methodName": "x", "responseTimeoutInSeconds": 1}) as response:
            assert response.status == 400
            assert "between 5 and 300" in (await response.json())["error"]["message"]
        module.stop()


async def test_twin_get_and_desired_patch_reach_the_module(start_hub):
    hub = await start_hub()
    module = await hub.client("filtermodule")
    await module.subscribe("$iothub/twin/PATCH/properties/desired/#")
    url = f"{api(hub)}/twins/{DEVICE}/modules/filtermodule"
    async with aiohttp.ClientSession() as http:
        async with http.patch(url, json={"properties": {"desired": {"tempLimit": 42}}}) as response:
            assert response.status == 200
            twin = await response.json()
        assert twin["properties"]["desired"]["tempLimit"] == 42
        assert twin["properties"]["desired"]["$version"] == 2
        assert twin["properties"]["desired"]["$metadata"]["$lastUpdated"].endswith("Z")
        patch = await module.next()
        assert json.loads(patch.payload) == {"tempLimit": 42, "$version": 2}
        async with http.get(url) as response:
            assert (await response.json())["properties"]["reported"]["$version"] == 1
        async with http.patch(url, data=b"{nope", headers={"content-type": "application/json"}) as response:
            assert response.status == 400
            assert "not JSON" in (await response.json())["error"]["message"]
        async with http.get(f"{api(hub)}/twins/{DEVICE}/modules/nobody") as response:
            assert response.status == 404
            assert "SimulatedTemperatureSensor" in (await response.json())["error"]["message"]
    module.stop()


async def test_inject_a_message_into_a_module_input_with_properties_bytes_intact(start_hub):
    hub = await start_hub()
    body = bytes(range(256))  # not JSON, not even UTF-8: taken byte for byte
    headers = {
        "iothub-app-alert": "true",
        "iothub-messageid": "m-9",
        "content-type": "application/octet-stream",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api(hub)}/modules/filtermodule/inputs/input1/messages", data=body, headers=headers
        ) as response:
            assert response.status == 202
        async with http.post(f"{api(hub)}/modules/nobody/inputs/x/messages", data=b"x") as response:
            assert response.status == 404
    module = await hub.client("filtermodule")
    await module.subscribe(f"devices/{DEVICE}/modules/filtermodule/inputs/#")
    message = await module.next()
    assert message.payload == body
    assert message.topic.startswith(f"devices/{DEVICE}/modules/filtermodule/inputs/input1/")
    bag = dict(pair.split("=") for pair in message.topic.rsplit("/", 1)[1].split("&"))
    assert unquote(bag["alert"]) == "true" and bag["%24.mid"] == "m-9"
    module.stop()


async def test_c2d_through_the_api(start_hub):
    hub = await start_hub(leaf_devices=("leaf1",))
    leaf = await hub.client("leaf1")
    await leaf.subscribe("devices/leaf1/messages/devicebound/#")
    async with aiohttp.ClientSession() as http:
        url = f"{api(hub)}/devices/leaf1/messages/devicebound"
        async with http.post(url, data=b"hi", headers={"iothub-app-p": "v"}) as response:
            assert response.status == 202
        async with http.post(f"{api(hub)}/devices/nobody/messages/devicebound", data=b"hi") as response:
            assert response.status == 404
    message = await leaf.next()
    assert message.payload == b"hi" and "p=v" in message.topic
    leaf.stop()


async def test_upstream_messages_listed_and_streamed(start_hub):
    hub = await start_hub()
    sender = await hub.client("filtermodule")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api(hub)}/upstream/stream") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            await sender.publish(
                f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1&k=v", b'{"t": 1}'
            )
            lines = []
            async with asyncio.timeout(5):
                async for raw in stream.content:
                    line = raw.decode().strip()
                    if line.startswith("data: "):
                        lines.append(json.loads(line[6:]))
                        break
        assert lines[0]["body"] == '{"t": 1}' and lines[0]["properties"] == {"k": "v"}
        assert lines[0]["origin"] == f"{DEVICE}/filtermodule"
        async with http.get(f"{api(hub)}/upstream/messages?since=0&limit=10") as response:
            listed = (await response.json())["messages"]
        assert [m["body"] for m in listed] == ['{"t": 1}']
        for query in ("since=12345678901234567890123", "limit=12345678901234567890123", "since=-1"):
            async with http.get(f"{api(hub)}/upstream/messages?{query}") as response:
                assert response.status == 400  # not a 500 from the database underneath
            if query.startswith("since"):  # (the stream takes no limit)
                async with http.get(f"{api(hub)}/upstream/stream?{query}") as response:
                    assert response.status == 400
        async with http.get(f"{api(hub)}/upstream/messages?since=x") as response:
            assert response.status == 400
    sender.stop()


async def test_an_event_stream_whose_client_went_away_ends_quietly(start_hub, caplog):
    hub = await start_hub()
    sender = await hub.client("filtermodule")
    caplog.set_level("INFO")
    async with aiohttp.ClientSession() as http, http.get(f"{api(hub)}/upstream/stream") as stream:
        assert stream.status == 200
    # the client is gone (as when monitor stops); the next upstream message finds no one to write to
    for i in range(3):  # the first write may still fit in the socket's buffer
        await sender.publish(f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1", b"x")
        await hub.hub.upstream.wait_for(timeout=5, since=i)
    deadline = asyncio.get_running_loop().time() + 10
    while "its client went away" not in caplog.text:  # the stream's own word that it ended
        assert asyncio.get_running_loop().time() < deadline, "the stream never noticed"
        await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info], caplog.text
    sender.stop()


async def test_a_web_page_in_the_developers_browser_cannot_use_the_api(start_hub):
    """A cross-site "simple" POST (text/plain, another Origin) and a DNS-rebinding Host are refused;
    the same calls from the CLI or curl (no Origin, a loopback Host, JSON) are served."""
    hub = await start_hub()
    inject = f"{api(hub)}/modules/filtermodule/inputs/input1/messages"
    method = f"{api(hub)}/twins/{DEVICE}/modules/filtermodule/methods"
    twin = f"{api(hub)}/twins/{DEVICE}/modules/filtermodule"
    evil = {"Origin": "http://evil.example", "content-type": "text/plain"}
    async with aiohttp.ClientSession() as http:
        async with http.post(inject, data=b"from a page", headers=evil) as response:
            assert response.status == 403
            assert "evil.example" in (await response.json())["error"]["message"]
        async with http.post(method, data=b'{"methodName": "reset"}', headers=evil) as response:
            assert response.status == 403
        async with http.get(twin, headers={"Host": "evil.example"}) as response:  # DNS rebinding
            assert response.status == 403
        async with http.post(
            method, data=b'{"methodName": "reset"}', headers={"content-type": "text/plain"}
        ) as response:
            assert response.status == 415  # JSON bodies must say so
        # the API's own origin (a page it serves) and plain clients are fine
        own = {"Origin": api(hub)}
        async with http.get(twin, headers=own) as response:
            assert response.status == 200
        async with http.post(inject, data=b"from the cli") as response:
            assert response.status == 202
    assert [m.body for m in hub.hub.queued("filtermodule", "input1")] == [b"from the cli"]


@pytest.mark.parametrize("input_name", ["a%23b", "a%2Bb", "%2E%2E%2F%2E%2E%2Fx", "%2E%2E"])
async def test_an_input_name_that_is_not_one_topic_level_is_refused(start_hub, input_name):
    hub = await start_hub()
    url = f"{api(hub)}/modules/filtermodule/inputs/{input_name}/messages"
    async with aiohttp.ClientSession() as http, http.post(yarl.URL(url, encoded=True), data=b"x") as response:
        assert response.status == 400
        assert "one topic level" in (await response.json())["error"]["message"]


async def test_iot_hubs_limits_on_injected_messages_and_desired_patches(start_hub):
    hub = await start_hub()
    inject = f"{api(hub)}/modules/filtermodule/inputs/input1/messages"
    twin = f"{api(hub)}/twins/{DEVICE}/modules/filtermodule"
    deep: dict = {"leaf": 1}
    for _ in range(11):
        deep = {"level": deep}
    json_body = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(inject, data=b"x" * 262_145) as response:
            assert response.status == 413 and "256 KB" in (await response.json())["error"]["message"]
        for desired, why in (
            (b'{"t": NaN}', "not a JSON number"),
            (json.dumps(deep).encode(), "deeper than 10 levels"),
            (json.dumps({"big": ["x" * 4000] * 9}).encode(), "exceed 32768 bytes"),
        ):
            body = b'{"properties": {"desired": ' + desired + b"}}"
            async with http.patch(twin, data=body, headers=json_body) as response:
                assert response.status == 400, desired[:40]
                assert why in (await response.json())["error"]["message"]
        async with http.post(inject, data=b"x" * 1000) as response:  # within the limits: fine
            assert response.status == 202
    assert hub.hub.twin("filtermodule")["desired"] == {"$version": 1}


async def test_status_health_and_metrics(start_hub):
    hub = await start_hub()
    module = await hub.client("filtermodule")
    await module.subscribe("$iothub/methods/POST/#")
    sensor = await hub.client("SimulatedTemperatureSensor")
    await sensor.publish(
        f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput", b"q"
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api(hub)}/health") as response:
            assert await response.json() == {"status": "ok"}
        async with http.get(f"{api(hub)}/status") as response:
            status = await response.json()
        metrics_url = f"http://127.0.0.1:{hub.hub.endpoints.metrics_port}/metrics"
        async with http.get(metrics_url) as response:
            metrics = await response.text()
    connected = {i["id"]: i for i in status["identities"]}
    assert connected[f"{DEVICE}/filtermodule"]["connected"] is True
    assert connected[f"{DEVICE}/filtermodule"]["subscriptions"] == ["$iothub/methods/POST/#"]
    assert connected[f"{DEVICE}/$edgeAgent"]["connected"] is False
    (queue,) = status["queues"]
    assert (queue["endpoint"], queue["priority"], queue["messages"]) == (
        f"{DEVICE}/filtermodule/input1",
        0,
        1,
    )
    assert queue["nextExpiry"].endswith("Z")
    assert {r["name"]: r["hits"] for r in status["routes"]} == {"sensorToFilter": 1, "filterToIoTHub": 0}
    assert "edgehub_queue_length{" in metrics and 'endpoint="edge-device/filtermodule/input1"' in metrics
    assert "edgehub_connected_clients{" in metrics
    module.stop()
    sensor.stop()


async def test_a_token_is_required_when_set(start_hub):
    hub = await start_hub(api_token="s3cret")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api(hub)}/status") as response:
            assert response.status == 401
            assert "Bearer" in (await response.json())["error"]["message"]
        async with http.get(f"{api(hub)}/status", headers={"Authorization": "Bearer s3cret"}) as response:
            assert response.status == 200
        metrics = f"http://127.0.0.1:{hub.hub.endpoints.metrics_port}/metrics"  # the metrics listener too
        async with http.get(metrics) as response:
            assert response.status == 401
        async with http.get(metrics, headers={"Authorization": "Bearer s3cret"}) as response:
            assert response.status == 200 and "edgehub_" in await response.text()


def test_openapi_document_covers_exactly_the_routes():
    documented = {(method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item}
    served = {(method, path) for method, path, _ in ROUTES}
    assert documented == served


@pytest.mark.parametrize("path", ["/nowhere", "/twins"])
async def test_unknown_paths_get_the_error_shape(start_hub, path):
    hub = await start_hub()
    async with aiohttp.ClientSession() as http, http.get(f"{api(hub)}{path}") as response:
        assert response.status == 404
        assert "error" in await response.json()


async def test_the_local_cloud_survives_a_hub_restart(start_hub, tmp_path):
    hub = await start_hub()
    sender = await hub.client("filtermodule")
    await sender.publish(f"devices/{DEVICE}/modules/filtermodule/messages/events/%24.on=output1", b"kept")
    await hub.hub.upstream.wait_for(timeout=5)
    sender.stop()
    await hub.hub.stop()
    again = await start_hub(data_dir=tmp_path)
    async with aiohttp.ClientSession() as http, http.get(f"{api(again)}/upstream/messages") as response:
        assert [m["body"] for m in (await response.json())["messages"]] == ["kept"]


async def test_metrics_after_known_traffic(start_hub):
    hub = await start_hub()
    module = await hub.client("filtermodule")
    await module.subscribe("$iothub/twin/res/#", f"devices/{DEVICE}/modules/filtermodule/inputs/#")
    await module.publish("$iothub/twin/GET/?$rid=1", b" ")
    await module.next()
    sensor = await hub.client("SimulatedTemperatureSensor")
    await sensor.publish(
        f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput",
        b"x" * 100,
    )
    await module.next()
    await asyncio.sleep(0.2)
    await hub.client("filtermodule", password="SharedAccessSignature sr=a&sig=b&se=1", expect=5)
    metrics_url = f"http://{hub.hub.endpoints.http_host}:{hub.hub.endpoints.metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as response:
        text = await response.text()

    def value(prefix: str) -> float:
        line = next(line for line in text.splitlines() if line.startswith(prefix))
        return float(line.rsplit(" ", 1)[1])

    assert value("edgehub_gettwin_total{") == 1
    assert value("edgehub_client_connect_success_total{") >= 2
    assert value("edgehub_client_connect_failed_total{") == 1
    assert value("edgehub_message_size_bytes_count{") == 1
    assert value("edgehub_message_size_bytes_sum{") > 100  # body plus properties, as edgeHub counts
    assert value("edgehub_message_send_duration_seconds_count{") == 1
    assert 'quantile="0.99"' in text
    module.stop()
    sensor.stop()


async def _raw_http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()  # the hub closes after a refusal
    writer.close()
    return answer


async def test_oversized_and_malformed_requests_get_a_4xx_and_one_line_never_a_traceback(start_hub, caplog):
    caplog.set_level("INFO")
    hub = await start_hub()
    port = hub.hub.endpoints.http_port
    host = b"Host: 127.0.0.1\r\nConnection: close\r\n"
    long_url = await _raw_http(port, b"GET /status?" + b"a" * 10_000 + b" HTTP/1.1\r\n" + host + b"\r\n")
    head, body = long_url.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 414") and b"application/json" in head
    assert json.loads(body)["error"]["message"] == "the URL is longer than 8192 characters"
    big_header = await _raw_http(
        port, b"GET /status HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    )
    head, body = big_header.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 431") and "'X-Big'" in json.loads(body)["error"]["message"]
    malformed = [
        b"BLAH\r\n\r\n",
        b"GET /status HTTP/1.1\r\n" + host + b"".join(b"X-%d: a\r\n" % i for i in range(500)) + b"\r\n",
        b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n",  # past even the parser's limits
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ]
    for request in malformed:
        assert (await _raw_http(port, request)).startswith(b"HTTP/1.0 400")
    async with aiohttp.ClientSession() as http, http.get(f"{api(hub)}/status") as response:
        assert response.status == 200  # and the API serves on
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()], caplog.text
    # one line each (a first request that is not HTTP at all is aiohttp's debug line: port scanners)
    assert len([r for r in caplog.records if "refused a malformed HTTP request" in r.getMessage()]) == 3


async def test_the_dashboard_page_is_public_its_data_needs_the_token_and_says_why_a_route_missed(start_hub):
    conditional = {
        "hot": "FROM /messages/modules/SimulatedTemperatureSensor/* WHERE $body.machine.temperature > 30 "
        "INTO $upstream"
    }
    hub = await start_hub(manifest(conditional), api_token="s3cret")
    sensor = await hub.client("SimulatedTemperatureSensor")
    await sensor.publish(
        f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput",
        "not json",
    )
    sensor.stop()
    token = {"Authorization": "Bearer s3cret"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api(hub)}/") as response:  # the page and its assets hold no data
            assert response.status == 200 and "edgehub-emu dashboard" in await response.text()
        for asset in ("dashboard.js", "dashboard.css"):
            async with http.get(f"{api(hub)}/static/{asset}") as response:
                assert response.status == 200
        async with http.get(f"{api(hub)}/static/management.py", headers=token) as response:
            assert response.status == 404  # only the page's own assets
        for data in ("/dashboard/state", "/graph.svg", "/dashboard/stream"):
            async with http.get(f"{api(hub)}{data}") as response:
                assert response.status == 401, data
        async with http.get(f"{api(hub)}/graph.svg", headers=token) as response:
            assert response.content_type == "image/svg+xml" and 'data-route="hot"' in await response.text()
        async with http.get(f"{api(hub)}/dashboard/state", headers=token) as response:
            state = await response.json()
        assert state["verdicts"]["hot"]["outcome"] == "undefined"
        assert "$body is unreadable" in state["verdicts"]["hot"]["reasons"][0]
        (message,) = state["messages"]
        assert (message["from"], message["endpoints"], message["body"]["text"]) == (
            f"{DEVICE}/SimulatedTemperatureSensor",
            [],
            "not json",
        )
        async with http.get(f"{api(hub)}/dashboard/stream", headers=token) as response:
            first = await response.content.readuntil(b"\n\n")
        assert (
            first.startswith(b"event: state\ndata: ")
            and json.loads(first[19:])["status"]["deviceId"] == DEVICE
        )


async def test_the_trace_can_be_paused_and_resumed(start_hub):
    hub = await start_hub()
    sensor = await hub.client("SimulatedTemperatureSensor")
    topic = f"devices/{DEVICE}/modules/SimulatedTemperatureSensor/messages/events/%24.on=temperatureOutput"
    async with aiohttp.ClientSession() as http:

        async def bodies() -> list[str]:
            async with http.get(f"{api(hub)}/trace?limit=10") as response:
                return [m["received"]["body"]["text"] for m in (await response.json())["messages"]]

        await sensor.publish(topic, "kept")
        async with http.put(f"{api(hub)}/trace", json={"enabled": False}) as response:
            assert await response.json() == {"tracing": False}
        await sensor.publish(topic, "not kept")
        assert await bodies() == ["kept"]  # what it held stays readable
        async with http.put(f"{api(hub)}/trace", json={"enabled": True}) as response:
            assert await response.json() == {"tracing": True}
        await sensor.publish(topic, "kept again")
        assert await bodies() == ["kept", "kept again"]
        async with http.put(f"{api(hub)}/trace", json={"enabled": "no"}) as response:
            assert response.status == 400
    sensor.stop()
