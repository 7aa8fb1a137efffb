"""Routing speed: condition evaluation, a 20-route table, and compiling the example manifest.

Targets (issue 2): a compiled three-clause condition at >= 300,000 evaluations/s on one core against a
message whose body was parsed once; a 20-route table at >= 50,000 messages/s (each message new, so its
property index and parsed body are built as in real use); the documentation's example manifest
compiled in <= 50 ms (a fresh process would also pay for building the parsers, reported separately).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from edgehub_emu.manifest import compile_routes, load_deployment, parse_deployment
from edgehub_emu.routing import Message, RouteTable, compile_condition, compile_route, json_body
from edgehub_emu.routing import parser as route_parser

from .report import Result

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "deployment.json"
JSON = {"contentType": "application/json", "contentEncoding": "utf-8"}


def _median_rate(work: Callable[[], int], repeats: int = 5) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = work()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def condition_rate() -> float:
    compiled = compile_condition("$body.temp > 30 AND status = 'ok' OR is_defined($cid)")
    message = Message(
        body=json_body({"temp": 35, "humidity": 40}),
        properties={"status": "ok"},
        system_properties={**JSON, "cid": "c-1"},
    )
    evaluate = compiled.evaluate
    assert evaluate(message) is True
    n = 200_000

    def work() -> int:
        for _ in range(n):
            evaluate(message)
        return n

    return _median_rate(work)


def twenty_routes() -> RouteTable:
    routes = []
    for i in range(5):
        routes.append(
            f"FROM /messages/modules/sensor{i}/outputs/telemetry "
            f'INTO BrokeredEndpoint("/modules/filter/inputs/in{i}")'
        )
        routes.append(f"FROM /messages/modules/sensor{i}/* WHERE level = 'alert' INTO $upstream")
        routes.append(
            f"FROM /messages/modules/sensor{i}/outputs/* WHERE $body.temperature > {20 + i} "
            f'AND is_defined($cid) INTO BrokeredEndpoint("/modules/alerts/inputs/hot")'
        )
        routes.append(
            f"FROM /messages/* WHERE as_number(seq) % {i + 2} = 0 "
            f"OR $connectionModuleId = 'x{i}' INTO $upstream"
        )
    table = [
        compile_route(f"r{i}", text, device_id="edge", priority=i % 10, time_to_live_secs=60 * i)
        for i, text in enumerate(routes)
    ]
    assert len(table) == 20
    return RouteTable(table)


def fresh_messages(n: int) -> list[Message]:
    messages = []
    for i in range(n):
        module = f"sensor{i % 5}"
        messages.append(
            Message(
                body=json_body({"temperature": 15 + i % 20, "humidity": 50, "ts": "2026-11-26"}),
                properties={"seq": str(i), "level": "alert" if i % 7 == 0 else "info"},
                system_properties={
                    **JSON,
                    "connectionDeviceId": "edge",
                    "connectionModuleId": module,
                    "outputName": "telemetry",
                    "cid": f"c{i}",
                    "messageId": f"m{i}",
                },
            )
        )
    return messages


def routing_rate() -> float:
    table = twenty_routes()
    n = 20_000
    batches = [fresh_messages(n) for _ in range(5)]
    route = table.route
    rates = []
    for batch in batches:
        start = time.perf_counter()
        for message in batch:
            route(message)
        rates.append(n / (time.perf_counter() - start))
    assert table.hits["r0"] > 0
    return statistics.median(rates)


def compile_times() -> tuple[float, float]:
    start = time.perf_counter()
    compile_routes(load_deployment(EXAMPLE, env={}), "edge")
    cold = time.perf_counter() - start
    warm = []
    for _ in range(20):
        start = time.perf_counter()
        compile_routes(load_deployment(EXAMPLE, env={}), "edge")
        warm.append(time.perf_counter() - start)
    return cold, statistics.median(warm)


def thousand_routes_seconds(runs: int = 5) -> float:
    """A manifest of 1,000 routes, each with a condition, loaded (validated) and compiled: the median of
    ``runs``, each with routes no earlier run had (so nothing comes from the parse caches)."""
    document = json.loads(EXAMPLE.read_text())
    desired = document["modulesContent"]["$edgeHub"]["properties.desired"]
    timings = []
    for run in range(runs):
        desired["routes"] = {
            f"r{i}": {
                "route": f"FROM /messages/modules/sensor{i}/outputs/* WHERE as_number(temperature) > "
                f"{run * 1000 + i} AND machine = 'm{i}' "
                f'INTO BrokeredEndpoint("/modules/filter/inputs/in{i}")',
                "priority": i % 10,
            }
            for i in range(1000)
        }
        start = time.process_time()
        table = compile_routes(parse_deployment(document, env={}), "edge")
        timings.append(time.process_time() - start)
        assert len(table) == 1000
    return statistics.median(timings)


def run() -> list[Result]:
    route_parser._parser.cache_clear()
    cold, warm = compile_times()
    thousand = thousand_routes_seconds() * 1000
    cond = condition_rate()
    routed = routing_rate()
    return [
        Result("condition evaluations/s (3 clauses)", f"{cond:,.0f}", ">= 300,000", cond >= 300_000),
        Result("messages/s through 20 routes", f"{routed:,.0f}", ">= 50,000", routed >= 50_000),
        Result("compile example manifest (ms)", f"{warm * 1000:.2f}", "<= 50", warm <= 0.050),
        Result("  same, first in a process (ms)", f"{cold * 1000:.2f}", "(grammar build)", True),
        Result("validate and compile 1,000 routes (ms CPU)", f"{thousand:.0f}", "<= 300", thousand <= 300),
    ]
