"""AUTH-01..04 and GATE-02: the Auth certificate, judged from AuthConfig in AD and the DER in each store."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from factories import (
    HOSTILE,
    NOW,
    auth_config,
    directory,
    make_cert,
    probe,
    runnable_text,
    server,
    store_cert,
    thumb,
    unavailable,
)

from exchange_compliance.facts import Version
from exchange_compliance.judge.auth import (
    auth_certificate_configured,
    auth_certificate_not_expired,
    auth_certificate_on_server,
    auth_certificate_renewal,
)
from exchange_compliance.judge.cu_gate import cu_target_gate, cu_target_supported
from exchange_compliance.judge.powershell import literal
from exchange_compliance.judge.verdict import FactUnavailable, Verdict
from exchange_compliance.names import dns_domain_of

AUTH_CN = "Microsoft Exchange Server Auth Certificate"


def auth_der(days_left: float = 1000) -> bytes:
    return make_cert(AUTH_CN, None, not_before=NOW - timedelta(days=365), not_after=NOW + timedelta(days=days_left))


AUTH = auth_der()
EX01, EX02, EX03 = server("EX01"), server("EX02"), server("EX03")
EDGE = server("EDGE01", roles=("Edge",))


def org(current: str | None = thumb(AUTH), **kwargs: object):
    return directory((EX01, EX02, EX03, EDGE), auth_config(current, **kwargs))  # type: ignore[arg-type]


def spaced_lower(thumbprint: str) -> str:
    return " ".join(thumbprint.lower()[i : i + 4] for i in range(0, 40, 4))


# --- AUTH-01 -----------------------------------------------------------------------------------------


def test_dns_domain_from_dn():
    assert dns_domain_of("DC=lab,DC=contoso,DC=test") == "lab.contoso.test"
    assert dns_domain_of("OU=x,DC=corp, DC=example") == "corp.example"
    assert dns_domain_of("OU=Sales\\, DC=x,DC=corp,DC=example") == "corp.example"  # an escaped comma is no RDN


def test_auth01_passes_with_a_current_thumbprint():
    verdict = auth_certificate_configured(org())
    assert verdict.met
    assert thumb(AUTH) in verdict.evidence


def test_auth01_fails_without_the_auth_configuration_object():
    verdict = auth_certificate_configured(directory((EX01,), None))
    assert not verdict.met
    assert "CN=Auth Configuration,CN=Contoso" in verdict.evidence
    fix = verdict.fix
    assert 'New-ExchangeCertificate -KeySize 2048 -PrivateKeyExportable $true -SubjectName "cn=' + AUTH_CN in fix
    assert '-DomainName "lab.contoso.test"' in fix
    assert "AD domain (DC=lab,DC=contoso,DC=test)" in fix
    assert "SMTP domain" not in fix and "if it differs" not in fix  # nothing left to edit by hand
    assert "Set-AuthConfig -NewCertificateThumbprint $cert.Thumbprint -NewCertificateEffectiveDate (Get-Date)" in fix
    assert "Set-AuthConfig -PublishCertificate" in fix and "Set-AuthConfig -ClearPreviousCertificate" in fix
    assert "Restart-Service MSExchangeServiceHost" in fix and "Restart-WebAppPool MSExchangeECPAppPool" in fix
    assert "ex01.lab.contoso.test" in fix and "edge01" not in fix  # restart where the Auth certificate lives


def test_auth01_builds_its_fix_only_when_it_fails(monkeypatch):
    def not_needed(*_args, **_kwargs):
        raise AssertionError("a fix built for a passing row")

    monkeypatch.setattr("exchange_compliance.judge.auth.create_and_publish_fix", not_needed)
    assert auth_certificate_configured(org()).met
    own = probe(store_cert(AUTH))
    assert auth_certificate_on_server(org(), EX01, own, {"EX01": own}).met


def test_auth01_fails_with_no_current_thumbprint_and_shows_the_values():
    verdict = auth_certificate_configured(org(None, next_="AB" * 20))
    assert not verdict.met
    assert "CurrentCertificateThumbprint (none)" in verdict.evidence
    assert "NextCertificateThumbprint " + "AB" * 20 in verdict.evidence


def test_auth01_fails_on_a_malformed_thumbprint():
    assert not auth_certificate_configured(org("not-a-thumbprint")).met


# --- AUTH-02 -----------------------------------------------------------------------------------------


def test_auth02_passes_with_the_certificate_and_its_key():
    own = probe(store_cert(AUTH))
    assert auth_certificate_on_server(org(), EX01, own, {"EX01": own}).met


def test_auth02_thumbprints_compare_case_and_space_insensitively():
    own = probe(store_cert(AUTH))
    assert auth_certificate_on_server(org(spaced_lower(thumb(AUTH))), EX01, own, {"EX01": own}).met


def test_auth02_missing_copies_from_a_server_that_has_it():
    lacking = probe()
    probes = {"EX01": probe(store_cert(AUTH)), "EX02": unavailable("EX02"), "EX03": lacking}
    verdict = auth_certificate_on_server(org(), EX03, lacking, probes)
    assert not verdict.met
    assert thumb(AUTH) in verdict.evidence
    assert "with it and its private key: EX01" in verdict.evidence and "not probed: EX02" in verdict.evidence
    assert f"Export-ExchangeCertificate -Server EX01 -Thumbprint {thumb(AUTH)} -BinaryEncoded" in verdict.fix
    assert "Import-ExchangeCertificate -Server EX03 -FileData $pfx.FileData" in verdict.fix
    assert "Remove-ExchangeCertificate" not in verdict.fix
    assert "Invoke-Command -ComputerName ex03.lab.contoso.test" in verdict.fix
    assert "Restart-WebAppPool MSExchangeOWAAppPool" in verdict.fix


def test_auth02_without_private_key_is_replaced_by_a_copy_with_it():
    keyless = probe(store_cert(AUTH, private_key=False))
    probes = {"EX01": probe(store_cert(AUTH)), "EX03": keyless}
    verdict = auth_certificate_on_server(org(), EX03, keyless, probes)
    assert not verdict.met
    assert "without its private key" in verdict.evidence
    remove = f"Remove-ExchangeCertificate -Server EX03 -Thumbprint {thumb(AUTH)}"
    assert verdict.fix.index(remove) < verdict.fix.index("Import-ExchangeCertificate -Server EX03")


def test_auth02_nobody_has_it_gives_create_and_publish():
    lacking = probe()
    verdict = auth_certificate_on_server(org(), EX01, lacking, {"EX01": lacking, "EX02": probe()})
    assert not verdict.met
    assert "with it and its private key: none" in verdict.evidence
    assert "New-ExchangeCertificate" in verdict.fix and "Set-AuthConfig -PublishCertificate" in verdict.fix


def test_auth02_edge_is_not_applicable():
    verdict = auth_certificate_on_server(org(), EDGE, unavailable("EDGE01"), {})
    assert not verdict.applicable
    assert "Edge" in verdict.evidence


def test_auth02_unavailable_probe_is_an_error():
    with pytest.raises(FactUnavailable, match="EX01"):
        auth_certificate_on_server(org(), EX01, unavailable("EX01"), {})


# --- AUTH-03 -----------------------------------------------------------------------------------------


def test_auth03_passes_at_the_notafter_second():
    der = auth_der(days_left=0)
    probes = {"EX01": probe(store_cert(der))}
    assert auth_certificate_not_expired(org(thumb(der)), probes, NOW).met


def test_auth03_expired_one_second_ago_fails_with_evidence_and_seed_003_fix():
    der = auth_der(days_left=0)
    probes = {"EX01": unavailable("EX01"), "EX02": probe(store_cert(der)), "EX03": probe(store_cert(der))}
    verdict = auth_certificate_not_expired(org(thumb(der)), probes, NOW + timedelta(seconds=1), hybrid=True)
    assert not verdict.met
    for part in (thumb(der), f"CN={AUTH_CN}", "NotAfter 2025-06-01 12:00:00Z", "expired less than a day ago"):
        assert part in verdict.evidence
    assert verdict.details["days_since_expiry"] == 0
    assert "-DomainName @()" in verdict.fix
    assert f"Remove-ExchangeCertificate -Server EX02 -Thumbprint {thumb(der)}" in verdict.fix
    assert f"Remove-ExchangeCertificate -Server EX03 -Thumbprint {thumb(der)}" in verdict.fix
    assert "Hybrid Configuration Wizard" in verdict.fix


def test_auth03_days_since_expiry_and_no_hybrid_reminder_when_not_hybrid():
    der = auth_der(days_left=-5)
    verdict = auth_certificate_not_expired(org(thumb(der)), {"EX01": probe(store_cert(der))}, NOW)
    assert "expired 5 days ago" in verdict.evidence
    assert "Hybrid" not in verdict.fix


def test_auth03_certificate_in_no_store_cannot_be_judged():
    with pytest.raises(FactUnavailable, match="no probed server"):
        auth_certificate_not_expired(org(), {"EX01": probe(), "EX02": unavailable("EX02")}, NOW)


# --- AUTH-04 -----------------------------------------------------------------------------------------

SERVERS = (EX01, EX02, EX03, EDGE)


def test_auth04_passes_with_exactly_the_threshold_left():
    der = auth_der(days_left=60)
    verdict = auth_certificate_renewal(org(thumb(der)), SERVERS, {"EX01": probe(store_cert(der))}, NOW)
    assert verdict.met


def test_auth04_one_second_under_the_threshold_without_next_fails():
    der = auth_der(days_left=60)
    probes = {"EX01": probe(store_cert(der))}
    verdict = auth_certificate_renewal(org(thumb(der)), SERVERS, probes, NOW + timedelta(seconds=1))
    assert not verdict.met
    assert "no next certificate is staged" in verdict.evidence
    assert verdict.details["days_left"] == 59
    assert "-NewCertificateEffectiveDate (Get-Date).AddDays(30)" in verdict.fix


def test_auth04_threshold_is_a_parameter():
    der = auth_der(days_left=40)
    probes = {"EX01": probe(store_cert(der))}
    assert auth_certificate_renewal(org(thumb(der)), SERVERS, probes, NOW, warn_days=30).met
    assert not auth_certificate_renewal(org(thumb(der)), SERVERS, probes, NOW, warn_days=41).met


def _staged(next_der: bytes, effective_days: float, on: tuple[str, ...]):
    current = auth_der(days_left=20)
    probes = {
        name: probe(store_cert(current), *([store_cert(next_der)] if name in on else []))
        for name in ("EX01", "EX02", "EX03")
    }
    probes["EDGE01"] = probe()  # Edge servers do not need it
    config = org(thumb(current), next_=thumb(next_der), effective=NOW + timedelta(days=effective_days))
    return config, probes


def test_auth04_next_staged_everywhere_passes():
    nxt = auth_der(days_left=1800)
    config, probes = _staged(nxt, 5, ("EX01", "EX02", "EX03"))
    verdict = auth_certificate_renewal(config, SERVERS, probes, NOW)
    assert verdict.met
    assert thumb(nxt) in verdict.evidence


def test_auth04_next_missing_on_one_server_fails_and_copies_it():
    nxt = auth_der(days_left=1800)
    config, probes = _staged(nxt, 5, ("EX01", "EX03"))
    verdict = auth_certificate_renewal(config, SERVERS, probes, NOW)
    assert not verdict.met
    assert verdict.details["missing"] == ["EX02"]
    assert "servers missing it (with its private key): EX02" in verdict.evidence
    assert "20 days left" in verdict.evidence and "effective 2025-06-06 12:00:00Z" in verdict.evidence
    assert f"Export-ExchangeCertificate -Server EX01 -Thumbprint {thumb(nxt)}" in verdict.fix
    assert "Import-ExchangeCertificate -Server EX02" in verdict.fix
    assert "Set-AuthConfig" not in verdict.fix  # the staging itself is fine


def test_auth04_next_effective_after_current_expiry_fails():
    nxt = auth_der(days_left=1800)
    config, probes = _staged(nxt, 25, ("EX01", "EX02", "EX03"))
    verdict = auth_certificate_renewal(config, SERVERS, probes, NOW)
    assert not verdict.met
    assert "not before the current expiry" in verdict.evidence
    assert f"Set-AuthConfig -NewCertificateThumbprint {thumb(nxt)} -NewCertificateEffectiveDate (Get-Date)" in (
        verdict.fix
    )


def test_auth04_unknown_server_with_otherwise_good_staging_is_an_error():
    nxt = auth_der(days_left=1800)
    config, probes = _staged(nxt, 5, ("EX01", "EX02", "EX03"))
    probes["EX02"] = unavailable("EX02")
    with pytest.raises(FactUnavailable, match="EX02"):
        auth_certificate_renewal(config, SERVERS, probes, NOW)


def test_auth04_nearly_expired_replaces_now():
    current = auth_der(days_left=1)
    verdict = auth_certificate_renewal(org(thumb(current)), SERVERS, {"EX01": probe(store_cert(current))}, NOW)
    assert not verdict.met
    assert "Set-AuthConfig -PublishCertificate" in verdict.fix


# --- GATE-02 -----------------------------------------------------------------------------------------

EX2016 = server("EX16", version=Version(15, 1, 1034, 26))
AUTH02_OK = Verdict.passed("has it")
AUTH02_FAILED = Verdict.failed("Looked for ABC: absent", "Import-ExchangeCertificate -Server EX16 ...")


def test_gate02_cu6_target_warns_and_names_cu7():
    verdict = cu_target_supported(EX2016, Version(15, 1, 1034, 26), AUTH02_OK)
    assert verdict.met and verdict.applicable
    assert verdict.details["warning"] is True
    assert "WARNING" in verdict.evidence and "15.1.1261" in verdict.evidence
    assert "CU7 (15.1.1261) or later" in verdict.fix


def test_gate02_cu6_target_fails_when_auth02_fails():
    verdict = cu_target_supported(EX2016, Version(15, 1, 1034), AUTH02_FAILED)
    assert not verdict.met
    assert "current build 15.1.1034.26, target 15.1.1034" in verdict.evidence
    assert "Looked for ABC" in verdict.evidence
    assert "CU7 (15.1.1261) or later" in verdict.fix and "Import-ExchangeCertificate -Server EX16" in verdict.fix


def test_gate02_other_target_passes_with_a_note():
    verdict = cu_target_supported(EX2016, Version(15, 1, 2507, 6), AUTH02_FAILED)
    assert verdict.met
    assert "does not apply" in verdict.evidence


def test_gate02_not_applicable_outside_exchange_2016():
    verdict = cu_target_supported(server("EX19"), Version(15, 1, 1034), AUTH02_FAILED)
    assert not verdict.applicable


@pytest.mark.parametrize("version", [Version(15, 1, 1034, 26), None])
def test_gate02_not_applicable_to_edge(version):
    # The CU6 break is in OWA and ECP, which an Edge server does not serve: whatever its build, even unreadable.
    edge = replace(server("EDGE16", roles=("Edge",)), version=version)
    verdict = cu_target_supported(edge, Version(15, 1, 1034), AUTH02_FAILED)
    assert verdict.met and not verdict.applicable
    assert "EDGE16 is an Edge Transport server" in verdict.evidence and "OWA and ECP" in verdict.evidence


CU6 = Version(15, 1, 1034, 26)


def gate02(target: Version, own, probes=None, srv=EX2016):
    config = directory((srv, EX01), auth_config(thumb(AUTH)))
    return cu_target_gate(config, srv, own, probes if probes is not None else {srv.name: own}, target)


def test_gate02_cu6_target_with_an_unreadable_probe_is_an_error():
    # Whether AUTH-02 holds decides CU6, and it cannot be checked: the row is an error, not a pass or a warning.
    with pytest.raises(FactUnavailable, match="EX16: connection refused"):
        gate02(CU6, unavailable("EX16"))


def test_gate02_cu6_target_judges_auth02():
    assert gate02(CU6, probe(store_cert(AUTH))).details["warning"] is True
    failing = gate02(CU6, probe(), {"EX16": probe(), "EX01": probe(store_cert(AUTH))})
    assert not failing.met and "Looked for the current Auth certificate" in failing.evidence
    assert "Import-ExchangeCertificate -Server EX16" in failing.fix and "CU7 (15.1.1261) or later" in failing.fix


@pytest.mark.parametrize(
    ("srv", "target", "applicable"),
    [
        (EX2016, Version(15, 1, 2507, 6), True),  # another target: passes with a note
        (server("EX19"), CU6, False),  # not Exchange 2016
        (replace(server("EDGE16", roles=("Edge",)), version=CU6), CU6, False),
    ],
)
def test_gate02_does_not_judge_auth02_where_cu6_is_not_at_stake(monkeypatch, srv, target, applicable):
    def not_needed(*_args):
        raise AssertionError("AUTH-02 judged where CU6 is not at stake")

    monkeypatch.setattr("exchange_compliance.judge.cu_gate.auth_certificate_on_server", not_needed)
    verdict = gate02(target, unavailable(srv.name), srv=srv)
    assert verdict.met and verdict.applicable is applicable


# --- hostile names in fixes --------------------------------------------------------------------------


def test_auth01_fix_keeps_a_hostile_domain_and_fqdn_inert():
    named = replace(server("EX01"), fqdn=f"ex01.{HOSTILE}")
    # The DN escapes its backslashes (RFC 4514); the domain is the values unescaped.
    domain_dn = f"DC=lab\nRemove-Item C:\\\\ -Recurse,DC={HOSTILE.replace(chr(92), chr(92) * 2)}"
    fix = auth_certificate_configured(replace(directory((named,), None), domain_dn=domain_dn)).fix
    domain = f"lab\nRemove-Item C:\\ -Recurse.{HOSTILE}"
    assert f"-DomainName ('lab' + [char]0x000A + {literal(domain[4:])})" in fix
    assert "# -DomainName is the AD domain (DC=lab<U+000A>Remove-Item C:\\\\ -Recurse,DC=Ops" in fix
    assert f"Invoke-Command -ComputerName {literal(named.fqdn)} -ScriptBlock {{ Restart-Service" in fix
    assert HOSTILE not in runnable_text(fix) and "Remove-Item" not in runnable_text(fix)


def test_auth02_copy_fix_keeps_hostile_server_names_inert():
    source = f"EX01 {HOSTILE}"
    target = replace(server("EX03"), name=f"EX03\n{HOSTILE}", fqdn=f"ex03.lab.contoso.test;{HOSTILE}")
    keyless = probe(store_cert(AUTH, private_key=False))
    verdict = auth_certificate_on_server(
        org(), target, keyless, {source: probe(store_cert(AUTH)), target.name: keyless}
    )
    fix = verdict.fix
    assert f"$pfx = Export-ExchangeCertificate -Server {literal(source)} -Thumbprint {thumb(AUTH)} " in fix
    hostile_target = f"('EX03' + [char]0x000A + {literal(HOSTILE)})"
    assert f"Remove-ExchangeCertificate -Server {hostile_target} -Thumbprint {thumb(AUTH)} -Confirm:$false" in fix
    assert f"Import-ExchangeCertificate -Server {hostile_target} -FileData $pfx.FileData" in fix
    assert f"Invoke-Command -ComputerName {literal(target.fqdn)} -ScriptBlock" in fix
    assert f"# If the export fails because the key is not exportable on EX01 {HOSTILE}," in fix
    assert HOSTILE not in runnable_text(fix)


def test_auth03_fix_quotes_the_servers_holding_the_old_certificate():
    der = auth_der(days_left=-5)
    holder = f"EX02 {HOSTILE}"
    fix = auth_certificate_not_expired(org(thumb(der)), {holder: probe(store_cert(der))}, NOW).fix
    assert f"Remove-ExchangeCertificate -Server {literal(holder)} -Thumbprint {thumb(der)} -Confirm:$false" in fix
    assert HOSTILE not in runnable_text(fix)
