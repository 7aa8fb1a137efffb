"""Deployment manifests: models, loading with ``${VAR}`` substitution, validation and lint.

Bad input becomes a ``ManifestError`` listing every problem at its JSON path, never a traceback.
"""

from .errors import ManifestError, ManifestProblem
from .lint import ManifestWarning, lint_deployment
from .loader import Deployment, RouteSpec, compile_routes, load_deployment, parse_deployment
from .models import EdgeAgentDesired, EdgeHubDesired, Module
from .single_module import TARGET, input_names, single_module_manifest
from .watcher import watch_manifest

__all__ = [
    "TARGET",
    "Deployment",
    "EdgeAgentDesired",
    "EdgeHubDesired",
    "ManifestError",
    "ManifestProblem",
    "ManifestWarning",
    "Module",
    "RouteSpec",
    "compile_routes",
    "input_names",
    "lint_deployment",
    "load_deployment",
    "parse_deployment",
    "single_module_manifest",
    "watch_manifest",
]
