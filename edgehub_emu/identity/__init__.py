"""Identities of the edge device and its modules, SAS tokens, connection strings and certificates."""

from .certificates import CertificatePaths, ensure_certificates
from .connection_string import (
    WORKLOAD_API_VERSION,
    connection_environment,
    connection_string,
    credentials,
    edge_environment,
    generation_id,
)
from .registry import SYSTEM_MODULES, Identity, IdentityRegistry
from .sas import SasError, make_token, parse_token, validate
from .service_policy import check_service_token, service_connection_string, service_key

__all__ = [
    "SYSTEM_MODULES",
    "WORKLOAD_API_VERSION",
    "CertificatePaths",
    "Identity",
    "IdentityRegistry",
    "SasError",
    "check_service_token",
    "connection_environment",
    "connection_string",
    "credentials",
    "edge_environment",
    "ensure_certificates",
    "generation_id",
    "make_token",
    "parse_token",
    "service_connection_string",
    "service_key",
    "validate",
]
