"""Testing helpers for module authors: the ``edgehub`` pytest fixture (registered as a pytest plugin)."""

from .plugin import EdgeHubFixture, Upstream

__all__ = ["EdgeHubFixture", "Upstream"]
