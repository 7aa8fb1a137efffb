"""The hot path compiled to C with mypyc, used in place of its sources only while it matches them (see
``loader``); ``build`` makes it."""

from .loader import MODULES, PURE_VARIABLE, install, mismatch, status

__all__ = ["MODULES", "PURE_VARIABLE", "install", "mismatch", "status"]
