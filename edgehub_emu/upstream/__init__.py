"""``$upstream`` sinks: the local capture (the cloud on your laptop); bridges come later."""

from .capture import UpstreamCapture, UpstreamRecord

__all__ = ["UpstreamCapture", "UpstreamRecord"]
