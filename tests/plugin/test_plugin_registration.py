"""The plugin as a user's own project sees it: installed, found through ``pytest11``, configured by ini."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "config" / "deployment.json").read_text())


def test_a_project_uses_the_fixture_with_its_own_manifest_from_the_ini_option(pytester: pytest.Pytester):
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {
        "toCloud": "FROM /messages/modules/filtermodule/outputs/* INTO $upstream"
    }
    pytester.makefile(".json", **{"deploy/edge": json.dumps(manifest)})
    pytester.makeini(
        "[pytest]\nedgehub_manifest = deploy/edge.json\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        test_module="""
        def test_routes_come_from_the_ini_manifest(edgehub):
            assert [r.name for r in edgehub.hub.snapshot().routes] == ["toCloud"]
            assert edgehub.module_env("filtermodule")["EdgeHubConnectionString"].startswith("HostName=")

        def test_a_timeout_fails_with_an_explanation(edgehub):
            edgehub.upstream.get(timeout=0.1)
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*AssertionError: no upstream message within 0.1 s*", "*connected: no client*"]
    )


def test_a_missing_manifest_is_named_in_the_error(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_module="""
        import pytest

        @pytest.mark.edgehub(manifest="nowhere/deployment.json")
        def test_it(edgehub):
            pass
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*nowhere/deployment.json*"])


def test_sdk_hubs_of_parallel_workers_each_have_their_own_address(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_parallel="""
        import socket
        import pytest

        @pytest.mark.parametrize("n", range(6))
        @pytest.mark.edgehub(sdk=True)
        def test_on_8883(edgehub, n, worker_id):
            assert edgehub.port == 8883
            with socket.create_connection((edgehub.host, 8883), timeout=5):
                pass
            print("ADDRESS", worker_id, edgehub.host)
        """
    )

    pytester.makefile(".json", **{"config/deployment": json.dumps(MANIFEST)})

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "-rP")

    result.assert_outcomes(passed=6)
    seen = [line.split()[1:] for line in result.outlines if line.startswith("ADDRESS ")]
    assert len(seen) == 6 and {worker for worker, _ in seen} == {"gw0", "gw1"}
    assert len({address for _, address in seen}) == 6  # no two hubs shared an address
    third_octets = {
        worker: {address.split(".")[2] for w, address in seen if w == worker} for worker, _ in seen
    }
    assert third_octets["gw0"].isdisjoint(third_octets["gw1"])  # so no worker can collide with another
