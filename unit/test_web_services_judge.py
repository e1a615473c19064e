"""EWS-01: the EWS (Default Web Site) URLs of each Client Access server (seed 002)."""

from __future__ import annotations

from factories import HOSTILE, directory, ews, runnable_text, server

from exchange_compliance.judge.powershell import literal
from exchange_compliance.judge.web_services import ews_urls_set, is_https_url

EX01, EX02 = server("EX01"), server("EX02")
INTERNAL = "https://ex01.lab.contoso.test/EWS/Exchange.asmx"
EXTERNAL = "https://mail.contoso.com/EWS/Exchange.asmx"


def test_https_url():
    assert is_https_url(INTERNAL)
    assert is_https_url("HTTPS://mail.contoso.com/ews/exchange.asmx")
    assert not is_https_url("http://ex01.lab.contoso.test/EWS/Exchange.asmx")
    assert not is_https_url("https:///EWS/Exchange.asmx")
    assert not is_https_url("")
    assert not is_https_url(None)


def test_passes_with_both_urls_in_hybrid():
    verdict = ews_urls_set(EX01, directory((EX01,), vdirs=(ews("EX01", INTERNAL, EXTERNAL),)), hybrid=True)
    assert verdict.met
    assert INTERNAL in verdict.evidence and EXTERNAL in verdict.evidence


def test_external_url_is_not_required_outside_hybrid():
    verdict = ews_urls_set(EX01, directory((EX01,), vdirs=(ews("EX01", INTERNAL, None),)), hybrid=False)
    assert verdict.met
    assert "not hybrid" in verdict.evidence


def test_missing_internal_url_fails_with_the_fix():
    verdict = ews_urls_set(EX01, directory((EX01,), vdirs=(ews("EX01", None, EXTERNAL),)), hybrid=False)
    assert not verdict.met
    assert "InternalUrl (not set)" in verdict.evidence
    assert (
        verdict.fix
        == f'Set-WebServicesVirtualDirectory -Identity "EX01\\EWS (Default Web Site)" -InternalUrl {INTERNAL}'
    )


def test_http_internal_url_fails():
    http = "http://ex01.lab.contoso.test/EWS/Exchange.asmx"
    verdict = ews_urls_set(EX01, directory((EX01,), vdirs=(ews("EX01", http, EXTERNAL),)), hybrid=True)
    assert not verdict.met
    assert http in verdict.evidence


def test_hybrid_without_external_url_takes_the_orgs_published_name():
    vdirs = (ews("EX01", INTERNAL, None), ews("EX02", "https://ex02.lab.contoso.test/EWS/Exchange.asmx", EXTERNAL))
    verdict = ews_urls_set(EX01, directory((EX01, EX02), vdirs=vdirs), hybrid=True)
    assert not verdict.met
    assert "hybrid and ExternalUrl is not an https URL" in verdict.evidence
    assert (
        verdict.fix
        == f'Set-WebServicesVirtualDirectory -Identity "EX01\\EWS (Default Web Site)" -ExternalUrl {EXTERNAL}'
    )


def test_hybrid_without_any_external_url_says_to_replace_the_host():
    verdict = ews_urls_set(EX01, directory((EX01,), vdirs=(ews("EX01", None, None),)), hybrid=True)
    assert not verdict.met
    assert f"-InternalUrl {INTERNAL} -ExternalUrl {INTERNAL}" in verdict.fix
    assert "published to the internet" in verdict.fix


def test_other_servers_vdir_does_not_count():
    verdict = ews_urls_set(EX01, directory((EX01, EX02), vdirs=(ews("EX02", INTERNAL, EXTERNAL),)), hybrid=False)
    assert not verdict.met
    assert "has no 'EWS (Default Web Site)' virtual directory" in verdict.evidence
    assert "New-WebServicesVirtualDirectory -Server EX01" in verdict.fix


def test_not_applicable_without_client_access():
    mailbox_only = server("EX09", roles=("Mailbox",))
    assert not ews_urls_set(mailbox_only, directory((mailbox_only,)), hybrid=True).applicable
    edge = server("EDGE01", roles=("Edge",))
    assert not ews_urls_set(edge, directory((edge,)), hybrid=True).applicable


# --- hostile names in fixes --------------------------------------------------------------------------


def test_fixes_keep_hostile_names_and_urls_inert():
    # Another server's ExternalUrl is copied into the fix: it passes as https, and carries code.
    published = "https://mail.contoso.com/EWS/Exchange.asmx?x=$(Remove-Item C:\\ -Recurse)"
    named = server(HOSTILE)
    vdirs = (ews(HOSTILE, None, None), ews("EX02", "https://ex02.lab.contoso.test/EWS/Exchange.asmx", published))
    fix = ews_urls_set(named, directory((named, EX02), vdirs=vdirs), hybrid=True).fix
    internal = f"https://{named.fqdn}/EWS/Exchange.asmx"
    identity = HOSTILE + "\\EWS (Default Web Site)"
    assert fix == (
        f"Set-WebServicesVirtualDirectory -Identity {literal(identity)} "
        f"-InternalUrl {literal(internal)} -ExternalUrl {literal(published)}"
    )
    assert HOSTILE not in runnable_text(fix) and "Remove-Item" not in runnable_text(fix)
    fix = ews_urls_set(named, directory((named, EX02), vdirs=vdirs[1:]), hybrid=True).fix
    assert fix.startswith(f'New-WebServicesVirtualDirectory -Server {literal(HOSTILE)} -WebSiteName "Default Web Site"')
    assert HOSTILE not in runnable_text(fix) and "Remove-Item" not in runnable_text(fix)
