"""The workload API and the module-facing methods endpoint refuse what edgeHub and iotedged refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import time

import aiohttp

from edgehub_emu.identity import generation_id, make_token

from .conftest import DEVICE

HOST = "edgehub-emu.azure-devices.net"


async def test_workload_api_signs_with_the_modules_key_and_refuses_the_rest(start_hub):
    hub = await start_hub()
    module = hub.hub.identity("filtermodule")
    genid = generation_id(module.primary_key)
    connector = aiohttp.UnixConnector(path=str(hub.hub.settings.workload_socket_path))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get("http://workload/trust-bundle?api-version=2019-01-30") as response:
            assert (await response.json())["certificate"] == hub.hub.ca_file.read_text()
        data = base64.b64encode(b"to sign").decode()
        url = f"http://workload/modules/filtermodule/genid/{genid}/sign?api-version=2018-06-28"
        async with http.post(url, json={"keyId": "primary", "algo": "HMACSHA256", "data": data}) as response:
            digest = (await response.json())["digest"]
        expected = hmac.new(base64.b64decode(module.primary_key), b"to sign", hashlib.sha256).digest()
        assert base64.b64decode(digest) == expected
        async with http.post(url.replace(genid, "wrong"), json={"data": data}) as response:
            assert response.status == 400 and "generation id" in (await response.json())["message"]
        async with http.post(url.replace("filtermodule", "nobody"), json={"data": data}) as response:
            assert response.status == 404
        async with http.post(url, json={"data": "***"}) as response:
            assert response.status == 400
        async with http.get("http://workload/trust-bundle") as response:
            assert response.status == 400 and "api-version" in (await response.json())["message"]


async def test_module_methods_endpoint_checks_caller_header_and_token(start_hub):
    hub = await start_hub()
    caller = hub.hub.identity("SimulatedTemperatureSensor")
    token = make_token(
        f"{HOST}/devices/{DEVICE}/modules/SimulatedTemperatureSensor",
        caller.primary_key,
        int(time.time()) + 60,
    )
    context = ssl.create_default_context(cafile=str(hub.hub.ca_file))
    url = f"https://127.0.0.1:{hub.hub.endpoints.https_port}/twins/{DEVICE}/modules/filtermodule/methods?api-version=2018-06-28"
    good = {"Authorization": token, "x-ms-edge-moduleId": f"{DEVICE}/SimulatedTemperatureSensor"}
    body = {"methodName": "ping", "payload": None, "responseTimeoutInSeconds": 5}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        async with http.post(url, json=body, headers={"Authorization": token}) as response:
            assert response.status == 400  # no x-ms-edge-moduleId
        async with http.post(
            url, json=body, headers={**good, "x-ms-edge-moduleId": "other-device/m"}
        ) as response:
            assert response.status == 401
        async with http.post(
            url, json=body, headers={**good, "Authorization": "SharedAccessSignature sr=x&sig=y&se=1"}
        ) as response:
            assert response.status == 401
        async with http.post(url, json=body, headers=good) as response:
            assert response.status == 404
            assert (await response.json()) == {"message": f"Client {DEVICE}/filtermodule not found"}
        async with http.post(url, data=b"not json", headers=good) as response:
            assert response.status == 400

        non_ascii = token.replace("sig=", "sig=%C3%A9", 1)  # a signature with "é" in it
        async with http.post(url, json=body, headers={**good, "Authorization": non_ascii}) as response:
            assert response.status == 401
        for bad in (
            {"methodName": 123},
            {"methodName": ""},
            [1, 2],
            {"methodName": "m", "payload": {"a": [1] * 2}, "responseTimeoutInSeconds": "x"},
        ):
            async with http.post(url, json=bad, headers=good) as response:
                assert response.status == 400, bad
                assert "message" in await response.json()
