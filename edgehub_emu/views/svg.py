"""The deployment graph as SVG, laid out here (no Graphviz needed): columns left to right in the
direction of flow, a module's inputs on the left edge of its box and its outputs on the right, each
route a curve from an output to an input, labelled with its name, priority, time-to-live and condition.

Layout: a node's column is one more than the furthest column of the nodes that send to it (routes that
would loop back are left out of that count); ``$upstream`` and bridges take the last column. Within a
column, nodes keep the order of the deployment.

The dashboard draws the same picture and updates it live: each route's group carries
``data-route="NAME"`` and a ``class="count"`` text, each node ``data-node="ID"`` and a
``class="depth"`` text, which the page fills in.
"""

from __future__ import annotations

from html import escape

from .graph import Edge, Graph, Node, edge_label

CHAR = 7.2  # average width of a character at the font size used, in px
LINE = 15
PAD = 10
COLUMN_GAP = 160
ROW_GAP = 40
NODE_MIN_WIDTH = 150
TITLE = 22
PORT = 18

_FILL = {
    "module": "#eef4fb",
    "upstream": "#fdf1e4",
    "everything": "#f1f1f1",
    "devices": "#f1f1f1",
    "bridge": "#eef8ee",
    "other": "#f6f6f6",
}
_STROKE = {"module": "#3b73b9", "upstream": "#c7761e", "bridge": "#3f8f3f"}


def _columns(graph: Graph) -> dict[str, int]:
    incoming: dict[str, list[str]] = {node_id: [] for node_id in graph.nodes}
    for edge in graph.edges:
        if edge.source != edge.target:
            incoming[edge.target].append(edge.source)
    column: dict[str, int] = {}
    visiting: set[str] = set()

    def place(node_id: str) -> int:
        if node_id in column:
            return column[node_id]
        if node_id in visiting:  # a loop: this edge does not push the node further right
            return -1
        visiting.add(node_id)
        column[node_id] = 1 + max((place(s) for s in incoming[node_id]), default=-1)
        visiting.discard(node_id)
        return column[node_id]

    for node_id in graph.nodes:
        place(node_id)
    last = max((c for n, c in column.items() if graph.nodes[n].kind not in ("upstream", "bridge")), default=0)
    for node_id, node in graph.nodes.items():
        if node.kind in ("upstream", "bridge"):
            column[node_id] = last + 1
    return column


class _Box:
    def __init__(self, node: Node, x: float, y: float) -> None:
        self.node = node
        self.x = x
        self.y = y
        texts = [node.label, *(f"▸ {p}" for p in node.inputs), *(f"{p} ▸" for p in node.outputs)]
        self.width = max(NODE_MIN_WIDTH, max(len(t) for t in texts) * CHAR + 2 * PAD + 20)
        rows = max(len(node.inputs), len(node.outputs), 1)
        self.height = TITLE + rows * PORT + PAD + LINE  # the last line: the queue depth

    def input_at(self, name: str | None) -> tuple[float, float]:
        index = self.node.inputs.index(name) if name in self.node.inputs else 0
        return self.x, self.y + TITLE + index * PORT + PORT / 2 + 4

    def output_at(self, name: str | None) -> tuple[float, float]:
        index = self.node.outputs.index(name) if name in self.node.outputs else 0
        if not self.node.outputs:
            return self.x + self.width, self.y + self.height / 2
        return self.x + self.width, self.y + TITLE + index * PORT + PORT / 2 + 4


def to_svg(graph: Graph) -> str:
    columns = _columns(graph)
    by_column: dict[int, list[Node]] = {}
    for node_id, node in graph.nodes.items():
        by_column.setdefault(columns[node_id], []).append(node)
    # Each route's label sits in the gap right after the column it leaves from; a gap is as wide as
    # its widest label.
    gap_width: dict[int, float] = {}
    for edge in graph.edges:
        width = _label_size(edge)[0] + 60
        gap_width[columns[edge.source]] = max(gap_width.get(columns[edge.source], 0), width)
    boxes: dict[str, _Box] = {}
    right_edge: dict[int, float] = {}
    x = 20.0
    for column in sorted(by_column):
        y = 20.0
        widest = 0.0
        for node in by_column[column]:
            box = _Box(node, x, y)
            boxes[node.id] = box
            y += box.height + ROW_GAP
            widest = max(widest, box.width)
        for node in by_column[column]:  # one width per column: inputs line up
            boxes[node.id].width = widest
        right_edge[column] = x + widest
        x += widest + max(COLUMN_GAP, gap_width.get(column, 0))
    nodes_bottom = max((b.y + b.height for b in boxes.values()), default=0)
    placed: dict[int, list[tuple[float, float]]] = {}  # per gap: the label boxes' vertical extents
    loop_y = nodes_bottom + 40
    edges_svg: list[str] = []
    lowest = nodes_bottom
    for edge in graph.edges:
        column = columns[edge.source]
        start = boxes[edge.source].output_at(edge.output)
        end = boxes[edge.target].input_at(edge.input)
        label_w, label_h = _label_size(edge)
        center_x = right_edge[column] + max(COLUMN_GAP, gap_width.get(column, 0)) / 2
        loop = columns[edge.target] <= column
        wanted = loop_y if loop else start[1] - label_h / 2
        top = _free_slot(placed.setdefault(column, []), wanted, label_h)
        middle_y = top + label_h / 2
        left, right = center_x - label_w / 2, center_x + label_w / 2
        path = (
            f"M {start[0]:.1f} {start[1]:.1f} C {start[0] + 30:.1f} {start[1]:.1f}, "
            f"{left - 30:.1f} {middle_y:.1f}, {left:.1f} {middle_y:.1f}"
        )
        if loop:  # under everything, back to the left of the target
            loop_y = top + label_h + 20
            under = top + label_h + 10
            path += (
                f" M {right:.1f} {middle_y:.1f} C {right + 60:.1f} {middle_y:.1f}, "
                f"{right + 60:.1f} {under:.1f}, {center_x:.1f} {under:.1f} L {end[0] - 40:.1f} {under:.1f} "
                f"C {end[0] - 60:.1f} {under:.1f}, {end[0] - 40:.1f} {end[1]:.1f}, {end[0]:.1f} {end[1]:.1f}"
            )
        else:
            bend = (right + end[0]) / 2
            path += (
                f" M {right:.1f} {middle_y:.1f} C {bend:.1f} {middle_y:.1f}, {bend:.1f} {end[1]:.1f}, "
                f"{end[0]:.1f} {end[1]:.1f}"
            )
        lowest = max(lowest, top + label_h + (30 if loop else 0))
        edges_svg.extend(_edge(edge, path, center_x, top, label_w, label_h))
    width = max((b.x + b.width for b in boxes.values()), default=0) + 20
    height = lowest + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" font-family="Helvetica, Arial, sans-serif" '
        'font-size="12" class="deployment-graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
        *edges_svg,
    ]
    for box in boxes.values():
        out.extend(_node(box))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _free_slot(taken: list[tuple[float, float]], wanted: float, height: float) -> float:
    """The highest top at or below ``wanted`` where a label of ``height`` overlaps none taken."""
    top = max(wanted, 4.0)
    moved = True
    while moved:
        moved = False
        for low, high in taken:
            if top < high + 6 and top + height > low - 6:
                top = high + 6
                moved = True
    taken.append((top, top + height))
    return top


def _label_size(edge: Edge) -> tuple[float, float]:
    lines = _edge_lines(edge)
    return max(len(line) for line in lines) * CHAR + 16, LINE * (len(lines) + 1) + 8


def _edge(edge: Edge, path: str, center_x: float, top: float, width: float, height: float) -> list[str]:
    lines = _edge_lines(edge)
    out = [
        f'<g class="edge" data-route="{escape(edge.route)}" data-endpoint="{escape(edge.endpoint_id)}">',
        f'<path d="{path}" fill="none" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>',
        f'<rect class="label" x="{center_x - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" '
        f'height="{height:.1f}" rx="4" fill="white" stroke="#bbb"/>',
    ]
    for i, line in enumerate(lines):
        weight = ' font-weight="bold"' if i == 0 else ""
        out.append(
            f'<text x="{center_x:.1f}" y="{top + 16 + i * LINE:.1f}" text-anchor="middle"{weight}>'
            f"{escape(line)}</text>"
        )
    out.append(
        f'<text class="count" x="{center_x:.1f}" y="{top + 16 + len(lines) * LINE:.1f}" '
        'text-anchor="middle" fill="#2a6a2a"></text>'
    )
    out.append("</g>")
    return out


def _edge_lines(edge: Edge) -> list[str]:
    return edge_label(edge, condition_width=60)


def _node(box: _Box) -> list[str]:
    node = box.node
    fill = _FILL.get(node.kind, "#f6f6f6")
    stroke = _STROKE.get(node.kind, "#888")
    rx = 18 if node.kind == "upstream" else 6
    out = [
        f'<g class="node" data-node="{escape(node.id)}" data-kind="{node.kind}">',
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" height="{box.height:.1f}" rx="{rx}" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>',
        f'<text x="{box.x + box.width / 2:.1f}" y="{box.y + 16:.1f}" text-anchor="middle" '
        f'font-weight="bold" class="title">{escape(node.label)}</text>',
    ]
    for name in node.inputs:
        x, y = box.input_at(name)
        out.append(f'<circle cx="{x:.1f}" cy="{y - 4:.1f}" r="3" fill="{stroke}"/>')
        out.append(f'<text x="{x + 8:.1f}" y="{y:.1f}" class="input">▸ {escape(name)}</text>')
    for name in node.outputs:
        x, y = box.output_at(name)
        out.append(f'<circle cx="{x:.1f}" cy="{y - 4:.1f}" r="3" fill="{stroke}"/>')
        out.append(
            f'<text x="{x - 8:.1f}" y="{y:.1f}" text-anchor="end" class="output">{escape(name)} ▸</text>'
        )
    if node.inputs or node.kind in ("upstream", "bridge"):  # an endpoint: its queue depth goes here
        out.append(
            f'<text class="depth" x="{box.x + box.width / 2:.1f}" y="{box.y + box.height - 8:.1f}" '
            'text-anchor="middle" fill="#666" font-size="11"></text>'
        )
    out.append("</g>")
    return out
