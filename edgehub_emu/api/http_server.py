"""How the hub's HTTP listeners parse requests, and what a malformed one gets.

aiohttp refuses a request line or header over 8 KiB while parsing, before any application sees it: the
answer is plain text, and the refusal is logged with a traceback. The hub's listeners parse up to
``PARSE_LINE``/``PARSE_FIELD`` instead, so that the management API can refuse a long URL (414) or a
long header (431) with its own JSON error (``size_refusal``); what even those limits refuse, and any
other malformed request, is logged in one line without a traceback (``ClientFaultsLog``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

MAX_URL = 8192
"""The longest URL the management API answers (IoT Hub's own limit is lower)."""
MAX_HEADER = 8192
"""The longest header value the management API answers."""
PARSE_LINE = 64 * 1024
PARSE_FIELD = 128 * 1024

log = logging.getLogger("edgehub_emu.http")


class ClientFaultsLog(logging.LoggerAdapter):
    """aiohttp's server logger, with one line instead of a traceback for requests it could not parse
    (the client's fault); exceptions of the hub's own code keep their traceback."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            log.info("refused a malformed HTTP request (%d): %s", exc.code, str(exc.message)[:200])
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def server_options(idle_timeout: float) -> dict[str, Any]:
    """Keyword arguments of ``web.AppRunner`` for every HTTP listener of the hub."""
    return {
        "access_log": None,
        "handle_signals": False,
        # also ends connections that send no request, or send it byte by byte (aiohttp times a
        # connection from its start): the hub's HTTP idle time-out
        "keepalive_timeout": idle_timeout,
        "max_line_size": PARSE_LINE,
        "max_field_size": PARSE_FIELD,
        "logger": ClientFaultsLog(logging.getLogger("aiohttp.server"), {}),
    }


def size_refusal(request: web.Request) -> tuple[int, str, str] | None:
    """(status, code, message) for a URL or a header longer than the API answers, else None."""
    if len(request.raw_path) > MAX_URL:
        return 414, "URITooLong", f"the URL is longer than {MAX_URL} characters"
    for name, value in request.raw_headers:
        if len(value) > MAX_HEADER:
            header = name[:64].decode("latin-1")
            return 431, "RequestHeaderFieldsTooLarge", f"header {header!r} is longer than {MAX_HEADER} bytes"
    return None
