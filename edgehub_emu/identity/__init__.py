"""Identities of the edge device and its modules, SAS tokens, connection strings and certificates."""

from .certificates import CertificatePaths, ensure_certificates
from .connection_string import connection_environment, connection_string
from .registry import SYSTEM_MODULES, Identity, IdentityRegistry
from .sas import SasError, make_token, parse_token, validate

__all__ = [
    "SYSTEM_MODULES",
    "CertificatePaths",
    "Identity",
    "IdentityRegistry",
    "SasError",
    "connection_environment",
    "connection_string",
    "ensure_certificates",
    "make_token",
    "parse_token",
    "validate",
]
