"""The Exchange Back End site on 444, where every front end proxies to ("Exchange 2013 Clients
not able to connect using Outlook Anywhere")."""

from exchange_compliance.judge import backend
from exchange_compliance.plugin import requirement


@requirement("BE-01")
def test_back_end_site_has_an_https_binding_on_444(server, probe, judge):
    """The Exchange Back End site has an https binding on port 444."""
    verdict = judge(backend.backend_binding_exists(server, probe))
    assert verdict.met, verdict.evidence


@requirement("BE-02")
def test_certificate_bound_to_444_is_valid_and_names_the_server(server, probe, now, judge):
    """The certificate bound to 0.0.0.0:444 is in the store, has not expired, and names the server."""
    verdict = judge(backend.backend_certificate_valid(server, probe, now))
    assert verdict.met, verdict.evidence


@requirement("BE-03")
def test_444_presents_the_bound_certificate_valid_for_the_fqdn(server, probe, handshake, now, judge):
    """A TLS handshake to the FQDN on 444 presents a certificate valid for it now: the bound one."""
    verdict = judge(backend.backend_presents_valid_certificate(server, probe, handshake, now))
    assert verdict.met, verdict.evidence
