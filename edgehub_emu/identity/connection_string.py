"""Connection strings for modules and leaf devices, in the form the Azure IoT SDKs parse."""

from __future__ import annotations

from pathlib import Path

from .registry import Identity


def connection_string(identity: Identity, iothub_hostname: str, gateway_hostname: str) -> str:
    """``HostName=…;DeviceId=…;ModuleId=…;SharedAccessKey=…;GatewayHostName=…`` for ``identity``."""
    parts = [f"HostName={iothub_hostname}", f"DeviceId={identity.device_id}"]
    if identity.module_id is not None:
        parts.append(f"ModuleId={identity.module_id}")
    parts.append(f"SharedAccessKey={identity.primary_key}")
    parts.append(f"GatewayHostName={gateway_hostname}")
    return ";".join(parts)


def connection_environment(
    identity: Identity, iothub_hostname: str, gateway_hostname: str, ca_file: Path
) -> dict[str, str]:
    """The two variables a module started with a connection string reads, as the SDKs name them."""
    return {
        "EdgeHubConnectionString": connection_string(identity, iothub_hostname, gateway_hostname),
        "EdgeModuleCACertificateFile": str(ca_file),
    }
