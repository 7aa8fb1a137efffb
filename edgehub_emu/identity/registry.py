"""The identities of one edge device: the device, its modules, and downstream (leaf) devices.

Each identity has a primary and a secondary symmetric key, generated once and kept in
``DATA_DIR/identities.json`` so that connection strings stay valid across restarts.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from ..data_files import DamagedFile, write_json

SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


HOLDS = "the keys of every module and device: their connection strings stop working without it"


@dataclass(frozen=True, slots=True)
class Identity:
    """``device_id`` alone for a device, ``device_id/module_id`` for a module."""

    device_id: str
    module_id: str | None
    primary_key: str
    secondary_key: str
    leaf: bool = False

    @property
    def id(self) -> str:
        return self.device_id if self.module_id is None else f"{self.device_id}/{self.module_id}"

    @property
    def keys(self) -> tuple[str, str]:
        return self.primary_key, self.secondary_key


class IdentityRegistry:
    """Identities by id (``device`` or ``device/module``); keys persisted in ``path`` when given."""

    def __init__(
        self,
        device_id: str,
        modules: list[str],
        leaf_devices: list[str] | None = None,
        path: Path | None = None,
    ) -> None:
        self.device_id = device_id
        self.path = path
        self._lock = threading.Lock()
        stored = self._read()
        self._identities: dict[str, Identity] = {}
        self._add(device_id, None, stored)
        for module in [*SYSTEM_MODULES, *modules]:
            self._add(device_id, module, stored)
        for leaf in leaf_devices or []:
            self._add(leaf, None, stored, leaf=True)
        self._write()

    def _read(self) -> dict[str, list[str]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:  # (unreadable is an OSError, for the caller)
            raise DamagedFile(self.path, f"not JSON: {exc}", HOLDS) from None
        if not isinstance(data, dict) or not isinstance(data.get("keys", {}), dict):
            raise DamagedFile(self.path, "not the hub's identities", HOLDS)
        return {k: v for k, v in data.get("keys", {}).items() if isinstance(v, list) and len(v) == 2}

    def _add(
        self, device_id: str, module_id: str | None, stored: dict[str, list[str]], leaf: bool = False
    ) -> None:
        ident = device_id if module_id is None else f"{device_id}/{module_id}"
        primary, secondary = stored.get(ident) or (new_key(), new_key())
        self._identities[ident] = Identity(device_id, module_id, primary, secondary, leaf)

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stored = self._read()
        stored.update({i.id: [i.primary_key, i.secondary_key] for i in self._identities.values()})
        write_json(self.path, {"keys": stored}, indent=2, private=True)

    def get(self, identity_id: str) -> Identity | None:
        """An identity by id. A module of a leaf device (``child/filtermodule``) exists whenever the leaf
        device does: a child edge device's modules reach their parent with tokens signed by the child
        device's key, as in nested edge."""
        identity = self._identities.get(identity_id)
        if identity is None and "/" in identity_id:
            device_id, _, module_id = identity_id.partition("/")
            device = self._identities.get(device_id)
            if device is not None and device.leaf and module_id and "/" not in module_id:
                identity = Identity(device_id, module_id, device.primary_key, device.secondary_key, True)
                self._identities[identity_id] = identity
        return identity

    def identity_id(self, module_or_device: str) -> str:
        """``filtermodule`` → ``edge-device/filtermodule``; a leaf device id or ``device/module`` stays."""
        if "/" in module_or_device or module_or_device in self._identities:
            return module_or_device
        return f"{self.device_id}/{module_or_device}"

    def stored_ids(self) -> set[str]:
        """Every identity whose keys the data directory holds (a leaf device a hub once ran with too)."""
        return set(self._read())

    def device(self) -> Identity:
        return self._identities[self.device_id]

    def module(self, module_id: str) -> Identity | None:
        return self._identities.get(f"{self.device_id}/{module_id}")

    def ensure_modules(self, modules: list[str]) -> None:
        """Add identities for modules a reloaded manifest deploys (keys of known ones are kept)."""
        with self._lock:
            stored = self._read()
            for module in modules:
                if f"{self.device_id}/{module}" not in self._identities:
                    self._add(self.device_id, module, stored)
            self._write()

    def __iter__(self):
        return iter(self._identities.values())
