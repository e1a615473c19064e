"""EWS virtual directory URLs ("O365 Hybrid Wizard - Hybrid Agent Fails to Validate")."""

from exchange_compliance.judge import web_services
from exchange_compliance.plugin import requirement


@requirement("EWS-01")
def test_ews_has_https_urls(server, directory, settings, judge):
    """EWS (Default Web Site) has an https InternalUrl, and an https ExternalUrl where the org is hybrid."""
    verdict = judge(web_services.ews_urls_set(server, directory, hybrid=settings.hybrid))
    assert verdict.met, verdict.evidence
