"""A message trace as a person reads it (``edgehub-emu trace``, and a fixture's failed wait)."""

from __future__ import annotations

import json
from typing import Any

_OUTCOME = {
    "fired": "matched",
    "false": "false",
    "undefined": "undefined",
    "source_mismatch": "not this source",
}


def _clock(iso: str) -> str:
    """The time of day of an ISO timestamp (the trace's times are all within one run)."""
    return iso.partition("T")[2].rstrip("Z") or iso


def format_trace(message: dict[str, Any]) -> str:
    """One traced message: who sent it, what each route made of it and why, where it was queued, what
    happened there."""
    received = message["received"]
    body = received["body"]
    shown = body["text"] if body.get("text") is not None else f"<{body['bytes']} bytes, not UTF-8>"
    if len(shown) > 200:
        shown = shown[:200] + "…"
    lines = [
        f"message {message['edgeMessageId']}",
        f"  received {_clock(received['at'])} from {received['from']}"
        + (f", output {received['output']}" if received.get("output") else "")
        + f" ({body['bytes']} bytes{', kept in part' if body.get('truncated') else ''})",
        f"    source {received['source']}",
        f"    body {shown}",
    ]
    if received["properties"]:
        lines.append(f"    properties {json.dumps(received['properties'])}")
    routes = message.get("routes")
    if routes is not None:
        lines.append("  routes:")
        width = max((len(r["name"]) for r in routes), default=0)
        for route in routes:
            lines.append(f"    {_OUTCOME.get(route['outcome'], route['outcome']):15} {route['name']:{width}}")
            for reason in route["reasons"]:
                lines.append(f"{'':20}{reason}")
    if message.get("dropped"):
        lines.append(f"  dropped: {message['dropped']} (no route took it)")
    for copy in message["queued"]:
        endpoint = "$upstream" if copy["endpoint"] == "iothub" else copy["endpoint"]
        lines.append(
            f"  queued for {endpoint}, priority {copy['priority']}, time-to-live "
            f"{copy['timeToLiveSecs']} s (route {copy['route']}): {copy['state']}"
        )
        for event in copy["events"]:
            lines.append(f"    {_clock(event['at'])} {event['event']}")
        if copy["state"] == "expired":
            lines.append(f"    {_clock(copy['expiresAt'])} expired: its time-to-live ran out before delivery")
    return "\n".join(lines)
