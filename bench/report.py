"""One line of the benchmark report: a figure beside its target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    figure: str
    target: str
    met: bool
