"""edgehub-emu: a local emulator of the Azure IoT Edge hub (edgeHub).

Real IoT Edge modules connect to it as they would to edgeHub on a device; it routes their messages with
edgeHub's route language, and serves twins and direct methods. See README.md.
"""

from .compiled import install as _use_compiled_hot_path

_use_compiled_hot_path()  # before any of the hot path's modules is imported

from .settings import Settings  # noqa: E402

__all__ = ["Settings"]
__version__ = "0.1.0"
