"""What a module or device is given to connect with: a connection string and the CA (the SDKs'
``EdgeHubConnectionString`` and ``EdgeModuleCACertificateFile``), or the ``IOTEDGE_*`` variables of the
edge environment, with which the SDKs ask the workload API for the CA and for signatures. One home
for both, used by the hub, its runner of local modules, the fixture and ``edgehub-emu creds``."""

from __future__ import annotations

import hashlib
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


WORKLOAD_API_VERSION = "2019-01-30"


def generation_id(primary_key: str) -> str:
    """A module's generation id: stable while its keys are (like edgeAgent's, it changes when the
    module identity is made again)."""
    return hashlib.sha256(primary_key.encode()).hexdigest()[:20]


def edge_environment(
    identity: Identity, iothub_hostname: str, gateway_hostname: str, workload_uri: str
) -> dict[str, str]:
    """The ``IOTEDGE_*`` variables edgeAgent gives a module, with which the SDKs reach the workload API."""
    if identity.module_id is None:
        raise ValueError("the edge environment is for modules; leaf devices use a connection string")
    return {
        "IOTEDGE_IOTHUBHOSTNAME": iothub_hostname,
        "IOTEDGE_GATEWAYHOSTNAME": gateway_hostname,
        "IOTEDGE_DEVICEID": identity.device_id,
        "IOTEDGE_MODULEID": identity.module_id,
        "IOTEDGE_MODULEGENERATIONID": generation_id(identity.primary_key),
        "IOTEDGE_WORKLOADURI": workload_uri,
        "IOTEDGE_APIVERSION": WORKLOAD_API_VERSION,
        "IOTEDGE_AUTHSCHEME": "sasToken",
    }


def credentials(
    identity: Identity,
    iothub_hostname: str,
    gateway_hostname: str,
    *,
    ca_file: Path,
    workload_uri: str,
    edge: bool = False,
) -> dict[str, str]:
    """The variables an identity connects with: a connection string and CA file, or (``edge``) the edge
    environment."""
    if edge:
        return edge_environment(identity, iothub_hostname, gateway_hostname, workload_uri)
    return connection_environment(identity, iothub_hostname, gateway_hostname, ca_file)
