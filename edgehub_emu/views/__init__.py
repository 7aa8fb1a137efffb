"""Views of a deployment for people: the route graph as a picture (Mermaid, Graphviz DOT, SVG) and a
message trace as text. Pure functions of the deployment and of the hub's answers; no I/O."""

from .trace_text import format_trace

__all__ = ["format_trace"]
