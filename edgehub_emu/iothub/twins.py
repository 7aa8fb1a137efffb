"""Module twins: desired properties from the manifest (and patches), reported properties from modules.

Reported patches are checked with edgeHub's limits (depth 10, names of at most 1024 bytes without
control characters, white space, ``.``, ``$`` or ``#``, strings of at most 4096 bytes, integers within
±2^52, no null in arrays, 32 KB in all) and merged the JSON-merge way (null deletes). There is no cloud
here, so this store plays IoT Hub's part too: each change of a side increments its ``$version``.
Twins are kept in ``DATA_DIR/twins.json``; on start the manifest's desired properties win, and if they
changed the desired version moves on, so a module sees a new version.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data_files import DamagedFile, JsonFile

MAX_DEPTH = 10
MAX_NAME_BYTES = 1024
MAX_STRING_BYTES = 4096
MAX_PATCH_BYTES = 32 * 1024
MAX_SAFE_INTEGER = 2**52 - 1


class TwinError(Exception):
    """A twin operation failed; ``status`` is what edgeHub answers (400 validation, 500 otherwise)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _check_value(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TwinError(400, f"{path}: nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for name, child in value.items():
            _check_name(name, path)
            _check_value(child, f"{path}.{name}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if item is None:
                raise TwinError(400, f"{path}[{i}]: null is not allowed in arrays")
            _check_value(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, str):
        if len(value.encode("utf-8")) > MAX_STRING_BYTES:
            raise TwinError(400, f"{path}: string longer than {MAX_STRING_BYTES} bytes")
    elif isinstance(value, float) and not math.isfinite(value):
        raise TwinError(400, f"{path}: {value} is not a JSON number")
    elif (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not -MAX_SAFE_INTEGER - 1 <= value <= MAX_SAFE_INTEGER
    ):
        raise TwinError(400, f"{path}: integer outside ±2^52")


def _check_name(name: str, path: str) -> None:
    where = f"{path}.{name}" if path else name
    if not name:
        raise TwinError(400, f"{where}: empty property name")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise TwinError(400, f"{where}: property name longer than {MAX_NAME_BYTES} bytes")
    for ch in name:
        if ch in ".$#" or ch.isspace() or ord(ch) < 32 or ord(ch) == 127:
            raise TwinError(400, f"{where}: property names may not contain {ch!r}")


def validate_reported_patch(patch: Any, raw_size: int) -> None:
    """Raise TwinError(400) if edgeHub would refuse this reported-properties patch."""
    if raw_size > MAX_PATCH_BYTES:
        raise TwinError(400, f"patch of {raw_size} bytes exceeds {MAX_PATCH_BYTES} bytes")
    if not isinstance(patch, dict):
        raise TwinError(400, "a reported-properties patch must be a JSON object")
    _check_value(patch, "", 1)


def validate_desired(desired: Any) -> None:
    """Raise TwinError(400) for desired properties IoT Hub would refuse: not an object, over 32 KB,
    deeper than 10 levels, NaN or infinite numbers, or names and values outside the twin limits."""
    if not isinstance(desired, dict):
        raise TwinError(400, "desired properties must be a JSON object")
    try:
        size = len(json.dumps(desired, allow_nan=False).encode("utf-8"))
    except ValueError:
        size = 0  # NaN or infinity: named by the walk below
    except RecursionError:
        raise TwinError(400, f"desired properties nested deeper than {MAX_DEPTH} levels") from None
    if size > MAX_PATCH_BYTES:
        raise TwinError(400, f"desired properties of {size} bytes exceed {MAX_PATCH_BYTES} bytes")
    _check_value({k: v for k, v in desired.items() if not k.startswith("$")}, "", 1)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch: objects merge, null deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``old`` into ``new`` (removed keys as null); ``$`` keys such as
    ``$version`` and ``$metadata`` are not properties and are left out."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        if not key.startswith("$"):
            patch[key] = None
    for key, value in new.items():
        if key.startswith("$"):
            continue
        if key not in old:
            patch[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(old[key], dict):
            inner = diff(old[key], value)
            if inner:
                patch[key] = inner
        elif value != old[key]:
            patch[key] = copy.deepcopy(value)
    return patch


def combine(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """Two patches as one, as if ``then`` were applied after ``first``: later values win, objects merge,
    and a null stays (it deletes when the combined patch is applied)."""
    out = dict(first)
    for key, value in then.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = combine(out[key], value)
        else:
            out[key] = value
    return out


def _strip(properties: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in properties.items() if k not in ("$version", "$metadata")}


@dataclass
class Twin:
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 1
    reported_version: int = 1
    desired_updated: float = field(default_factory=time.time)
    reported_updated: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        """The twin as a module's GET receives it."""
        return {
            "desired": {**copy.deepcopy(self.desired), "$version": self.desired_version},
            "reported": {**copy.deepcopy(self.reported), "$version": self.reported_version},
        }


class TwinStore:
    """Twins by identity id (``device/module``), persisted in ``path`` when given."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._file = JsonFile(path, "the twins") if path is not None else None
        self._lock = threading.Lock()
        self._twins: dict[str, Twin] = {}
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                for ident, t in raw.items():
                    self._twins[ident] = Twin(**t)
            except (ValueError, TypeError, AttributeError, RecursionError) as exc:
                raise DamagedFile(
                    path,
                    f"not the hub's twins: {exc}",
                    "every twin's desired and reported properties (the manifest's desired properties "
                    "come back; what was set from the cloud side or reported is lost)",
                ) from None

    def twin(self, identity_id: str) -> Twin:
        twin = self._twins.get(identity_id)
        if twin is None:
            twin = self._twins[identity_id] = Twin()
        return twin

    def seed_desired(self, identity_id: str, desired: dict[str, Any]) -> dict[str, Any] | None:
        """Make ``desired`` (from a manifest) the desired properties; return the patch to push, with its
        ``$version``, or None if nothing changed."""
        with self._lock:
            twin = self.twin(identity_id)
            patch = diff(twin.desired, _strip(desired))
            if not patch:
                return None
            twin.desired = copy.deepcopy(_strip(desired))
            twin.desired_version += 1
            twin.desired_updated = time.time()
            self._save()
            return {**patch, "$version": twin.desired_version}

    def patch_desired(self, identity_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a desired patch (the cloud side); return it with its new ``$version``."""
        with self._lock:
            twin = self.twin(identity_id)
            clean = _strip(patch)
            merge(twin.desired, clean)
            twin.desired_version += 1
            twin.desired_updated = time.time()
            self._save()
            return {**copy.deepcopy(clean), "$version": twin.desired_version}

    def patch_reported(self, identity_id: str, patch: dict[str, Any]) -> int:
        """Merge a validated reported patch; return the new reported version."""
        with self._lock:
            twin = self.twin(identity_id)
            merge(twin.reported, patch)
            twin.reported_version += 1
            twin.reported_updated = time.time()
            self._save()
            return twin.reported_version

    def _save(self) -> None:
        if self._file is not None:
            self._file.write({ident: t.__dict__ for ident, t in self._twins.items()})
