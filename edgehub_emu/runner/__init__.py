"""An edgeAgent for your laptop: start the deployment's modules as local processes and keep them running."""

from .config import LocalModule, LocalModulesError, load_local_modules, parse_module_option
from .policy import backoff_seconds, should_restart
from .supervisor import ModuleRunner, ModuleState

__all__ = [
    "LocalModule",
    "LocalModulesError",
    "ModuleRunner",
    "ModuleState",
    "backoff_seconds",
    "load_local_modules",
    "parse_module_option",
    "should_restart",
]
