"""The route graph as Mermaid, DOT and SVG, checked structurally for the example manifest and for the
harder cases (every module, any output, a loop back to the same module, a condition)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edgehub_emu.manifest import compile_routes, load_deployment, parse_deployment
from edgehub_emu.views import deployment_graph, to_dot, to_mermaid, to_svg

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("edgehub-emu"))
SVG = "{http://www.w3.org/2000/svg}"


def example_graph():
    deployment = load_deployment(ROOT / "config" / "deployment.json")
    return deployment_graph(deployment, compile_routes(deployment, "edge-device"))


def harder_graph():
    doc = json.loads((ROOT / "config" / "deployment.json").read_text())
    doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {
        "everything": "FROM /messages/* WHERE $body.machine.temperature > 25 AND alert = 'true' "
        "INTO $upstream",
        "back": "FROM /messages/modules/filtermodule/outputs/again "
        'INTO BrokeredEndpoint("/modules/filtermodule/inputs/input2")',
        "sensorAll": "FROM /messages/modules/SimulatedTemperatureSensor/* "
        'INTO BrokeredEndpoint("/modules/filtermodule/inputs/raw")',
    }
    deployment = parse_deployment(doc, env={})
    return deployment_graph(deployment, compile_routes(deployment, "edge-device"))


def test_the_example_graph_has_the_modules_their_ports_upstream_and_both_routes():
    graph = example_graph()
    assert {n.id: (n.kind, n.inputs, n.outputs) for n in graph.nodes.values()} == {
        "SimulatedTemperatureSensor": ("module", [], ["temperatureOutput"]),
        "filtermodule": ("module", ["input1"], ["output1"]),
        "$upstream": ("upstream", [], []),
    }
    assert [
        (e.route, e.source, e.output, e.target, e.input, e.priority, e.time_to_live_secs) for e in graph.edges
    ] == [
        (
            "sensorToFilter",
            "SimulatedTemperatureSensor",
            "temperatureOutput",
            "filtermodule",
            "input1",
            0,
            1800,
        ),
        ("filterToIoTHub", "filtermodule", "output1", "$upstream", None, 1, 1800),
    ]


def test_mermaid_is_a_left_to_right_flowchart_with_every_node_and_labelled_edge():
    text = to_mermaid(example_graph())
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes = dict(re.findall(r'^\s+(n\d+)[\[(/{]+"([^"<]+)', text, re.M))
    assert sorted(nodes.values()) == ["$upstream", "SimulatedTemperatureSensor", "filtermodule"]
    ids = {label: node for node, label in nodes.items()}
    edges = re.findall(r'^\s+(n\d+) -->\|"([^"]+)"\| (n\d+)$', text, re.M)
    assert [(a, label.split("<br/>"), b) for a, label, b in edges] == [
        (
            ids["SimulatedTemperatureSensor"],
            ["sensorToFilter", "temperatureOutput → input1", "priority 0, TTL 1800 s"],
            ids["filtermodule"],
        ),
        (ids["filtermodule"], ["filterToIoTHub", "output1", "priority 1, TTL 1800 s"], ids["$upstream"]),
    ]


def test_mermaid_labels_escape_what_would_end_them():
    text = to_mermaid(harder_graph())
    (where,) = [line for line in text.splitlines() if "everything" in line and "-->" in line]
    assert "WHERE $body.machine.temperature #gt; 25 AND alert = 'true'" in where
    assert where.count('"') == 2  # only the label's own quotes


def test_dot_is_a_digraph_with_every_node_and_labelled_edge():
    text = to_dot(harder_graph())
    assert text.startswith("digraph deployment {\n  rankdir=LR;")
    assert re.findall(r'^\s+"([^"]+)" \[label', text, re.M) == [
        "SimulatedTemperatureSensor",
        "filtermodule",
        "*",
        "$upstream",
    ]
    edges = re.findall(r'^\s+"([^"]+)" -> "([^"]+)" \[label="([^"]*(?:\\"[^"]*)*)"\];$', text, re.M)
    assert [(a, b, label.split("\\n")[0]) for a, b, label in edges] == [
        ("*", "$upstream", "everything"),
        ("filtermodule", "filtermodule", "back"),
        ("SimulatedTemperatureSensor", "filtermodule", "sensorAll"),
    ]


def test_svg_is_well_formed_laid_out_left_to_right_and_marked_for_live_counts():
    root = ET.fromstring(to_svg(harder_graph()))
    nodes = {g.get("data-node"): g for g in root.iter(f"{SVG}g") if g.get("class") == "node"}
    assert set(nodes) == {"SimulatedTemperatureSensor", "filtermodule", "*", "$upstream"}
    x = {name: float(g.find(f"{SVG}rect").get("x")) for name, g in nodes.items()}
    assert x["SimulatedTemperatureSensor"] < x["filtermodule"] < x["$upstream"]  # the flow's direction
    assert x["*"] < x["$upstream"]
    edges = {g.get("data-route"): g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"}
    assert set(edges) == {"everything", "back", "sensorAll"}
    texts = ["".join(t.itertext()) for t in edges["everything"].iter(f"{SVG}text")]
    assert texts[:3] == [
        "everything",
        "priority lowest, TTL 100 s",
        "WHERE $body.machine.temperature > 25 AND alert = 'true'",
    ]
    assert edges["back"].get("data-endpoint") == "edge-device/filtermodule/input2"
    assert all(g.find(f"{SVG}text[@class='count']") is not None for g in edges.values())
    depths = {name for name, g in nodes.items() if g.find(f"{SVG}text[@class='depth']") is not None}
    assert depths == {"filtermodule", "$upstream"}  # the endpoints, where messages wait
    labels = [  # no two route labels overlap
        tuple(float(r.get(k)) for k in ("x", "y", "width", "height"))
        for g in edges.values()
        for r in g.iter(f"{SVG}rect")
    ]
    for i, (x1, y1, w1, h1) in enumerate(labels):
        for x2, y2, w2, h2 in labels[i + 1 :]:
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1


@pytest.mark.parametrize("output_format", ["mermaid", "dot", "svg"])
def test_the_graph_command_prints_each_format_and_writes_files(tmp_path: Path, output_format):
    printed = subprocess.run(
        [EXE, "graph", "-m", str(ROOT / "config" / "deployment.json"), "--format", output_format],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    assert "sensorToFilter" in printed.stdout and "filterToIoTHub" in printed.stdout
    target = tmp_path / f"graph.{output_format}"
    written = subprocess.run(
        [
            EXE,
            "graph",
            "-m",
            str(ROOT / "config" / "deployment.json"),
            "-f",
            output_format,
            "-o",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert written.returncode == 0 and target.read_text() == printed.stdout
    assert "3 nodes, 2 routes" in written.stderr


def test_an_unknown_format_is_refused_by_name():
    done = subprocess.run([EXE, "graph", "-f", "png"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "mermaid, dot or svg" in done.stderr


def test_the_broker_modes_bridges_are_nodes():
    deployment = load_deployment(ROOT / "config" / "bridge.json")
    graph = deployment_graph(deployment, compile_routes(deployment, "edge-device"))
    bridges = [n for n in graph.nodes.values() if n.kind == "bridge"]
    assert [b.id for b in bridges] == [f"bridge:{b.endpoint}" for b in deployment.broker.bridges]
    assert bridges and all(b.label.startswith("bridge to ") for b in bridges)
    assert "bridge to" in to_mermaid(graph) and 'data-kind="bridge"' in to_svg(graph)
