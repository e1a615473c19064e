"""BE-01..03 and GATE-01: the Exchange Back End site on 444 and expired IIS certificates, from DER."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from factories import (
    HOSTILE,
    IIS_APPID,
    NOW,
    exchange_self_signed,
    make_cert,
    probe,
    runnable_text,
    server,
    store_cert,
    thumb,
    unavailable,
)

from exchange_compliance.facts import Handshake, ServerProbe, SiteBinding, SslCertBinding, StoreCertificate, Unavailable
from exchange_compliance.judge.backend import (
    backend_binding_exists,
    backend_certificate_valid,
    backend_presents_valid_certificate,
    iis_certificates_not_expired,
)
from exchange_compliance.judge.powershell import literal
from exchange_compliance.judge.verdict import FactUnavailable

EX01 = server("EX01")
SELF = exchange_self_signed("ex01")
SELF_ENTRY = store_cert(SELF, friendly_name="Microsoft Exchange")
NO_TLS = Unavailable("tls handshake", "EX01", "timed out")
THIRD = make_cert("mail.contoso.com", ("mail.contoso.com", "autodiscover.contoso.com"), issuer_cn="Lab CA")
THIRD_ENTRY = store_cert(THIRD, friendly_name="mail")


def exchange_entry(der: bytes) -> StoreCertificate:
    return store_cert(der, friendly_name="Microsoft Exchange")


def handshake(der: bytes) -> Handshake:
    return Handshake("ex01.lab.contoso.test", "127.0.10.1", 444, der, "TLSv1.2")


# --- BE-01 -------------------------------------------------------------------------------------------


def test_be01_passes_with_https_on_444():
    verdict = backend_binding_exists(EX01, probe(SELF_ENTRY, backend=thumb(SELF)))
    assert verdict.met
    assert "*:444:" in verdict.evidence


def test_be01_fails_without_it_and_binds_the_self_signed_certificate():
    verdict = backend_binding_exists(EX01, probe(SELF_ENTRY, backend_binding=False))
    assert not verdict.met
    assert "http *:81:" in verdict.evidence
    fix = verdict.fix
    assert "New-WebBinding -Name 'Exchange Back End' -Protocol https -Port 444" in fix
    assert f".AddSslCertificate('{thumb(SELF)}', 'My')" in fix
    assert fix.rstrip().endswith("iisreset")


@pytest.mark.parametrize("roles", [("ClientAccess",), ("Edge",)])
def test_be_rows_are_not_applicable_without_the_mailbox_role(roles):
    other = server("EX09", roles=roles)
    assert not backend_binding_exists(other, unavailable("EX09")).applicable
    assert not backend_certificate_valid(other, unavailable("EX09"), NOW).applicable
    assert not backend_presents_valid_certificate(other, unavailable("EX09"), unavailable("EX09"), NOW).applicable


def test_be01_unavailable_probe_is_an_error():
    with pytest.raises(FactUnavailable):
        backend_binding_exists(EX01, unavailable("EX01"))


# --- BE-02 -------------------------------------------------------------------------------------------


def test_be02_passes_with_the_self_signed_certificate():
    verdict = backend_certificate_valid(EX01, probe(SELF_ENTRY, backend=thumb(SELF)), NOW)
    assert verdict.met
    assert "checked ex01, ex01.lab.contoso.test: ex01 matched by ex01" in verdict.evidence


def test_be02_certificate_naming_only_the_fqdn_passes():
    fqdn_only = make_cert("ex01.lab.contoso.test", ("ex01.lab.contoso.test",), issuer_cn="Lab CA")
    verdict = backend_certificate_valid(EX01, probe(store_cert(fqdn_only), backend=thumb(fqdn_only)), NOW)
    assert verdict.met
    assert "ex01.lab.contoso.test matched" in verdict.evidence


def test_be02_wildcard_covering_the_fqdn_passes():
    wildcard = make_cert("*.lab.contoso.test", ("*.lab.contoso.test",), issuer_cn="Lab CA")
    assert backend_certificate_valid(EX01, probe(store_cert(wildcard), backend=thumb(wildcard)), NOW).met


def test_be02_wildcard_of_another_domain_fails():
    wildcard = make_cert("*.contoso.com", ("*.contoso.com",), issuer_cn="Lab CA")
    facts = probe(SELF_ENTRY, store_cert(wildcard), backend=thumb(wildcard))
    verdict = backend_certificate_valid(EX01, facts, NOW)
    assert not verdict.met
    assert "names neither the host name nor the FQDN" in verdict.evidence


def test_be02_third_party_certificate_without_the_host_fails_with_evidence_and_fix():
    facts = probe(SELF_ENTRY, THIRD_ENTRY, backend=thumb(THIRD))
    verdict = backend_certificate_valid(EX01, facts, NOW)
    assert not verdict.met
    for part in ("*:444:", "http.sys 0.0.0.0:444", thumb(THIRD), "subject CN=mail.contoso.com", "issuer CN=Lab CA"):
        assert part in verdict.evidence
    assert "SANs mail.contoso.com, autodiscover.contoso.com" in verdict.evidence
    assert "checked ex01, ex01.lab.contoso.test: none matched" in verdict.evidence
    assert (
        f"netsh http update sslcert ipport=0.0.0.0:444 certhash={thumb(SELF)} appid='{IIS_APPID}' certstorename=MY"
        in verdict.fix
    )
    assert "iisreset" in verdict.fix
    assert verdict.details["bound_thumbprint"] == thumb(THIRD)


def test_be02_expired_one_second_ago_fails():
    expired = exchange_self_signed("ex01", not_after=NOW - timedelta(seconds=1))
    fresh = exchange_self_signed("ex01", not_after=NOW + timedelta(days=900), serial=77)
    facts = probe(exchange_entry(expired), exchange_entry(fresh), backend=thumb(expired))
    verdict = backend_certificate_valid(EX01, facts, NOW)
    assert not verdict.met
    assert "expired less than a day ago" in verdict.evidence
    assert f"certhash={thumb(fresh)}" in verdict.fix  # the valid self-signed one, not the expired one


def test_be02_not_yet_valid_fails():
    future = exchange_self_signed("ex01", not_before=NOW + timedelta(seconds=1))
    verdict = backend_certificate_valid(EX01, probe(exchange_entry(future), backend=thumb(future)), NOW)
    assert not verdict.met
    assert "not valid until" in verdict.evidence
    assert "New-ExchangeCertificate -Server EX01" in verdict.fix  # no usable self-signed certificate: create one


def test_be02_bound_certificate_missing_from_the_store_fails():
    verdict = backend_certificate_valid(EX01, probe(SELF_ENTRY, backend="AB" * 20), NOW)
    assert not verdict.met
    assert "is not in EX01's LocalMachine\\My" in verdict.evidence


def test_be02_nothing_bound_fails():
    verdict = backend_certificate_valid(EX01, probe(SELF_ENTRY, backend=None), NOW)
    assert not verdict.met
    assert "No certificate is bound to 444" in verdict.evidence
    assert ".AddSslCertificate(" in verdict.fix


def test_be02_says_when_iis_and_http_sys_disagree():
    facts = probe(SELF_ENTRY, THIRD_ENTRY, backend=thumb(THIRD), netsh_backend=thumb(SELF))
    verdict = backend_certificate_valid(EX01, facts, NOW)
    assert verdict.met  # http.sys serves the self-signed one
    assert f"they disagree (IIS {thumb(THIRD)}, http.sys {thumb(SELF)})" in verdict.evidence


def test_be02_bound_thumbprint_compares_case_and_space_insensitively():
    spaced = " ".join(thumb(SELF).lower()[i : i + 2] for i in range(0, 40, 2))
    assert backend_certificate_valid(EX01, probe(SELF_ENTRY, backend=spaced), NOW).met


def in_store(facts: ServerProbe, store: str | None, *, iis: bool = True, netsh: bool = True) -> ServerProbe:
    """The probe with the 444 bindings naming `store` (in IIS, in http.sys or both)."""
    return replace(
        facts,
        bindings=tuple(replace(b, certificate_store=store) if iis and b.port == 444 else b for b in facts.bindings),
        ssl_bindings=tuple(
            replace(b, store_name=store) if netsh and b.ip_port.endswith(":444") else b for b in facts.ssl_bindings
        ),
    )


@pytest.mark.parametrize("where", [{"iis": False}, {"netsh": False}])
def test_be02_certificate_bound_from_another_store_cannot_be_checked(where):
    # The probe reads LocalMachine\My only: a binding from WebHosting is not "missing from the store", it is unseen.
    facts = in_store(probe(SELF_ENTRY, backend="AB" * 20), "WebHosting", **where)
    if where == {"netsh": False}:
        facts = replace(facts, ssl_bindings=())  # IIS's binding is judged only without an http.sys one
    with pytest.raises(FactUnavailable, match=r"names (AB){20} in LocalMachine\\WebHosting; the probe reads only"):
        backend_certificate_valid(EX01, facts, NOW)


@pytest.mark.parametrize("store", ["MY", "my", "(null)", None])
def test_be02_my_spelled_any_way_or_unnamed_is_judged(store):
    assert backend_certificate_valid(EX01, in_store(probe(SELF_ENTRY, backend=thumb(SELF)), store), NOW).met


def test_be02_builds_its_fix_only_when_it_fails(monkeypatch):
    def not_needed(*_args):
        raise AssertionError("a fix built for a passing row")

    monkeypatch.setattr("exchange_compliance.judge.backend.bind_backend_fix", not_needed)
    assert backend_certificate_valid(EX01, probe(SELF_ENTRY, backend=thumb(SELF)), NOW).met


# --- BE-03 -------------------------------------------------------------------------------------------


def test_be03_passes_when_the_bound_certificate_is_presented():
    verdict = backend_presents_valid_certificate(EX01, probe(SELF_ENTRY, backend=thumb(SELF)), handshake(SELF), NOW)
    assert verdict.met


def test_be03_presented_differs_from_bound_fails_with_both_thumbprints():
    facts = probe(SELF_ENTRY, THIRD_ENTRY, backend=thumb(SELF))
    verdict = backend_presents_valid_certificate(EX01, facts, handshake(THIRD), NOW)
    assert not verdict.met
    assert f"presented {thumb(THIRD)}, bound {thumb(SELF)}" in verdict.evidence
    assert "middle box" in verdict.evidence
    assert "iisreset" in verdict.fix and "load balancer" in verdict.fix


def test_be03_presented_valid_but_other_than_bound_fails():
    # Even a presented certificate valid for the FQDN fails when it is not the bound one.
    other = exchange_self_signed("ex01", serial=99, key="other")
    facts = probe(SELF_ENTRY, backend=thumb(SELF))
    verdict = backend_presents_valid_certificate(EX01, facts, handshake(other), NOW)
    assert not verdict.met
    assert verdict.details == {"presented": thumb(other), "bound": thumb(SELF), "fqdn": "ex01.lab.contoso.test"}


def test_be03_presented_expired_fails_and_rebinds():
    expired = exchange_self_signed("ex01", not_after=NOW - timedelta(days=2), serial=5)
    facts = probe(exchange_entry(expired), SELF_ENTRY, backend=thumb(expired))
    verdict = backend_presents_valid_certificate(EX01, facts, handshake(expired), NOW)
    assert not verdict.met
    assert "expired 2 days ago" in verdict.evidence
    assert f"certhash={thumb(SELF)}" in verdict.fix


def test_be03_unavailable_handshake_is_an_error():
    with pytest.raises(FactUnavailable, match="EX01: timed out"):
        backend_presents_valid_certificate(EX01, probe(SELF_ENTRY, backend=thumb(SELF)), NO_TLS, NOW)


# --- GATE-01 -----------------------------------------------------------------------------------------


def test_gate01_passes_with_valid_certificates():
    facts = probe(SELF_ENTRY, THIRD_ENTRY, backend=thumb(SELF), frontend=thumb(THIRD))
    verdict = iis_certificates_not_expired(EX01, facts, NOW)
    assert verdict.met
    assert thumb(SELF) in verdict.evidence and thumb(THIRD) in verdict.evidence


def test_gate01_expired_443_certificate_fails_and_enables_its_renewal():
    old = make_cert("mail.contoso.com", ("mail.contoso.com",), issuer_cn="Lab CA", not_after=NOW - timedelta(days=1))
    renewed = make_cert("mail.contoso.com", ("mail.contoso.com", "autodiscover.contoso.com"), issuer_cn="Lab CA")
    facts = probe(SELF_ENTRY, store_cert(old), store_cert(renewed), backend=thumb(SELF), frontend=thumb(old))
    verdict = iis_certificates_not_expired(EX01, facts, NOW)
    assert not verdict.met
    assert "IIS 'Default Web Site' https *:443:" in verdict.evidence and "http.sys 0.0.0.0:443" in verdict.evidence
    assert f"{thumb(old)}, expired: subject CN=mail.contoso.com" in verdict.evidence
    assert f"Enable-ExchangeCertificate -Server EX01 -Thumbprint {thumb(renewed)} -Services IIS" in verdict.fix
    assert "before running setup" in verdict.fix


def test_gate01_expired_444_certificate_fails_and_rebinds():
    expired = exchange_self_signed("ex01", not_after=NOW - timedelta(seconds=1), serial=3)
    facts = probe(exchange_entry(expired), SELF_ENTRY, backend=thumb(expired))
    verdict = iis_certificates_not_expired(EX01, facts, NOW)
    assert not verdict.met
    assert f"certhash={thumb(SELF)}" in verdict.fix


def test_gate01_certificate_missing_from_the_store_fails():
    verdict = iis_certificates_not_expired(EX01, probe(SELF_ENTRY, backend=thumb(SELF), frontend="CD" * 20), NOW)
    assert not verdict.met
    assert "not in LocalMachine\\My" in verdict.evidence


def test_gate01_certificate_bound_from_another_store_cannot_be_checked():
    facts = probe(SELF_ENTRY, backend=thumb(SELF), frontend=thumb(THIRD))  # THIRD is not in My
    facts = replace(
        facts,
        bindings=tuple(replace(b, certificate_store="WebHosting") if b.port == 443 else b for b in facts.bindings),
        ssl_bindings=tuple(
            replace(b, store_name="WebHosting") if ":443" in b.ip_port else b for b in facts.ssl_bindings
        ),
    )
    with pytest.raises(FactUnavailable, match=rf"{thumb(THIRD)} in LocalMachine\\WebHosting"):
        iis_certificates_not_expired(EX01, facts, NOW)
    # Something else failing still fails the row, which also names what it could not check.
    expired = exchange_self_signed("ex01", not_after=NOW - timedelta(seconds=1), serial=3)
    facts = replace(facts, certificates=(exchange_entry(expired), SELF_ENTRY))
    facts = replace(
        facts,
        bindings=tuple(replace(b, certificate_hash=thumb(expired)) if b.port == 444 else b for b in facts.bindings),
        ssl_bindings=tuple(
            replace(b, certificate_hash=thumb(expired)) if ":444" in b.ip_port else b for b in facts.ssl_bindings
        ),
    )
    verdict = iis_certificates_not_expired(EX01, facts, NOW)
    assert not verdict.met and f"{thumb(expired)}, expired" in verdict.evidence
    assert (
        f"could not be checked: IIS 'Default Web Site' https *:443:, http.sys 0.0.0.0:443 on EX01 names {thumb(THIRD)}"
        in (verdict.evidence)
    )


def test_gate01_edge_is_not_applicable():
    assert not iis_certificates_not_expired(server("EDGE01", roles=("Edge",)), unavailable("EDGE01"), NOW).applicable


# --- hostile names in fixes --------------------------------------------------------------------------

# A server object named with code, and an FQDN whose host label would land in -SubjectName and -DomainName.
HOSTILE_EX01 = replace(EX01, name=f"EX01\n{HOSTILE}", fqdn="ex01$(calc).lab.contoso.test")


def test_be02_create_fix_keeps_hostile_names_inert():
    future = exchange_self_signed("ex01", not_before=NOW + timedelta(seconds=1))
    facts = probe(exchange_entry(future), backend=thumb(future))
    tampered = "{4dc3e181-e14b-4a21-b022-59fc669b0914}' certstorename=MY; Remove-Item C:\\ -Recurse; '"
    facts = replace(facts, ssl_bindings=tuple(replace(b, application_id=tampered) for b in facts.ssl_bindings))
    fix = backend_certificate_valid(HOSTILE_EX01, facts, NOW).fix
    lines = fix.splitlines()
    assert lines[0] == f"# On EX01<U+000A>{HOSTILE} (ex01$(calc).lab.contoso.test), elevated PowerShell:"
    assert (
        f"$cert = New-ExchangeCertificate -Server ('EX01' + [char]0x000A + {literal(HOSTILE)}) "
        "-SubjectName 'CN=ex01$(calc)' -DomainName 'ex01$(calc)','ex01$(calc).lab.contoso.test' "
        '-FriendlyName "Microsoft Exchange" -KeySize 2048'
    ) in lines
    # An application ID that is not a GUID is not passed on: IIS's is used, and the comment says why.
    assert f"# http.sys reported application ID {tampered}, not a GUID: IIS's is used instead" in lines
    assert (
        f"netsh http update sslcert ipport=0.0.0.0:444 certhash=$($cert.Thumbprint) appid='{IIS_APPID}' "
        "certstorename=MY"
    ) in lines
    runnable = runnable_text(fix)
    assert HOSTILE not in runnable and "$(calc)" not in runnable and "Remove-Item" not in runnable


def test_be01_certificate_subject_cannot_start_a_command_line():
    # Whoever made the certificate chose its subject; the fix names it in a comment.
    forged = make_cert("ex01\nRemove-Item C:\\ -Recurse", ("ex01", "ex01.lab.contoso.test"))
    fix = backend_binding_exists(EX01, probe(exchange_entry(forged), backend_binding=False)).fix
    assert '# the self-signed "Microsoft Exchange" certificate: subject CN=ex01<U+000A>Remove-Item C:' in fix
    assert "Remove-Item" not in runnable_text(fix)
    assert f".AddSslCertificate('{thumb(forged)}', 'My')" in fix


def test_gate01_fixes_keep_hostile_names_inert():
    old = make_cert("mail.contoso.com", ("mail.contoso.com",), issuer_cn="Lab CA", not_after=NOW - timedelta(days=1))
    renewed = make_cert("mail.contoso.com", ("mail.contoso.com", "autodiscover.contoso.com"), issuer_cn="Lab CA")
    facts = probe(SELF_ENTRY, store_cert(old), store_cert(renewed), backend=thumb(SELF), frontend=thumb(old))
    fix = iis_certificates_not_expired(HOSTILE_EX01, facts, NOW).fix
    server = f"('EX01' + [char]0x000A + {literal(HOSTILE)})"
    assert f"Enable-ExchangeCertificate -Server {server} -Thumbprint {thumb(renewed)} -Services IIS -Force" in fix
    assert HOSTILE not in runnable_text(fix)
    # Nothing valid for 443 in the store: a new self-signed certificate, as quoted.
    fix = iis_certificates_not_expired(HOSTILE_EX01, probe(store_cert(old), frontend=thumb(old)), NOW).fix
    assert f"# No valid certificate for 443 in EX01<U+000A>{HOSTILE}'s store" in fix
    assert (
        f"New-ExchangeCertificate -Server {server} -SubjectName 'CN=ex01$(calc)' -DomainName "
        "'ex01$(calc)','ex01$(calc).lab.contoso.test' -FriendlyName \"Microsoft Exchange\" -Services IIS"
    ) in fix
    assert HOSTILE not in runnable_text(fix) and "$(calc)" not in runnable_text(fix)


def test_gate01_expired_certificate_on_an_sni_binding_is_rebound_there():
    """A host-name (SNI) binding on 443 is its own http.sys entry: its fix updates that entry, with its app ID."""
    old = make_cert("mail.contoso.com", ("mail.contoso.com",), issuer_cn="Lab CA", not_after=NOW - timedelta(days=1))
    renewed = make_cert("mail.contoso.com", ("mail.contoso.com",), issuer_cn="Lab CA")
    facts = probe(SELF_ENTRY, store_cert(old), store_cert(renewed), backend=thumb(SELF), frontend=thumb(renewed))
    app = "{12345678-1234-1234-1234-123456789abc}"
    site = SiteBinding("Default Web Site", "https", "*:443:mail.contoso.com", thumb(old), "My")
    sni = SslCertBinding("mail.contoso.com:443", thumb(old), app, "MY", kind="hostnameport")
    facts = replace(facts, bindings=(*facts.bindings, site), ssl_bindings=(*facts.ssl_bindings, sni))
    verdict = iis_certificates_not_expired(EX01, facts, NOW)
    assert not verdict.met
    assert f"http.sys mail.contoso.com:443 → {thumb(old)}, expired" in verdict.evidence
    assert (
        f"netsh http update sslcert \"hostnameport=mail.contoso.com:443\" certhash={thumb(renewed)} appid='{app}' "
        "certstorename=MY" in verdict.fix
    )
    assert verdict.fix.count("netsh http update sslcert") == 1  # the IIS binding and http.sys's entry are one
    # *:443 itself is fine: nothing rebinds it.
    assert "Enable-ExchangeCertificate" not in verdict.fix
