"""The lab's certificates: real X.509, issued from a scenario the way Exchange setup and an admin would.

- the "exchange" certificate as Exchange setup makes it: self-signed, CN=<host>, SANs host and FQDN, RSA 2048;
- the Auth certificate and any scenario certificate, self-signed or issued by the lab CA;
- a WinRM HTTPS certificate per server (CN=<fqdn>, SAN <fqdn>), issued by the lab CA that the suite trusts.

RSA key generation dominates the cost (tens of milliseconds a key), so keys come from a small pool persisted in
a cache directory and are reused across certificates: thumbprints still differ (subject, serial and validity
do), and nothing the suite checks depends on keys being unique. 200 servers then issue in about a second.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from .scenario import CertificateSpec, Scenario, ServerSpec

KEY_POOL_SIZE = 8
CA_SUBJECT = "CN=Exchange Compliance Lab CA, O=exchange-compliance lab"
CA_FILE = "lab-ca.pem"
CA_KEY_FILE = "lab-ca.key.pem"
WINRM_CERT_NAME = "winrm"

# .NET's X500DistinguishedName short names; anything else is rendered "OID.<dotted>" as .NET does.
_SHORT_NAMES: dict[ObjectIdentifier, str] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "S",
    NameOID.COUNTRY_NAME: "C",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.TITLE: "T",
    NameOID.GIVEN_NAME: "G",
    NameOID.SURNAME: "SN",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
}
# Accepted when a scenario writes a subject; "ST" is the RFC 4514 spelling of .NET's "S".
_PARSE_NAMES = {short: oid for oid, short in _SHORT_NAMES.items()} | {
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "EMAIL": NameOID.EMAIL_ADDRESS,
}


class CertificateError(ValueError):
    pass


@dataclass(frozen=True)
class IssuedCertificate:
    name: str  # scenario certificate name ("exchange", "auth", ...), "winrm", or "lab-ca"
    der: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)  # PKCS8 PEM, unencrypted
    thumbprint: str  # SHA-1 of DER, upper-case hex, as Windows shows it
    friendly_name: str

    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class LabCertificates:
    ca: IssuedCertificate
    shared: dict[str, IssuedCertificate]  # certificate name -> the one certificate (non-template specs)
    per_server: dict[str, dict[str, IssuedCertificate]]  # server name -> template name -> its instance
    winrm: dict[str, IssuedCertificate]  # server name -> WinRM HTTPS certificate
    auth_names: tuple[str | None, str | None, str | None] | None  # (current, previous, next); None: absent

    def for_server(self, server: str, cert_name: str) -> IssuedCertificate:
        """The certificate `cert_name` as it exists on `server` (its own instance when it is a template)."""
        instances = self._server_instances(server)
        if cert_name in instances:
            return instances[cert_name]
        if cert_name in self.shared:
            return self.shared[cert_name]
        raise KeyError(f"no certificate {cert_name!r} for server {server!r}")

    def winrm_for(self, server: str) -> IssuedCertificate:
        return self.winrm[self._server_key(server)]

    def auth_thumbprints(self) -> tuple[str | None, str | None, str | None] | None:
        """(current, previous, next) Auth certificate thumbprints per scenario.auth; None when it is absent."""
        if self.auth_names is None:
            return None
        return tuple(self._auth_thumbprint(name) for name in self.auth_names)  # type: ignore[return-value]

    def all_certificates(self) -> list[IssuedCertificate]:
        found = [self.ca, *self.shared.values(), *self.winrm.values()]
        found += [cert for instances in self.per_server.values() for cert in instances.values()]
        return found

    def _auth_thumbprint(self, name: str | None) -> str | None:
        if name is None:
            return None
        if name in self.shared:
            return self.shared[name].thumbprint
        # The org has one Auth configuration: a per-server certificate cannot be "the" Auth certificate.
        raise CertificateError(f"auth names {name!r}, a per-server template certificate")

    def _server_key(self, server: str) -> str:
        if server in self.winrm:
            return server
        # Server names compare case-insensitively, as in AD.
        for key in self.winrm:
            if key.lower() == server.lower():
                return key
        raise KeyError(f"no server {server!r}")

    def _server_instances(self, server: str) -> dict[str, IssuedCertificate]:
        return self.per_server[self._server_key(server)]


class KeyPool:
    """A few RSA keys per size, generated once and kept as PEM under `directory` for the next lab."""

    def __init__(self, directory: Path | None, size: int = KEY_POOL_SIZE) -> None:
        self.directory = directory
        self.size = size
        self._keys: dict[str, rsa.RSAPrivateKey] = {}

    def leaf_key(self, bits: int, label: str) -> rsa.RSAPrivateKey:
        """A pool key chosen by `label`, so the same certificate keeps its key from one lab to the next."""
        return self._key(bits, str(zlib.crc32(label.encode()) % self.size))

    def ca_key(self) -> rsa.RSAPrivateKey:
        # A key of its own: a leaf sharing the CA's key would confuse chain building by key identifier.
        return self._key(2048, "ca")

    def _key(self, bits: int, slot: str) -> rsa.RSAPrivateKey:
        label = f"rsa{bits}-{slot}"
        if label not in self._keys:
            self._keys[label] = self._load_or_generate(bits, label)
        return self._keys[label]

    def _load_or_generate(self, bits: int, label: str) -> rsa.RSAPrivateKey:
        path = self.directory / f"{label}.pem" if self.directory else None
        if path is not None and path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
                if isinstance(key, rsa.RSAPrivateKey) and key.key_size == bits:
                    return key
            except ValueError:
                pass  # a damaged cache file is regenerated below
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(_key_pem(key))
            tmp.chmod(0o600)
            tmp.replace(path)  # atomic: concurrent labs never read half a key
        return key


def default_key_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "exchange-compliance" / "rsa-keys"


def parse_subject(text: str) -> x509.Name:
    """A subject as scenarios (and Windows) write it, "CN=mail.contoso.com, O=Contoso", into an X.509 name.

    Like .NET's rendering, the text lists the most specific RDN first, so the ASN.1 order is reversed.
    """
    rdns = []
    for part in _split_unescaped(text, ","):
        attributes = []
        for piece in _split_unescaped(part, "+"):
            key, sep, value = piece.partition("=")
            oid = _PARSE_NAMES.get(key.strip().upper())
            if not sep or oid is None:
                raise CertificateError(f"cannot read subject {text!r}: {piece.strip()!r}")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('""', '"')
            attributes.append(x509.NameAttribute(oid, value))
        rdns.append(x509.RelativeDistinguishedName(attributes))
    if not rdns:
        raise CertificateError(f"empty subject {text!r}")
    return x509.Name(list(reversed(rdns)))


def windows_name(name: x509.Name) -> str:
    """How .NET's X500DistinguishedName (Subject, Issuer) renders a name: reversed, ", "-separated."""
    rendered = []
    for rdn in reversed(name.rdns):
        parts = []
        for attribute in rdn:
            short = _SHORT_NAMES.get(attribute.oid, f"OID.{attribute.oid.dotted_string}")
            parts.append(f"{short}={_quote(str(attribute.value))}")
        rendered.append(" + ".join(parts))
    return ", ".join(rendered)


def dns_name_list(certificate: x509.Certificate) -> list[str]:
    """PowerShell's DnsNameList: the SAN DNS names, or the subject's CN when there are none."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if names:
        return names
    return [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)][:1]


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def issue_certificates(
    scenario: Scenario, now: datetime, out_dir: Path, *, key_cache: Path | None = None
) -> LabCertificates:
    """Issue every certificate the scenario names, per server where it is a template; write the CA to out_dir.

    `key_cache` holds the RSA key pool (pass the lab's cache dir, e.g. layout.cache_dir / "rsa-keys");
    by default it is ~/.cache/exchange-compliance/rsa-keys.
    """
    if now.tzinfo is None:
        raise CertificateError("now must be timezone-aware")
    keys = KeyPool(key_cache if key_cache is not None else default_key_cache())
    ca = _issue_ca(keys, now)
    ca_cert, ca_key = ca.certificate, keys.ca_key()

    shared = {
        spec.name: _issue(spec, now, keys, ca_cert, ca_key, label=spec.name)
        for spec in scenario.certificates.values()
        if not spec.is_template
    }
    per_server: dict[str, dict[str, IssuedCertificate]] = {}
    winrm: dict[str, IssuedCertificate] = {}
    templates = [spec for spec in scenario.certificates.values() if spec.is_template]
    for server in scenario.servers:
        per_server[server.name] = {
            spec.name: _issue(_instance(spec, server), now, keys, ca_cert, ca_key, label=f"{server.name}/{spec.name}")
            for spec in templates
        }
        winrm_spec = CertificateSpec(
            name=WINRM_CERT_NAME,
            subject=f"CN={server.fqdn}",
            sans=(server.fqdn,),
            issuer="lab-ca",
            valid_from_days=-1,
            valid_to_days=730,
        )
        winrm[server.name] = _issue(winrm_spec, now, keys, ca_cert, ca_key, label=f"{server.name}/winrm")

    auth = scenario.auth
    auth_names = None if auth.absent else (auth.current, auth.previous, auth.next)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CA_FILE).write_bytes(ca.pem)
    key_path = out_dir / CA_KEY_FILE
    key_path.write_bytes(ca.key_pem)
    key_path.chmod(0o600)
    return LabCertificates(ca=ca, shared=shared, per_server=per_server, winrm=winrm, auth_names=auth_names)


def _instance(spec: CertificateSpec, server: ServerSpec) -> CertificateSpec:
    """A template certificate as it exists on one server: {name} and {fqdn} filled in."""

    def fill(text: str) -> str:
        # str.replace, not str.format: a subject may legitimately hold other braces.
        return text.replace("{name}", server.name).replace("{fqdn}", server.fqdn)

    return replace(
        spec, subject=fill(spec.subject), sans=tuple(map(fill, spec.sans)), friendly_name=fill(spec.friendly_name)
    )


def _issue_ca(keys: KeyPool, now: datetime) -> IssuedCertificate:
    key = keys.ca_key()
    name = parse_subject(CA_SUBJECT)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_second(now - timedelta(days=3650)))
        .not_valid_after(_second(now + timedelta(days=3650)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    return IssuedCertificate("lab-ca", der, _key_pem(key), thumbprint(der), "Exchange Compliance Lab CA")


def _issue(
    spec: CertificateSpec,
    now: datetime,
    keys: KeyPool,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    label: str,
) -> IssuedCertificate:
    if spec.issuer not in ("self", "lab-ca"):
        raise CertificateError(f"certificate {spec.name!r}: issuer must be 'self' or 'lab-ca', not {spec.issuer!r}")
    key = keys.leaf_key(spec.key_size, label)
    name = parse_subject(spec.subject)
    not_before = _second(now + timedelta(days=spec.valid_from_days))
    not_after = _second(now + timedelta(days=spec.valid_to_days))
    if not_after <= not_before:
        raise CertificateError(f"certificate {spec.name!r}: valid_to_days must be after valid_from_days")
    self_signed = spec.issuer == "self"
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if self_signed else ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if spec.sans:
        sans = [x509.DNSName(san) for san in spec.sans]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not self_signed:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    cert = builder.sign(key if self_signed else ca_key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    return IssuedCertificate(spec.name, der, _key_pem(key), thumbprint(der), spec.friendly_name)


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _second(moment: datetime) -> datetime:
    # X.509 times have whole seconds; truncating here keeps what the probe reports equal to what is encoded.
    return moment.astimezone(UTC).replace(microsecond=0)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _quote(value: str) -> str:
    # .NET quotes a value holding a separator or leading/trailing blanks, doubling embedded quotes.
    if value != value.strip() or any(c in value for c in ',+=<>#;"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value
