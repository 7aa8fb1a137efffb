"""Who a SAS token says a client is: one check for every head (MQTT CONNECT, AMQP's CBS and PLAIN, the
module-methods HTTPS API), with edgeHub's rules (``identity.sas``): the identity must exist, the token
must be signed with its key (or, for a module, its device's key), not be expired by more than five
minutes, and name the IoT hub or the edge device host."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..identity import Identity, IdentityRegistry, SasError, validate


class AuthenticationError(Exception):
    """The client is not who it claims to be; the message says why (for the log, not the client)."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    identity: Identity
    token_expiry: int


class Authenticator:
    def __init__(self, identities: IdentityRegistry, hostnames: Sequence[str]) -> None:
        self.identities = identities
        self.hostnames = tuple(hostnames)

    def authenticate(self, identity_id: str, token: str) -> Authenticated:
        """Check ``token`` for ``identity_id`` (``device`` or ``device/module``)."""
        identity = self.identities.get(identity_id)
        if identity is None:
            raise AuthenticationError(f"unknown identity {identity_id!r}")
        device = self.identities.get(identity.device_id)
        try:
            parsed = validate(
                token,
                device_id=identity.device_id,
                module_id=identity.module_id,
                identity_keys=identity.keys,
                device_keys=device.keys if device is not None else (),
                hostnames=self.hostnames,
            )
        except SasError as exc:
            raise AuthenticationError(str(exc)) from None
        return Authenticated(identity, parsed.expiry)
