"""How steady this machine's CPU is: context for every latency tail in the report.

A fixed slice of pure-Python work (about 0.1 ms) is timed back to back for a few seconds, in this
process, with nothing else running. On a steady machine every slice takes about as long as the
median. On a shared virtual machine some stretches run several times slower (the host runs other
work on our core); a message whose handling falls into such a stretch takes that many times longer,
and at 1,000 msg/s the messages arriving meanwhile queue behind it. That, not the hub's code, is what
sets the p99 figures here when it happens: the report gives the share of time spent in slices at
least 5x slower than the median, and the longest such stretch.
"""

from __future__ import annotations

import statistics
import time

from .report import Result

SECONDS = 5.0
SLOW = 5.0  # a slice this many times the median counts as slowed down


def _slice() -> int:
    total = 0
    for i in range(1500):
        total += i * i
    return total


def slowdowns(seconds: float = SECONDS) -> tuple[float, float, float]:
    """(median slice in ms, share of the time in slowed slices, longest run of slowed slices in ms)."""
    clock = time.perf_counter
    spans: list[tuple[float, float]] = []
    end = clock() + seconds
    while (began := clock()) < end:
        _slice()
        spans.append((began, clock() - began))
    median = statistics.median(d for _, d in spans)
    slowed = [(b, d) for b, d in spans if d >= SLOW * median]
    longest = stretch = 0.0
    last_end = None
    for began, duration in slowed:
        stretch = stretch + duration if last_end is not None and began - last_end < 2 * median else duration
        longest = max(longest, stretch)
        last_end = began + duration
    share = sum(d for _, d in slowed) / sum(d for _, d in spans)
    return median * 1000, share, longest * 1000


def run() -> list[Result]:
    median, share, longest = slowdowns()
    return [
        Result(
            "machine: time in >= 5x CPU slow-downs",
            f"{share * 100:.2f} %",
            f"(longest {longest:.0f} ms; slice {median:.2f} ms)",
            True,
        ),
    ]
