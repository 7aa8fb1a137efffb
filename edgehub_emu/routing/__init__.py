"""edgeHub's routing: the route and condition languages, compiled once, and the route table.

Pure code: no sockets, no event loop, no files. Everything the rest of the hub needs is exported here.
"""

from .compiler import CompiledCondition, compile_condition, parse_condition
from .endpoints import (
    BRIDGE_ID,
    UPSTREAM_ID,
    BridgeEndpoint,
    Endpoint,
    ModuleEndpoint,
    UpstreamEndpoint,
    endpoint_from_id,
)
from .errors import ConditionCompileError, EndpointError, Problem, RouteError, RouteSyntaxError
from .lint import RouteWarning, lint_route
from .message import Message, json_body
from .route import DEFAULT_PRIORITY, ParsedRoute, Route, compile_route, normalize_source, parse_route
from .router import DEFAULT_TIME_TO_LIVE_SECS, Explanation, RoutedEndpoint, RouteTable, RouteVerdict
from .values import UNDEF

__all__ = [
    "BRIDGE_ID",
    "DEFAULT_PRIORITY",
    "DEFAULT_TIME_TO_LIVE_SECS",
    "UNDEF",
    "UPSTREAM_ID",
    "BridgeEndpoint",
    "CompiledCondition",
    "ConditionCompileError",
    "Endpoint",
    "EndpointError",
    "Explanation",
    "Message",
    "ModuleEndpoint",
    "ParsedRoute",
    "Problem",
    "Route",
    "RouteError",
    "RouteSyntaxError",
    "RouteTable",
    "RouteVerdict",
    "RouteWarning",
    "RoutedEndpoint",
    "UpstreamEndpoint",
    "compile_condition",
    "compile_route",
    "endpoint_from_id",
    "json_body",
    "lint_route",
    "normalize_source",
    "parse_condition",
    "parse_route",
]
