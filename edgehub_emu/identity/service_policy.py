"""The hub's ``iothubowner`` shared access policy: the key cloud-side code (Microsoft's ``azure-iot-hub``
package) signs its requests with, as it would for IoT Hub.

The key is made once per data directory (``service-policy.json``) so that a connection string stays
valid across restarts. A request's ``Authorization`` is ``SharedAccessSignature sr={host}&sig=…&se=…
&skn=iothubowner``, signed over ``sr`` as sent, as IoT Hub checks it.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from pathlib import Path
from urllib.parse import unquote

from ..data_files import write_json
from .sas import MAX_CLOCK_SKEW_SECS, SasError, parse_token, sign

POLICY = "iothubowner"


def service_key(data_dir: Path) -> str:
    """The policy's key, made (and kept) on first use."""
    path = data_dir / "service-policy.json"
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))[POLICY])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    data_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {POLICY: key}, private=True)
    return key


def service_connection_string(host: str, key: str) -> str:
    return f"HostName={host};SharedAccessKeyName={POLICY};SharedAccessKey={key}"


def check_service_token(header: str, key: str, hosts: set[str], now: float | None = None) -> None:
    """Raise SasError saying why ``header`` is not a valid ``iothubowner`` token for one of ``hosts``."""
    parsed = parse_token(header)
    if parsed.key_name != POLICY:
        raise SasError(f"the token's policy (skn) is {parsed.key_name!r}, not {POLICY!r}")
    if unquote(parsed.raw_resource).lower() not in {h.lower() for h in hosts}:
        raise SasError(f"the token is for {unquote(parsed.raw_resource)!r}, not this hub")
    if parsed.expiry + MAX_CLOCK_SKEW_SECS < (time.time() if now is None else now):
        raise SasError("the token has expired")
    expected = sign(key, parsed.raw_resource, parsed.expiry)
    if not hmac.compare_digest(expected.encode(), parsed.signature.encode("utf-8", "surrogatepass")):
        raise SasError("the token's signature does not match the iothubowner key")
