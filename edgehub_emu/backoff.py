"""Exponential back-off, the one used everywhere something is retried: endpoint deliveries (edgeHub's
1 s … 60 s), upstream connections, local modules that keep exiting."""

from __future__ import annotations


class Backoff:
    """``first``, twice that, … up to ``limit``; ``reset`` after a success starts over."""

    def __init__(self, first: float = 1.0, limit: float = 60.0) -> None:
        self.first = first
        self.limit = limit
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.first * 2.0**self.attempt, self.limit)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
