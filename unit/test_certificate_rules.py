"""Certificate rules from DER: validity boundaries, RFC 6125 host names, self-signed, thumbprints.

The top of this file is the small factory the judge tests share (certificates made with cryptography,
facts built by hand): test_auth_judges, test_backend_judges and test_web_services_judge import it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from exchange_compliance.facts import (
    AuthConfig,
    Directory,
    ExchangeServer,
    ServerProbe,
    SiteBinding,
    SslCertBinding,
    StoreCertificate,
    Unavailable,
    Version,
    VirtualDirectory,
)
from exchange_compliance.judge.certificates import (
    CertificateError,
    certificate_info,
    dns_name_matches,
    find_in_store,
    thumbprint_of,
)
from exchange_compliance.judge.verdict import FactUnavailable, available

# --- factory -----------------------------------------------------------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
DOMAIN = "lab.contoso.test"
DOMAIN_DN = "DC=lab,DC=contoso,DC=test"
ORG_DN = f"CN=Contoso,CN=Microsoft Exchange,CN=Services,CN=Configuration,{DOMAIN_DN}"
IIS_APPID = "{4dc3e181-e14b-4a21-b022-59fc669b0914}"
ROLES = {"Mailbox": 2, "ClientAccess": 4, "Edge": 64}


@cache
def rsa_key(name: str = "leaf") -> rsa.RSAPrivateKey:
    # RSA 2048 as Exchange uses; generated once per name because key generation is the slow part.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(
    cn: str | None = "ex01",
    sans: tuple[str, ...] | None = ("ex01", f"ex01.{DOMAIN}"),
    *,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=1800),
    issuer_cn: str | None = None,
    signer: str | None = None,
    key: str = "leaf",
    ec_key: bool = False,
    serial: int | None = None,
) -> bytes:
    """DER of a certificate. Self-signed unless `issuer_cn` names a CA (signed with the "ca" key)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]) if issuer_cn else subject
    private = ec.generate_private_key(ec.SECP256R1()) if ec_key else rsa_key(key)
    signing = rsa_key(signer or ("ca" if issuer_cn else key)) if not ec_key else private
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(private.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    return builder.sign(signing, hashes.SHA256()).public_bytes(Encoding.DER)


def thumb(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def store_cert(der: bytes, *, friendly_name: str = "", private_key: bool = True) -> StoreCertificate:
    """A store entry as the probe reports it; the strings are deliberately crude: judges must use the DER."""
    info = certificate_info(der)
    return StoreCertificate(
        thumbprint=info.thumbprint.lower(),
        subject="(as Windows prints it)",
        issuer="(as Windows prints it)",
        dns_names=info.dns_names,
        not_before=info.not_before,
        not_after=info.not_after,
        has_private_key=private_key,
        friendly_name=friendly_name,
        der=der,
    )


def exchange_self_signed(name: str = "ex01", **kwargs: object) -> bytes:
    """What setup binds on 444: CN=<host>, SANs host and FQDN."""
    return make_cert(name, (name, f"{name}.{DOMAIN}"), **kwargs)  # type: ignore[arg-type]


def probe(
    *certs: StoreCertificate,
    backend: str | None = None,
    frontend: str | None = None,
    netsh_backend: str | None = "same",
    netsh_frontend: str | None = "same",
    backend_binding: bool = True,
) -> ServerProbe:
    """A probe with the given store and the Back End (444) / Default Web Site (443) bindings.
    `netsh_*` = "same" mirrors the IIS hash into http.sys, None leaves http.sys without an entry."""
    bindings = []
    if backend_binding:
        bindings.append(SiteBinding("Exchange Back End", "https", "*:444:", backend, "My" if backend else None))
    bindings.append(SiteBinding("Exchange Back End", "http", "*:81:", None, None))
    bindings.append(SiteBinding("Default Web Site", "https", "*:443:", frontend, "My" if frontend else None))
    ssl = []
    for ip_port, iis, netsh in (("0.0.0.0:444", backend, netsh_backend), ("0.0.0.0:443", frontend, netsh_frontend)):
        value = iis if netsh == "same" else netsh
        if value:
            ssl.append(SslCertBinding(ip_port, value, IIS_APPID, "MY"))
    return ServerProbe("EX01", NOW - timedelta(days=3), tuple(certs), tuple(bindings), tuple(ssl))


def server(
    name: str = "EX01", roles: tuple[str, ...] = ("Mailbox", "ClientAccess"), version: Version | None = None
) -> ExchangeServer:
    return ExchangeServer(
        name=name,
        dn=f"CN={name},CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,{ORG_DN}",
        fqdn=f"{name.lower()}.{DOMAIN}",
        roles=sum(ROLES[r] for r in roles),
        version=version or Version(15, 2, 1544, 4),
        site="Default-First-Site-Name",
    )


def auth_config(
    current: str | None, *, next_: str | None = None, effective: datetime | None = None, previous: str | None = None
) -> AuthConfig:
    raw = tuple(f"{i}:{t}" for i, t in ((0, current), (1, previous), (2, next_)) if t)
    return AuthConfig(f"CN=Auth Configuration,{ORG_DN}", current, previous, next_, effective, raw)


def ews(name: str, internal: str | None, external: str | None) -> VirtualDirectory:
    dn = f"CN=EWS (Default Web Site),CN=HTTP,CN=Protocols,{server(name).dn}"
    return VirtualDirectory(dn, name, "EWS (Default Web Site)", "msExchWebServicesVirtualDirectory", internal, external)


def directory(
    servers: tuple[ExchangeServer, ...] = (),
    auth: AuthConfig | None = None,
    vdirs: tuple[VirtualDirectory, ...] = (),
) -> Directory:
    return Directory(
        domain_dn=DOMAIN_DN,
        configuration_dn=f"CN=Configuration,{DOMAIN_DN}",
        org_name="Contoso",
        org_dn=ORG_DN,
        org_security_descriptor=None,
        well_known_groups={},
        extended_rights={},
        servers=servers,
        computers={},
        groups={},
        auth_config=auth,
        virtual_directories=vdirs,
    )


def unavailable(name: str) -> Unavailable:
    return Unavailable("winrm probe", name, "connection refused on 5985")


# --- parsing -----------------------------------------------------------------------------------------


def test_info_is_parsed_from_der():
    der = make_cert("ex01", ("ex01", "ex01.lab.contoso.test"))
    info = certificate_info(der)
    assert info.thumbprint == hashlib.sha1(der).hexdigest().upper() == thumbprint_of(der)
    assert info.subject == "CN=ex01"
    assert info.common_name == "ex01"
    assert info.dns_names == ("ex01", "ex01.lab.contoso.test")
    assert info.self_signed
    assert (info.key_type, info.key_size, info.signature_hash) == ("RSA", 2048, "sha256")
    assert info.not_after == NOW + timedelta(days=1800)


def test_info_is_cached_per_der():
    der = make_cert()
    assert certificate_info(der) is certificate_info(der)


def test_ca_signed_is_not_self_signed():
    info = certificate_info(make_cert("mail.contoso.com", ("mail.contoso.com",), issuer_cn="Lab CA"))
    assert not info.self_signed
    assert info.issuer == "CN=Lab CA"


def test_issuer_equal_to_subject_is_not_enough_to_be_self_signed():
    # Same name as issuer, but signed by another key: only the signature proves self-signed.
    assert not certificate_info(make_cert("ex01", None, key="leaf", signer="other")).self_signed


def test_ec_key_type_and_size():
    info = certificate_info(make_cert(ec_key=True))
    assert (info.key_type, info.key_size) == ("EC secp256r1", 256)


def test_describe_is_one_line_with_evidence():
    der = make_cert("mail.contoso.com", ("mail.contoso.com", "autodiscover.contoso.com"), issuer_cn="Lab CA")
    text = certificate_info(der).describe()
    assert "\n" not in text
    for part in ("CN=mail.contoso.com", "autodiscover.contoso.com", "CN=Lab CA", "NotAfter 2030-05-06", thumb(der)):
        assert part in text


def test_garbage_is_a_certificate_error():
    with pytest.raises(CertificateError):
        certificate_info(b"\x30\x03\x02\x01\x01")


# --- validity ----------------------------------------------------------------------------------------


def test_validity_boundaries_are_exact():
    info = certificate_info(make_cert(not_before=NOW - timedelta(days=10), not_after=NOW))
    assert info.is_valid_at(NOW)  # NotAfter itself is still inside the validity period (RFC 5280)
    assert info.is_expired(NOW + timedelta(seconds=1))
    assert info.days_left(NOW + timedelta(seconds=1)) == -1
    assert info.is_not_yet_valid(NOW - timedelta(days=10, seconds=1))
    assert info.is_valid_at(NOW - timedelta(days=10))


def test_naive_now_is_taken_as_utc():
    info = certificate_info(make_cert(not_after=NOW))
    assert info.is_expired(NOW.replace(tzinfo=None) + timedelta(seconds=1))


def test_days_left_and_validity_text():
    info = certificate_info(make_cert(not_after=NOW + timedelta(days=60)))
    assert info.days_left(NOW) == 60
    assert info.time_left(NOW) == timedelta(days=60)
    assert info.validity(NOW) == "valid, 60 days left"
    assert "expired less than a day ago" in info.validity(NOW + timedelta(days=60, seconds=1))


# --- host names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("ex01.lab.contoso.test", "ex01.lab.contoso.test", True),
        ("EX01.Lab.Contoso.Test", "ex01.lab.contoso.test", True),
        ("ex01.lab.contoso.test.", "ex01.lab.contoso.test", True),
        ("ex01.lab.contoso.test", "EX01.LAB.CONTOSO.TEST.", True),
        ("*.lab.contoso.test", "ex01.lab.contoso.test", True),
        ("*.LAB.contoso.test", "EX01.lab.CONTOSO.test", True),
        ("*.lab.contoso.test", "a.b.lab.contoso.test", False),  # one label only
        ("*.lab.contoso.test", "lab.contoso.test", False),
        ("*.contoso.com", "ex01.lab.contoso.test", False),
        ("*.contoso.test", "ex01.lab.contoso.test", False),
        ("ex*.lab.contoso.test", "ex01.lab.contoso.test", False),  # partial-label wildcard refused
        ("ex01.*.contoso.test", "ex01.lab.contoso.test", False),  # only the left-most label
        ("*.test", "contoso.test", False),  # two-label wildcard: public-suffix-like
        ("*", "ex01", False),
        ("*.0.0.1", "10.0.0.1", False),
        ("ex01", "ex01", True),
        ("ex01", "ex01.lab.contoso.test", False),
        ("ex01.lab.contoso.test", "ex01..lab.contoso.test", False),
    ],
)
def test_dns_name_matching(pattern, host, expected):
    assert dns_name_matches(pattern, host) is expected


def test_common_name_counts_only_without_san_dns_names():
    with_sans = certificate_info(make_cert("ex01.lab.contoso.test", ("mail.contoso.com",)))
    assert not with_sans.matches_host("ex01.lab.contoso.test")
    assert with_sans.reference_names == ("mail.contoso.com",)
    cn_only = certificate_info(make_cert("ex01.lab.contoso.test", None))
    assert cn_only.matches_host("ex01.lab.contoso.test")
    assert cn_only.matching_name("EX01.lab.contoso.test") == "ex01.lab.contoso.test"


def test_fqdn_only_certificate_does_not_name_the_short_name():
    info = certificate_info(make_cert("ex01.lab.contoso.test", ("ex01.lab.contoso.test",)))
    assert info.matches_host("ex01.lab.contoso.test")
    assert not info.matches_host("ex01")


# --- store lookups and availability --------------------------------------------------------------------


def test_store_lookup_uses_the_der_and_ignores_case_and_spaces():
    der = make_cert()
    entry = store_cert(der)
    facts = probe(entry)
    spaced = " ".join(thumb(der).lower()[i : i + 2] for i in range(0, 40, 2))
    assert find_in_store(facts, spaced) is entry
    assert find_in_store(facts, "00" * 20) is None
    assert find_in_store(facts, None) is None


def test_store_lookup_does_not_trust_the_printed_thumbprint():
    der = make_cert()
    lying = StoreCertificate("AB" * 20, "CN=x", "CN=x", (), NOW, NOW, True, "", der)
    assert find_in_store(probe(lying), "AB" * 20) is None
    assert find_in_store(probe(lying), thumb(der)) is lying


def test_available_passes_facts_and_raises_for_unavailable():
    facts = probe()
    assert available(facts) is facts
    with pytest.raises(FactUnavailable, match=r"EX02.*connection refused"):
        available(unavailable("EX02"))
