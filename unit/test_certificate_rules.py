"""Certificate rules from DER: validity boundaries, RFC 6125 host names, self-signed, thumbprints.

The certificates and facts come from the factories the judge tests share (unit/factories.py).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from factories import NOW, make_cert, probe, store_cert, thumb, unavailable

from exchange_compliance.facts import StoreCertificate
from exchange_compliance.judge import certificates
from exchange_compliance.judge.certificates import (
    CertificateError,
    certificate_info,
    dns_name_matches,
    find_in_store,
    thumbprint_of,
)
from exchange_compliance.judge.verdict import FactUnavailable, available

# --- parsing -----------------------------------------------------------------------------------------


def test_info_is_parsed_from_der():
    der = make_cert("ex01", ("ex01", "ex01.lab.contoso.test"))
    info = certificate_info(der)
    assert info.thumbprint == hashlib.sha1(der).hexdigest().upper() == thumbprint_of(der)
    assert info.subject == "CN=ex01"
    assert info.common_name == "ex01"
    assert info.dns_names == ("ex01", "ex01.lab.contoso.test")
    assert info.self_signed
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


def test_ec_certificate_is_parsed_and_its_self_signature_verified():
    info = certificate_info(make_cert(ec_key=True))
    assert info.self_signed and info.dns_names == ("ex01", "ex01.lab.contoso.test")


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


def test_each_store_is_hashed_once(monkeypatch):
    entries = [store_cert(make_cert(f"ex0{i}", None)) for i in range(3)]
    facts = probe(*entries)
    hashed = []
    monkeypatch.setattr(certificates, "thumbprint_of", lambda der: hashed.append(der) or thumb(der))
    for _ in range(5):
        for entry in entries:
            assert find_in_store(facts, thumb(entry.der)) is entry
        assert find_in_store(facts, "00" * 20) is None
    assert len(hashed) == 3  # once per certificate, not once per lookup
    other = probe(*entries)  # another probe (another server's store) has its own index
    assert find_in_store(other, thumb(entries[0].der)) is entries[0] and len(hashed) == 6


def test_available_passes_facts_and_raises_for_unavailable():
    facts = probe()
    assert available(facts) is facts
    with pytest.raises(FactUnavailable, match=r"EX02.*connection refused"):
        available(unavailable("EX02"))
