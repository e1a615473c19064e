"""Certificate rules, judged from the DER bytes the probe read, never from the strings Windows printed.

Windows renders subjects, dates and name lists in the server's locale and time zone; the DER is the
certificate itself. Everything here is pure: `now` is always a parameter.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from ..facts import ServerProbe, StoreCertificate, Unavailable
from ..names import normalize_thumbprint
from .memo import IdentityCache, by_value
from .verdict import FactUnavailable


class CertificateError(ValueError):
    """Bytes that are not a parseable X.509 certificate."""


def utc(moment: datetime) -> datetime:
    """Aware UTC. A naive datetime is taken as UTC: X.509, AD generalized time and the probe all speak UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def thumbprint_of(der: bytes) -> str:
    """The SHA-1 thumbprint Windows shows: a hash of the DER, so it needs no parsing."""
    return hashlib.sha1(der).hexdigest().upper()


def format_age(delta: timedelta) -> str:
    """`timedelta` as whole days for evidence, without hiding that the last day is partial."""
    delta = abs(delta)
    if delta < timedelta(days=1):
        return "less than a day"
    days = delta.days
    return f"{days} day" if days == 1 else f"{days} days"


def format_time(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d %H:%M:%SZ")


# --- host names (RFC 6125) ---------------------------------------------------------------------------


def _normalize_name(name: str) -> str:
    # DNS names compare case-insensitively and a trailing dot (absolute form) means the same name.
    name = name.strip().rstrip(".").lower()
    try:
        # A U-label reference name compares with the A-label the certificate must carry.
        return name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        return name


def dns_name_matches(pattern: str, host: str) -> bool:
    """Does a certificate's DNS name `pattern` cover the reference name `host` (RFC 6125 §6.4)?

    A wildcard counts only as the whole left-most label (`*.lab.contoso.test`, not `ex*.lab...` nor
    `a.*.test`), stands for exactly one non-empty label, and is refused over names of two labels (`*.com`,
    `*.local`): without a public-suffix list that is the cheap guard against a certificate claiming a whole TLD.
    """
    pattern, host = _normalize_name(pattern), _normalize_name(host)
    if not pattern or not host or "" in host.split("."):
        return False
    if "*" not in pattern:
        return pattern == host
    try:
        ipaddress.ip_address(host)
        return False  # a wildcard never stands for part of an IP address
    except ValueError:
        pass
    labels = pattern.split(".")
    if labels[0] != "*" or any("*" in label for label in labels[1:]) or len(labels) < 3:
        return False
    host_labels = host.split(".")
    return len(host_labels) == len(labels) and host_labels[1:] == labels[1:]


# --- the parsed certificate --------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    """What the judges need from one certificate, parsed once from its DER (see `certificate_info`)."""

    thumbprint: str
    subject: str
    issuer: str
    common_name: str | None
    dns_names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    self_signed: bool

    @property
    def reference_names(self) -> tuple[str, ...]:
        """The names host matching uses. The subject CN counts only when there are no SAN DNS names: that is
        RFC 6125 §6.4.4 and what Windows does (CertVerifyCertificateChainPolicy with the SSL policy, used by
        Schannel and .NET, which Exchange's proxy is), so a CN the SANs leave out would fail on the server."""
        if self.dns_names:
            return self.dns_names
        return (self.common_name,) if self.common_name else ()

    def matching_name(self, host: str) -> str | None:
        """The certificate name that covers `host`, or None."""
        return next((name for name in self.reference_names if dns_name_matches(name, host)), None)

    def matches_host(self, host: str) -> bool:
        return self.matching_name(host) is not None

    # Validity per RFC 5280 §4.1.2.5: both ends inclusive, so a certificate is still valid at its NotAfter
    # second and expired one second later.
    def is_expired(self, now: datetime) -> bool:
        return utc(now) > self.not_after

    def is_not_yet_valid(self, now: datetime) -> bool:
        return utc(now) < self.not_before

    def is_valid_at(self, now: datetime) -> bool:
        return not self.is_expired(now) and not self.is_not_yet_valid(now)

    def time_left(self, now: datetime) -> timedelta:
        """Until NotAfter; negative once expired. Compare this, not rounded days, against thresholds."""
        return self.not_after - utc(now)

    def days_left(self, now: datetime) -> int:
        """Whole days left (floor): 0 on the last day, -1 from the first second after expiry."""
        return self.time_left(now).days

    def validity(self, now: datetime) -> str:
        if self.is_expired(now):
            return f"expired {format_age(self.time_left(now))} ago ({format_time(self.not_after)})"
        if self.is_not_yet_valid(now):
            return f"not valid until {format_time(self.not_before)}"
        return f"valid, {format_age(self.time_left(now))} left"

    def describe(self) -> str:
        """One line for evidence: subject, SANs, issuer, NotAfter, thumbprint."""
        sans = ", ".join(self.dns_names) if self.dns_names else "none"
        issuer = "self-signed" if self.self_signed else self.issuer
        return (
            f"subject {self.subject or '(empty)'}; SANs {sans}; issuer {issuer}; "
            f"NotAfter {format_time(self.not_after)}; thumbprint {self.thumbprint}"
        )


def _self_signed(certificate: x509.Certificate) -> bool:
    # Issuer == subject alone is only a claim; the signature must also verify with the certificate's own key.
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


@by_value(limit=2048)
def certificate_info(der: bytes) -> CertificateInfo:
    """Parse DER once: the same certificate sits in several stores and is looked at by several judges."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            dns_names = ()
        common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return CertificateInfo(
            thumbprint=thumbprint_of(der),
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            # The last CN is the most specific one in DER order.
            common_name=_text(common_names[-1].value) if common_names else None,
            dns_names=dns_names,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            self_signed=_self_signed(certificate),
        )
    except ValueError as exc:  # cryptography reports malformed DER and extensions as ValueError
        raise CertificateError(f"not a parseable certificate ({len(der)} bytes): {exc}") from exc


# --- facts: availability and store lookups -----------------------------------------------------------


def _thumbprint_index(probe: ServerProbe) -> dict[str, StoreCertificate]:
    index: dict[str, StoreCertificate] = {}
    for cert in probe.certificates:
        index.setdefault(thumbprint_of(cert.der), cert)  # the first, as a scan of the store would find
    return index


# Thumbprint -> store entry, per probe: each store is hashed once, however many judges and servers look into it
# (AUTH-02 and AUTH-04 look into every server's store for every server).
_store_index: IdentityCache[ServerProbe, dict[str, StoreCertificate]] = IdentityCache(_thumbprint_index)


def find_in_store(probe: ServerProbe, thumbprint: str | None) -> StoreCertificate | None:
    """The store entry whose DER hashes to `thumbprint` (compared case- and space-insensitively)."""
    wanted = normalize_thumbprint(thumbprint)
    if wanted is None:
        return None
    return _store_index(probe).get(wanted)


def store_info(certificate: StoreCertificate, server: str) -> CertificateInfo:
    """Parse a store entry; a DER that does not parse is a collection fault, not a verdict on the server."""
    try:
        return certificate_info(certificate.der)
    except CertificateError as exc:
        raise FactUnavailable(f"certificate {certificate.thumbprint} in {server}'s store: {exc}") from exc


def servers_holding(
    probes: Iterable[tuple[str, ServerProbe | Unavailable]], thumbprint: str
) -> tuple[list[str], list[str], list[str]]:
    """For one thumbprint over many servers: (with private key, without private key, not probed), each sorted by
    name."""
    with_key: list[str] = []
    without_key: list[str] = []
    unknown: list[str] = []
    for name, probe in probes:
        if isinstance(probe, Unavailable):
            unknown.append(name)
            continue
        found = find_in_store(probe, thumbprint)
        if found is not None:
            (with_key if found.has_private_key else without_key).append(name)
    return _by_name(with_key), _by_name(without_key), _by_name(unknown)


def _by_name(names: list[str]) -> list[str]:
    return sorted(names, key=str.lower)
