"""Testing helpers: the ``edgehub`` pytest fixture (registered as a pytest plugin) for module authors,
and ``HubProcess``, ``edgehub-emu run`` as a child process."""

from ..core import MethodError
from .plugin import EdgeHubFixture, TopicWatch, Upstream, hub_settings
from .process import FREE_PORTS, HubProcess, HubProcessError

__all__ = [
    "FREE_PORTS",
    "EdgeHubFixture",
    "HubProcess",
    "HubProcessError",
    "MethodError",
    "TopicWatch",
    "Upstream",
    "hub_settings",
]
