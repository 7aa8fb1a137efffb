"""The conformance runner itself: extra vector files, and failures that are reported, not hidden."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .vectors import load_vectors, run


def test_files_named_in_edgehub_vectors_are_run_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    extra = [
        {
            "kind": "condition",
            "test": "evaluate",
            "input": "a = 'x'",
            "message": {"properties": {"a": "x"}},
            "expected": "true",
        },
        {
            "kind": "route",
            "test": "parse",
            "input": "FROM /x INTO $upstream",
            "message": None,
            "expected": "parse_error",
        },
    ]
    first, second = tmp_path / "one.json", tmp_path / "two.json"
    first.write_text(json.dumps(extra[:1]))
    second.write_text(json.dumps(extra[1:]))
    monkeypatch.setenv("EDGEHUB_VECTORS", os.pathsep.join([str(first), str(second)]))
    vectors = load_vectors()
    mine = [v for v in vectors if v.file in ("one.json", "two.json")]
    assert [v.kind for v in mine] == ["condition/evaluate", "route/parse"]
    assert run(mine[0]) == "true"
    assert run(mine[1]) != mine[1].data["expected"]  # a wrong expectation is caught, not skipped


def test_a_kind_without_a_runner_raises_instead_of_passing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "x.json"
    path.write_text(
        json.dumps([{"kind": "nonsense", "test": "t", "input": "", "message": None, "expected": 1}])
    )
    monkeypatch.setenv("EDGEHUB_VECTORS", str(path))
    [vector] = [v for v in load_vectors() if v.file == "x.json"]
    with pytest.raises(NotImplementedError):
        run(vector)
