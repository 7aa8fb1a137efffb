"""Twins: edgeHub's reported-property limits, JSON merge, versions, and persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgehub_emu.iothub.twins import TwinError, TwinStore, combine, diff, merge, validate_reported_patch


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"a.b": 1}, "may not contain"),
        ({"$x": 1}, "may not contain"),
        ({"a b": 1}, "may not contain"),
        ({"a": [1, None]}, "null is not allowed"),
        ({"a": "x" * 4097}, "longer than 4096"),
        ({"a": 2**52}, "integer outside"),
        ({"n" * 1025: 1}, "longer than 1024"),
        ([1, 2], "JSON object"),
    ],
)
def test_reported_patches_outside_edgehubs_limits_are_400(patch, reason):
    with pytest.raises(TwinError, match=reason) as exc:
        validate_reported_patch(patch, len(json.dumps(patch)))
    assert exc.value.status == 400


def test_depth_and_size_limits():
    deep: dict = {}
    node = deep
    for _ in range(10):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(TwinError, match="deeper"):
        validate_reported_patch(deep, 100)
    with pytest.raises(TwinError, match="exceeds"):
        validate_reported_patch({"a": 1}, 32 * 1024 + 1)
    validate_reported_patch({"a": {"b": [1, 2.5, "x", True]}, "n": -(2**52)}, 100)


def test_merge_deletes_with_null_and_diff_is_its_inverse():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}
    new = {"a": 1, "b": {"c": 5}, "f": 6}
    patch = diff(old, new)
    assert patch == {"e": None, "b": {"c": 5, "d": None}, "f": 6}
    merge(old, patch)
    assert old == new


def test_twins_persist_and_manifest_changes_bump_the_desired_version(tmp_path: Path):
    path = tmp_path / "twins.json"
    store = TwinStore(path)
    assert store.seed_desired("d/m", {"limit": 1}) == {"limit": 1, "$version": 2}
    store.patch_reported("d/m", {"status": "ok"})
    again = TwinStore(path)
    document = again.twin("d/m").document()
    assert document["desired"] == {"limit": 1, "$version": 2}
    assert document["reported"] == {"status": "ok", "$version": 2}
    assert again.seed_desired("d/m", {"limit": 1}) is None  # unchanged manifest: nothing to push
    assert again.seed_desired("d/m", {"limit": 2, "$version": 99}) == {"limit": 2, "$version": 3}


def test_reported_patches_combine_while_the_upstream_is_away() -> None:
    combined = combine({"a": 1, "nested": {"x": 1, "y": 2}}, {"nested": {"y": None, "z": 3}, "b": 2})
    assert combined == {"a": 1, "nested": {"x": 1, "y": None, "z": 3}, "b": 2}


def test_diff_gives_the_patch_from_one_desired_to_the_next() -> None:
    old = {"a": 1, "gone": True, "nested": {"x": 1, "y": 2}, "$version": 3}
    new = {"a": 1, "nested": {"x": 1, "y": 5}, "added": "z", "$version": 5}
    assert diff(old, new) == {"nested": {"y": 5}, "added": "z", "gone": None}
    assert diff(new, new) == {}
