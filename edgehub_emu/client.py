"""A small client for a running hub's management API, for the CLI (stdlib only, synchronous).

The hub is found through ``DATA_DIR/endpoints.json``, which a running hub writes and removes on stop.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class HubNotRunning(Exception):
    """No hub serves the management API for this data directory."""


class ApiError(Exception):
    """The API answered with an error; ``status`` and the hub's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HubClient:
    def __init__(self, data_dir: Path, token: str | None = None) -> None:
        path = data_dir / "endpoints.json"
        try:
            endpoints = json.loads(path.read_text())
        except (OSError, ValueError):
            raise HubNotRunning(
                f"no hub is running with data directory {data_dir} (no {path}): "
                "start one with 'edgehub-emu run'"
            ) from None
        if not endpoints.get("http_port"):
            raise HubNotRunning("the running hub serves no management API (started with --http-port off)")
        self.base = f"http://{endpoints.get('http_host', '127.0.0.1')}:{endpoints['http_port']}"
        self.token = token

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        request = urllib.request.Request(
            self.base + path, data=body, method=method, headers=dict(headers or {})
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=330) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise ApiError(exc.code, str(message)) from None
        except urllib.error.URLError as exc:
            raise HubNotRunning(
                f"the hub at {self.base} does not answer ({exc.reason}): is it still running?"
            ) from None
        return json.loads(data) if data else None

    def json(self, method: str, path: str, payload: Any) -> Any:
        return self.request(method, path, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        """Open a Server-Sent Events stream (before returning) and iterate over each event's data."""
        request = urllib.request.Request(self.base + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            response = urllib.request.urlopen(request, timeout=None)
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, str(exc.reason)) from None
        except urllib.error.URLError as exc:
            raise HubNotRunning(f"the hub at {self.base} does not answer: {exc}") from None
        return _events(response)


def _events(response: Any) -> Iterator[dict[str, Any]]:
    with response:
        for raw in response:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith("data: "):
                yield json.loads(line[6:])
