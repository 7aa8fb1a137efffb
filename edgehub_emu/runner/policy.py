"""edgeAgent's restart policies, and the back-off between restarts.

``never``: an exited module stays down. ``on-failure``: restarted when it exits with a non-zero code
(crashed), not when it shuts down cleanly. ``on-unhealthy``: as on-failure (edgeAgent adds Docker
health checks, which local processes do not have). ``always``: restarted however it exits.
"""

from __future__ import annotations

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
STABLE_AFTER = 30.0  # a module that ran this long before exiting starts its back-off over


def should_restart(policy: str, exit_code: int) -> bool:
    if policy == "always":
        return True
    if policy in ("on-failure", "on-unhealthy"):
        return exit_code != 0
    return False


def backoff_seconds(failures_in_a_row: int) -> float:
    """1 s, 2 s, 4 s, … up to 60 s, before restart number ``failures_in_a_row`` (counted from 1)."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, failures_in_a_row - 1))
