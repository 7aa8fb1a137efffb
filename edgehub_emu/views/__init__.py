"""Views of a deployment for people: the route graph as a picture (Mermaid, Graphviz DOT, SVG) and a
message trace as text. Pure functions of the deployment and of the hub's answers; no I/O."""

from .graph import Edge, Graph, Node, deployment_graph, to_dot, to_mermaid
from .svg import to_svg
from .trace_text import format_trace

__all__ = ["Edge", "Graph", "Node", "deployment_graph", "format_trace", "to_dot", "to_mermaid", "to_svg"]
