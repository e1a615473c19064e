"""The lab's certificates: what Exchange setup and an admin would have put on the servers, as real X.509."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from exchange_compliance.lab.certs import (
    CA_FILE,
    CA_KEY_FILE,
    KEY_POOL_SIZE,
    LabCertificates,
    dns_name_list,
    issue_certificates,
    parse_subject,
    windows_name,
)
from exchange_compliance.lab.scenario import (
    Scenario,
    default_certificates,
    generated_servers,
    load_scenario,
    parse_scenario,
)

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def key_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rsa-keys")


@pytest.fixture(scope="module")
def seeds(key_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> LabCertificates:
    return issue_certificates(load_scenario("seeds"), NOW, tmp_path_factory.mktemp("certs"), key_cache=key_cache)


def _san(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def _verify_signature(cert: x509.Certificate, issuer_key: rsa.RSAPublicKey) -> None:
    assert cert.signature_hash_algorithm is not None
    issuer_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)


def test_exchange_certificate_is_what_setup_makes(seeds: LabCertificates) -> None:
    issued = seeds.for_server("EX01", "exchange")
    cert = issued.certificate
    assert windows_name(cert.subject) == "CN=EX01"
    assert cert.issuer == cert.subject  # self-signed
    assert _san(cert) == ["EX01", "ex01.lab.contoso.test"]
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    _verify_signature(cert, key)
    assert cert.not_valid_before_utc == (NOW - timedelta(days=200)).replace(microsecond=0)
    assert cert.not_valid_after_utc == NOW + timedelta(days=1625)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert issued.friendly_name == "Microsoft Exchange"


def test_templates_are_instantiated_per_server(seeds: LabCertificates) -> None:
    scenario = load_scenario("seeds")
    thumbprints = {seeds.for_server(s.name, "exchange").thumbprint for s in scenario.servers}
    assert len(thumbprints) == len(scenario.servers)
    ex02 = seeds.for_server("ex02", "exchange").certificate  # names match case-insensitively, as in AD
    assert windows_name(ex02.subject) == "CN=EX02"
    assert _san(ex02) == ["EX02", "ex02.lab.contoso.test"]
    assert set(seeds.per_server) == {s.name for s in scenario.servers}


def test_shared_certificates_are_one_certificate_everywhere(seeds: LabCertificates) -> None:
    assert seeds.for_server("EX01", "auth-expired") is seeds.for_server("EX05", "auth-expired")
    auth = seeds.shared["auth"].certificate
    assert windows_name(auth.subject) == "CN=Microsoft Exchange Server Auth Certificate"
    with pytest.raises(x509.ExtensionNotFound):
        auth.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    # No SAN: PowerShell's DnsNameList falls back to the CN.
    assert dns_name_list(auth) == ["Microsoft Exchange Server Auth Certificate"]


def test_expired_auth_certificate(seeds: LabCertificates) -> None:
    cert = seeds.shared["auth-expired"].certificate
    assert cert.not_valid_after_utc == NOW - timedelta(days=5)
    assert cert.not_valid_before_utc == NOW - timedelta(days=1805)
    assert seeds.auth_thumbprints() == (seeds.shared["auth-expired"].thumbprint, None, None)


def test_lab_ca_issues_the_third_party_certificate(seeds: LabCertificates) -> None:
    ca = seeds.ca.certificate
    cert = seeds.shared["thirdparty"].certificate
    assert cert.issuer == ca.subject
    assert windows_name(cert.issuer) == "CN=Exchange Compliance Lab CA, O=exchange-compliance lab"
    assert windows_name(cert.subject) == "CN=mail.contoso.com"
    assert _san(cert) == ["mail.contoso.com", "autodiscover.contoso.com"]
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    _verify_signature(cert, ca_key)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.not_valid_after_utc == NOW + timedelta(days=305)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_winrm_certificates_validate_for_their_fqdn(seeds: LabCertificates) -> None:
    store = Store([seeds.ca.certificate])
    for server in load_scenario("seeds").servers:
        leaf = seeds.winrm_for(server.name).certificate
        assert windows_name(leaf.subject) == f"CN={server.fqdn}"
        verifier = PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName(server.fqdn))
        verifier.verify(leaf, [])  # raises when chain, validity or name is wrong


def test_thumbprints_keys_and_files(seeds: LabCertificates, tmp_path: Path, key_cache: Path) -> None:
    for issued in seeds.all_certificates():
        assert issued.thumbprint == hashlib.sha1(issued.der).hexdigest().upper()
        key = serialization.load_pem_private_key(issued.key_pem, password=None)
        assert b"BEGIN PRIVATE KEY" in issued.key_pem  # PKCS8, unencrypted
        public = issued.certificate.public_key()
        assert isinstance(public, rsa.RSAPublicKey) and isinstance(key, rsa.RSAPrivateKey)
        assert key.public_key().public_numbers() == public.public_numbers()
    out = tmp_path / "out"
    certs = issue_certificates(load_scenario("healthy"), NOW, out, key_cache=key_cache)
    assert x509.load_pem_x509_certificate((out / CA_FILE).read_bytes()) == certs.ca.certificate
    assert (out / CA_KEY_FILE).stat().st_mode & 0o077 == 0


def test_keys_are_pooled_and_reused_across_runs(tmp_path: Path) -> None:
    cache = tmp_path / "keys"
    scenario = Scenario(name="pool", servers=generated_servers(40), certificates=default_certificates())
    first = issue_certificates(scenario, NOW, tmp_path / "a", key_cache=cache)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) <= KEY_POOL_SIZE + 1  # the pool plus the CA's own key
    second = issue_certificates(scenario, NOW, tmp_path / "b", key_cache=cache)
    assert sorted(p.name for p in cache.iterdir()) == files  # nothing generated the second time

    def public(issued: LabCertificates, server: str) -> x509.Certificate:
        return issued.for_server(server, "exchange").certificate

    # The same certificate keeps its key from one lab to the next; certificates themselves are new.
    assert public(first, "EX007").public_key() == public(second, "EX007").public_key()
    assert public(first, "EX007").serial_number != public(second, "EX007").serial_number
    distinct = {c.certificate.public_key().public_numbers().n for c in first.all_certificates()}
    assert len(distinct) <= KEY_POOL_SIZE + 1
    # The CA's key is its own: no leaf shares it.
    ca_n = first.ca.certificate.public_key().public_numbers().n
    assert all(c.certificate.public_key().public_numbers().n != ca_n for c in first.all_certificates()[1:])


def test_two_hundred_servers_issue_in_a_few_seconds(key_cache: Path, tmp_path: Path) -> None:
    scenario = Scenario(name="scale", servers=generated_servers(200), certificates=default_certificates())
    issue_certificates(scenario, NOW, tmp_path / "warm", key_cache=key_cache)  # the pool exists after `lab up`
    started = time.perf_counter()
    certs = issue_certificates(scenario, NOW, tmp_path / "out", key_cache=key_cache)
    elapsed = time.perf_counter() - started
    assert len(certs.winrm) == 200 and len(certs.per_server["EX200"]) == 1
    assert elapsed < 5, f"200 servers took {elapsed:.2f} s"


def test_scenario_templates_signed_by_the_lab_ca(key_cache: Path, tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "servers": [{"name": "MBX1", "backend_certificate": "internal", "store": ["exchange", "internal"]}],
            "certificates": {
                "internal": {
                    "subject": 'CN={fqdn}, O="Contoso, Ltd", C=US',
                    "sans": ["{fqdn}", "{name}"],
                    "issuer": "lab-ca",
                    "key_size": 1024,
                    "friendly_name": "Internal {name}",
                }
            },
        },
        "custom.toml",
    )
    certs = issue_certificates(scenario, NOW, tmp_path, key_cache=key_cache)
    cert = certs.for_server("MBX1", "internal").certificate
    assert windows_name(cert.subject) == 'CN=mbx1.lab.contoso.test, O="Contoso, Ltd", C=US'
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Contoso, Ltd"
    assert cert.subject.rdns[0].get_attributes_for_oid(NameOID.COUNTRY_NAME)  # ASN.1 order: C first
    assert _san(cert) == ["mbx1.lab.contoso.test", "MBX1"]
    assert cert.public_key().key_size == 1024  # type: ignore[union-attr]
    assert cert.issuer == certs.ca.certificate.subject
    assert certs.for_server("MBX1", "internal").friendly_name == "Internal MBX1"


def test_auth_thumbprints_follow_the_scenario(key_cache: Path, tmp_path: Path) -> None:
    base = {"servers": [{"name": "EX01"}], "certificates": {"auth-next": {"subject": "CN=Next Auth"}}}
    staged = parse_scenario({**base, "auth": {"previous": "auth-next", "next": "auth-next"}}, "a.toml")
    certs = issue_certificates(staged, NOW, tmp_path / "a", key_cache=key_cache)
    assert certs.auth_thumbprints() == (
        certs.shared["auth"].thumbprint,
        certs.shared["auth-next"].thumbprint,
        certs.shared["auth-next"].thumbprint,
    )
    absent = parse_scenario({**base, "auth": {"absent": True}}, "b.toml")
    assert issue_certificates(absent, NOW, tmp_path / "b", key_cache=key_cache).auth_thumbprints() is None


def test_windows_name_rendering() -> None:
    name = parse_subject("CN=EX01, OU=Servers, DC=lab, DC=contoso, DC=test")
    assert windows_name(name) == "CN=EX01, OU=Servers, DC=lab, DC=contoso, DC=test"
    assert name.rdns[0].get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)[0].value == "test"
    assert windows_name(parse_subject("CN=x, ST=Bavaria, E=a@b.c")) == "CN=x, S=Bavaria, E=a@b.c"
    assert windows_name(parse_subject(r"CN=a\, b")) == 'CN="a, b"'


def test_issued_certificates_hash_like_windows(seeds: LabCertificates) -> None:
    # The thumbprint Windows shows is SHA-1 over the DER encoding, upper-case.
    issued = seeds.shared["thirdparty"]
    assert issued.thumbprint == issued.certificate.fingerprint(hashes.SHA1()).hex().upper()
