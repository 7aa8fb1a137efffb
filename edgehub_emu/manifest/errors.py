"""Manifest errors: every problem, each at its JSON path, so a user fixes them all in one go."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """One problem at a JSON path of the manifest (``""`` for the whole document)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(Exception):
    """A manifest that cannot be used; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[ManifestProblem]) -> None:
        self.source = source
        self.problems = problems
        count = len(problems)
        super().__init__(
            f"{source}: {count} problem{'s' if count != 1 else ''}: " + "; ".join(map(str, problems))
        )
