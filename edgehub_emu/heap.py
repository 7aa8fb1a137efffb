"""Keep what start-up made out of the garbage collector's way, in a process that is only the hub.

A full collection walks every object the process holds. Most of them come from start-up (modules,
the route grammars, the deployment) and live as long as the process; walking them took ~17 ms at a
time, during which no connection was served, and a manifest reload compiled in a thread held the
interpreter for ~45 ms that way. Frozen, they are left out of every later collection. Only for
``edgehub-emu run``: a test process that starts many hubs keeps its own collector as it is.
"""

from __future__ import annotations

import gc


def freeze_start_up_objects() -> None:
    """Collect what is garbage now, then leave everything still alive out of later collections."""
    gc.collect()
    gc.freeze()
