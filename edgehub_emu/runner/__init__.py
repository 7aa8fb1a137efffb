"""An edgeAgent for your laptop: start the deployment's modules as local processes and keep them running."""

from .config import LocalModule, LocalModulesError, load_local_modules, parse_module_option
from .policy import backoff_seconds, should_restart
from .supervisor import ModuleRunner, ModuleState, Plan

__all__ = [
    "LocalModule",
    "LocalModulesError",
    "ModuleRunner",
    "ModuleState",
    "Plan",
    "backoff_seconds",
    "load_local_modules",
    "parse_module_option",
    "should_restart",
]
