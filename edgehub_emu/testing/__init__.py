"""Testing helpers for module authors: the ``edgehub`` pytest fixture (registered as a pytest plugin)."""

from .plugin import EdgeHubFixture, Upstream, hub_settings

__all__ = ["EdgeHubFixture", "Upstream", "hub_settings"]
