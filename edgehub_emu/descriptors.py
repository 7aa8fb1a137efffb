"""Open file descriptors: the hub's limit raised to what the system allows, and a watch that says so
when it is nearly reached.

At the limit, new connections cannot be accepted: the event loop takes and drops them, and a module's
CONNECT goes unanswered with nothing in the log. So the soft limit is raised to the hard one at start,
and a periodic check logs one line when open descriptors pass 90% of it (and one when they are back
under 80%), naming the limit and how to raise it.
"""

from __future__ import annotations

import errno
import logging
import os
import resource

log = logging.getLogger("edgehub_emu.hub")


def raise_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class DescriptorWatch:
    def __init__(self, high: float = 0.9, low: float = 0.8) -> None:
        self.high, self.low = high, low
        self.near_limit = False

    def check(self) -> None:
        limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            used = len(os.listdir("/proc/self/fd"))
        except OSError as exc:
            if exc.errno != errno.EMFILE:  # no /proc here
                return
            used = limit  # not even one descriptor left to look with
        if not self.near_limit and used >= limit * self.high:
            self.near_limit = True
            log.warning(
                "%d of %d open files in use: at the limit new connections are refused; raise it "
                "(ulimit -n, or the container's nofile limit)",
                used,
                limit,
            )
        elif self.near_limit and used < limit * self.low:
            self.near_limit = False
            log.info("%d of %d open files in use: accepting connections again", used, limit)
