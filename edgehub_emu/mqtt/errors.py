"""Errors of the MQTT layer that subclass ``OSError``, in a module of their own: the hot path's modules
are compiled with mypyc (see ``edgehub_emu.compiled``), which cannot compile such a class."""


class NotConnected(ConnectionError):
    """The session has no connection to send on."""
