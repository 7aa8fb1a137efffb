"""Identities, SAS tokens and certificates: what edgeHub accepts, and keys that survive restarts."""

from __future__ import annotations

import contextlib
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from edgehub_emu.identity import (
    IdentityRegistry,
    SasError,
    connection_string,
    ensure_certificates,
    make_token,
    validate,
)

HUB = "myhub.azure-devices.net"
EDGE = "edge.local"


@pytest.fixture
def registry(tmp_path: Path) -> IdentityRegistry:
    return IdentityRegistry("dev", ["filter"], ["leaf1"], tmp_path / "identities.json")


def check(registry: IdentityRegistry, identity: str, token: str, now: float | None = None):
    ident = registry.get(identity)
    assert ident is not None
    return validate(
        token,
        device_id=ident.device_id,
        module_id=ident.module_id,
        identity_keys=ident.keys,
        device_keys=registry.device().keys,
        hostnames=[HUB, EDGE],
        now=now,
    )


def test_module_token_signed_with_its_primary_or_secondary_key(registry: IdentityRegistry):
    module = registry.module("filter")
    assert module is not None
    expiry = int(time.time()) + 3600
    check(registry, "dev/filter", make_token(f"{HUB}/devices/dev/modules/filter", module.primary_key, expiry))
    check(
        registry, "dev/filter", make_token(f"{EDGE}/devices/dev/modules/filter", module.secondary_key, expiry)
    )


def test_module_may_use_its_device_key_and_a_device_scope_token(registry: IdentityRegistry):
    device_key = registry.device().primary_key
    expiry = int(time.time()) + 60
    check(registry, "dev/filter", make_token(f"{HUB}/devices/dev/modules/filter", device_key, expiry))
    check(registry, "dev/filter", make_token(f"{HUB}/devices/dev", device_key, expiry))


@pytest.mark.parametrize(
    ("resource", "key_of", "expiry_offset", "reason"),
    [
        (f"{HUB}/devices/dev/modules/filter", "leaf1", 60, "signature"),
        (f"{HUB}/devices/dev/modules/filter", "dev/filter", -301, "expired"),
        ("other.host/devices/dev/modules/filter", "dev/filter", 60, "host"),
        (f"{HUB}/devices/dev/modules/other", "dev/filter", 60, "module"),
        (f"{HUB}/devices/x/modules/filter", "dev/filter", 60, "device"),
        (f"{HUB}/modules/filter", "dev/filter", 60, "audience"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(registry, resource, key_of, expiry_offset, reason):
    key = registry.get(key_of).primary_key
    token = make_token(resource, key, int(time.time()) + expiry_offset)
    with pytest.raises(SasError, match=reason):
        check(registry, "dev/filter", token)


def test_five_minutes_of_clock_skew_are_tolerated(registry: IdentityRegistry):
    module = registry.module("filter")
    now = time.time()
    check(
        registry,
        "dev/filter",
        make_token(f"{HUB}/devices/dev/modules/filter", module.primary_key, int(now) - 299),
    )


@pytest.mark.parametrize(
    "token", ["", "SharedAccessSignature", "Bearer x", "SharedAccessSignature sr=a&se=1"]
)
def test_malformed_tokens(registry, token):
    with pytest.raises(SasError):
        check(registry, "dev/filter", token)


def test_the_resource_is_signed_as_the_client_encoded_it(registry: IdentityRegistry):
    from edgehub_emu.identity.sas import sign

    module = registry.module("filter")
    raw = f"{HUB}/devices/dev/modules/filter"  # not URL-encoded: still valid, signed as sent
    expiry = int(time.time()) + 60
    token = f"SharedAccessSignature sr={raw}&sig={sign(module.primary_key, raw, expiry)}&se={expiry}"
    check(registry, "dev/filter", token)


def test_keys_survive_a_restart_and_new_modules_get_keys(tmp_path: Path):
    path = tmp_path / "identities.json"
    first = IdentityRegistry("dev", ["a"], path=path)
    second = IdentityRegistry("dev", ["a", "b"], path=path)
    assert first.module("a") == second.module("a")
    assert second.module("b") is not None
    assert second.get("dev/$edgeHub") is not None
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_connection_string_has_the_gateway(registry: IdentityRegistry):
    cs = connection_string(registry.module("filter"), HUB, "127.0.0.1")
    assert cs.startswith(f"HostName={HUB};DeviceId=dev;ModuleId=filter;SharedAccessKey=")
    assert cs.endswith(";GatewayHostName=127.0.0.1")


def test_certificates_are_reused_and_remade_for_new_names(tmp_path: Path):
    paths = ensure_certificates(tmp_path, ["edge.local", "localhost", "127.0.0.1"])
    ca = paths.ca_cert.read_bytes()
    server = paths.server_chain.read_bytes()
    again = ensure_certificates(tmp_path, ["localhost", "127.0.0.1"])
    assert again.ca_cert.read_bytes() == ca and again.server_chain.read_bytes() == server
    ensure_certificates(tmp_path, ["localhost", "127.0.0.2"])
    assert paths.ca_cert.read_bytes() == ca  # modules keep trusting the same CA file
    leaf = x509.load_pem_x509_certificates(paths.server_chain.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert any(str(ip) == "127.0.0.2" for ip in san.get_values_for_type(x509.IPAddress))


def test_server_certificate_verifies_against_the_ca_with_strict_checks(tmp_path: Path):
    paths = ensure_certificates(tmp_path, ["localhost", "127.0.0.1"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths.server_chain, paths.server_key)
    client = ssl.create_default_context(cafile=str(paths.ca_cert))
    client.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    a, b = ssl.MemoryBIO(), ssl.MemoryBIO()
    c, d = ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(a, b, server_hostname="localhost")
    srv = server.wrap_bio(c, d, server_side=True)
    for _ in range(10):
        for end, out_bio, in_bio in ((cli, b, c), (srv, d, a)):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
            in_bio.write(out_bio.read())
    assert cli.version() in ("TLSv1.2", "TLSv1.3")
    assert cli.getpeercert()["subjectAltName"]
