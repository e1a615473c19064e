"""EWS-01: the EWS (Default Web Site) URLs of each Client Access server (the Hybrid Agent article)."""

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


def test_hybrid_without_any_external_url_says_it_must_be_chosen():
    # Nothing in AD names the published host: the fix says so, and runs what can be derived (the InternalUrl).
    verdict = ews_urls_set(EX01, directory((EX01,), vdirs=(ews("EX01", None, None),)), hybrid=True)
    assert not verdict.met
    runnable = runnable_text(verdict.fix).strip()
    assert (
        runnable == f'Set-WebServicesVirtualDirectory -Identity "EX01\\EWS (Default Web Site)" -InternalUrl {INTERNAL}'
    )
    assert "the name published to the internet must be chosen" in verdict.fix
    assert "-ExternalUrl https://<published name>/EWS/Exchange.asmx" in verdict.fix  # in a comment only
    # Only the ExternalUrl wrong: nothing runnable is left, and nothing pretends to be.
    verdict = ews_urls_set(EX01, directory((EX01,), vdirs=(ews("EX01", INTERNAL, None),)), hybrid=True)
    assert runnable_text(verdict.fix).strip() == "" and "must be chosen" in verdict.fix


def test_missing_vdir_in_hybrid_without_a_published_name_says_it_must_be_chosen():
    verdict = ews_urls_set(EX01, directory((EX01,)), hybrid=True)
    lines = verdict.fix.splitlines()
    assert lines[0] == (
        f'New-WebServicesVirtualDirectory -Server EX01 -WebSiteName "Default Web Site" -InternalUrl {INTERNAL}'
    )
    assert "must be chosen" in verdict.fix and runnable_text(verdict.fix).strip() == lines[0]


def test_url_that_does_not_parse_is_not_an_https_url_and_is_shown():
    assert not is_https_url("https://[x")
    assert not is_https_url("https://[::1")
    verdict = ews_urls_set(EX01, directory((EX01,), vdirs=(ews("EX01", "https://[x", EXTERNAL),)), hybrid=True)
    assert not verdict.met and "InternalUrl https://[x" in verdict.evidence
    assert f"-InternalUrl {INTERNAL}" in verdict.fix
    # Published by another server, it is not taken as the org's external URL either.
    vdirs = (ews("EX01", INTERNAL, None), ews("EX02", INTERNAL, "https://[x/EWS/Exchange.asmx"))
    assert "must be chosen" in ews_urls_set(EX01, directory((EX01, EX02), vdirs=vdirs), hybrid=True).fix


def test_the_most_published_external_url_wins_whatever_the_order():
    other = "https://webmail.contoso.com/EWS/Exchange.asmx"
    servers = tuple(server(f"EX0{i}") for i in range(1, 5))
    vdirs = (ews("EX01", INTERNAL, None), ews("EX02", INTERNAL, other), ews("EX03", INTERNAL, EXTERNAL))
    for order in (vdirs, vdirs[::-1]):  # one each: a tie, broken by name, not by the order AD returned them in
        assert ews_urls_set(EX01, directory(servers, vdirs=order), hybrid=True).fix.endswith(f"-ExternalUrl {EXTERNAL}")
    vdirs += (ews("EX04", INTERNAL, other),)
    for order in (vdirs, vdirs[::-1]):
        assert ews_urls_set(EX01, directory(servers, vdirs=order), hybrid=True).fix.endswith(f"-ExternalUrl {other}")


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
