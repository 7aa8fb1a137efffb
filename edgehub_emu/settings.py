"""Runtime settings of the hub: command-line flags, with ``EDGEHUB_EMU_*`` environment defaults.

Only what the hub reads today lives here; each capability adds its own settings as it lands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MANIFEST = Path("config/deployment.json")
DEFAULT_DEVICE_ID = "edge-device"
DEFAULT_IOTHUB_HOSTNAME = "edgehub-emu.azure-devices.net"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"EDGEHUB_EMU_{name}", default)


@dataclass(frozen=True, slots=True)
class Settings:
    """What a hub needs to know about itself. ``device_id`` is the edge device's id: module endpoints
    are ``{device_id}/{module}/{input}`` and modules connect as ``{device_id}/{module}``."""

    manifest: Path = field(default_factory=lambda: Path(_env("MANIFEST", str(DEFAULT_MANIFEST))))
    device_id: str = field(default_factory=lambda: _env("DEVICE_ID", DEFAULT_DEVICE_ID))
    iothub_hostname: str = field(default_factory=lambda: _env("IOTHUB_HOSTNAME", DEFAULT_IOTHUB_HOSTNAME))
