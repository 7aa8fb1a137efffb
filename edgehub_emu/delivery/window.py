"""The in-flight deliveries of one client, sans-IO: how many may be unacknowledged at once, which ones,
in which order they went out, and whether the oldest has waited too long.

edgeHub sends one module message at a time and waits up to 30 s for its acknowledgement; with a
window of 1 this is exactly that. A larger window pipelines (order and at-least-once hold: the store
hands entries out in order, and everything unacknowledged goes back when the window is cleared).
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class DeliveryWindow(Generic[T]):
    def __init__(self, capacity: int, timeout: float) -> None:
        if capacity < 1:
            raise ValueError("a delivery window holds at least one message")
        self.capacity = capacity
        self.timeout = timeout
        self.free = capacity  # room for this many more (an attribute: read for every delivery)
        self._inflight: dict[T, float] = {}  # token -> when it was sent, in sending order

    def __len__(self) -> int:
        return len(self._inflight)

    def __contains__(self, token: object) -> bool:
        return token in self._inflight

    def sent(self, token: T, now: float) -> None:
        if self.free <= 0:
            raise RuntimeError("the delivery window is full")
        self._inflight[token] = now
        self.free -= 1

    def acked(self, token: T) -> bool:
        """The client acknowledged ``token``; False if it is not in flight (a late or stray one)."""
        if self._inflight.pop(token, None) is None:
            return False
        self.free += 1
        return True

    def clear(self) -> list[T]:
        """Everything in flight, in the order it was sent; the window is empty afterwards."""
        tokens = list(self._inflight)
        self._inflight.clear()
        self.free = self.capacity
        return tokens

    def deadline(self) -> float | None:
        """When the oldest delivery in flight times out."""
        for sent_at in self._inflight.values():
            return sent_at + self.timeout
        return None

    def overdue(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline
