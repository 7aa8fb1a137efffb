"""Every conformance vector, as a test; pass counts per kind/test are printed at the end of the run."""

from __future__ import annotations

import pytest

from .vectors import NOT_YET, Vector, load_vectors, run

VECTORS = load_vectors()


def _param(v: Vector):
    marks = []
    reason = v.known_difference() or NOT_YET.get(v.data["kind"])
    if reason is not None:
        marks.append(pytest.mark.xfail(reason=reason, strict=True))
    return pytest.param(v, id=v.id, marks=marks)


def test_vectors_are_loaded():
    kinds = {v.kind for v in VECTORS}
    assert {"condition/evaluate", "condition/compile", "route/parse", "route/source_match"} <= kinds


@pytest.mark.parametrize("vector", [_param(v) for v in VECTORS])
def test_vector(vector: Vector, record_property):
    record_property("vector_kind", vector.kind)
    assert run(vector) == vector.data["expected"], vector.data.get("note") or vector.data.get("source")
