"""The deployment as a graph: modules with their outputs and inputs, ``$upstream`` and the broker's
bridges as nodes, routes as edges labelled with their name, priority, time-to-live and condition; and
the same graph as Mermaid (renders in GitHub and VS Code markdown) and Graphviz DOT text.

A route's ``FROM`` names where its messages come from: one output of a module
(``/messages/modules/M/outputs/O``), any output of a module (``…/M`` or ``…/M/outputs/*``), or every
module and device (``/messages/*``); that is the edge's start. Its ``INTO`` is a module's input or
``$upstream``: the edge's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..manifest import Deployment
from ..routing import DEFAULT_PRIORITY, BridgeEndpoint, ModuleEndpoint, RouteTable

UPSTREAM = "$upstream"
EVERYTHING = "*"
DEVICES = "devices"
ANY_OUTPUT = "*"


@dataclass
class Node:
    id: str
    label: str
    kind: str  # "module", "upstream", "everything", "devices", "bridge", "other"
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Edge:
    route: str
    source: str  # a node id
    output: str | None  # the port it leaves from, or None
    target: str
    input: str | None
    priority: int
    time_to_live_secs: int
    condition: str  # "true" when there is none
    endpoint_id: str  # the queue it fills


@dataclass
class Graph:
    nodes: dict[str, Node]
    edges: list[Edge]


def _source(source: str) -> tuple[str, str | None]:
    """(node id, output port) of a route's FROM."""
    parts = [p for p in source.strip().strip("/").split("/") if p]
    if not parts or parts[0].lower() != "messages":
        return source, None
    if len(parts) == 1 or parts[1] == "*":
        return EVERYTHING, None
    if parts[1].lower() == "modules" and len(parts) >= 3 and parts[2] != "*":
        if len(parts) >= 5 and parts[3].lower() == "outputs" and parts[4] != "*":
            return parts[2], parts[4]
        return parts[2], ANY_OUTPUT
    if parts[1].lower() == "modules":
        return EVERYTHING, None
    return DEVICES, None


def deployment_graph(deployment: Deployment, table: RouteTable) -> Graph:
    """The graph of a deployment's routes (``table``, compiled from it) over its modules, with the
    broker mode's bridges."""
    nodes: dict[str, Node] = {name: Node(name, name, "module") for name in deployment.module_names}
    edges: list[Edge] = []

    def node(node_id: str) -> Node:
        found = nodes.get(node_id)
        if found is None:
            kind, label = {
                EVERYTHING: ("everything", "every module and device"),
                DEVICES: ("devices", "leaf devices"),
                UPSTREAM: ("upstream", "$upstream"),
            }.get(node_id, ("other", node_id))
            found = nodes[node_id] = Node(node_id, label, kind)
        return found

    for route in table.routes:
        source_id, output = _source(route.source)
        start = node(source_id)
        if output is not None and output not in start.outputs:
            start.outputs.append(output)
        endpoint = route.endpoint
        if isinstance(endpoint, ModuleEndpoint):
            end = node(endpoint.module_id)
            if endpoint.input_name not in end.inputs:
                end.inputs.append(endpoint.input_name)
            target, input_name = end.id, endpoint.input_name
        elif isinstance(endpoint, BridgeEndpoint):
            target, input_name = node("mqttBroker.bridges").id, None
        else:
            target, input_name = node(UPSTREAM).id, None
        edges.append(
            Edge(
                route.name,
                source_id,
                output,
                target,
                input_name,
                route.priority,
                route.time_to_live_secs or table.global_ttl_secs,
                route.condition.text,
                endpoint.id,
            )
        )
    for bridge in deployment.broker.bridges if deployment.broker is not None else ():
        node_id = f"bridge:{bridge.endpoint}"
        nodes[node_id] = Node(node_id, f"bridge to {bridge.endpoint}", "bridge")
    return Graph(nodes, edges)


def edge_label(edge: Edge, condition_width: int = 0) -> list[str]:
    """A route's label, line by line: its name, the ports it joins, priority and time-to-live, and its
    condition (cut to ``condition_width`` characters when given)."""
    lines = [edge.route]
    if edge.input is not None:
        lines.append(f"{edge.output or '*'} → {edge.input}")
    elif edge.output is not None:
        lines.append(edge.output)
    priority = "lowest" if edge.priority == DEFAULT_PRIORITY else str(edge.priority)
    lines.append(f"priority {priority}, TTL {edge.time_to_live_secs} s")
    if edge.condition.strip().lower() != "true":
        where = f"WHERE {edge.condition}"
        if condition_width and len(where) > condition_width:
            where = where[: condition_width - 1] + "…"
        lines.append(where)
    return lines


# --- Mermaid ---------------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: its own entity codes for what would end or mark up the label."""
    return (
        text.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("|", "#124;")
    )


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart, left to right."""
    ids = {node_id: f"n{i}" for i, node_id in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for node_id, node in graph.nodes.items():
        text = _mermaid_text(node.label)
        ports = []
        if node.inputs:
            ports.append("in: " + ", ".join(node.inputs))
        if node.outputs:
            ports.append("out: " + ", ".join(node.outputs))
        if ports:
            text += "<br/>" + _mermaid_text(" · ".join(ports))
        shape = {"upstream": '(["{}"])', "everything": '[/"{}"/]', "bridge": '{{"{}"}}'}.get(
            node.kind, '["{}"]'
        )
        lines.append(f"  {ids[node_id]}{shape.format(text)}")
    for edge in graph.edges:
        label = "<br/>".join(_mermaid_text(line) for line in edge_label(edge))
        lines.append(f'  {ids[edge.source]} -->|"{label}"| {ids[edge.target]}')
    return "\n".join(lines) + "\n"


# --- Graphviz DOT ----------------------------------------------------------------------------------


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph, left to right (``dot -Tsvg`` draws it)."""
    lines = [
        "digraph deployment {",
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for node_id, node in graph.nodes.items():
        label = node.label
        if node.inputs:
            label += "\nin: " + ", ".join(node.inputs)
        if node.outputs:
            label += "\nout: " + ", ".join(node.outputs)
        shape = {"upstream": "cylinder", "everything": "parallelogram", "bridge": "hexagon"}.get(node.kind)
        extra = f", shape={shape}" if shape else ""
        lines.append(f'  "{_dot_text(node_id)}" [label="{_dot_text(label)}"{extra}];')
    for edge in graph.edges:
        label = "\n".join(edge_label(edge))
        lines.append(
            f'  "{_dot_text(edge.source)}" -> "{_dot_text(edge.target)}" [label="{_dot_text(label)}"];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"
