"""The Auth certificate that signs OAuth tokens: named, present everywhere with its key, current (KB 4036163;
"Exchange Server OWA and ECP not working")."""

from exchange_compliance.judge import auth
from exchange_compliance.plugin import requirement


@requirement("AUTH-01")
def test_auth_configuration_names_a_current_certificate(directory, judge):
    """The Auth configuration names a current Auth certificate."""
    verdict = judge(auth.auth_certificate_configured(directory))
    assert verdict.met, verdict.evidence


@requirement("AUTH-02")
def test_auth_certificate_is_on_the_server_with_its_private_key(directory, server, probe, probes, judge):
    """The current Auth certificate is in LocalMachine\\My with its private key."""
    verdict = judge(auth.auth_certificate_on_server(directory, server, probe, probes))
    assert verdict.met, verdict.evidence


@requirement("AUTH-03")
def test_auth_certificate_has_not_expired(directory, probes, now, settings, judge):
    """The current Auth certificate has not expired."""
    verdict = judge(auth.auth_certificate_not_expired(directory, probes, now, hybrid=settings.hybrid))
    assert verdict.met, verdict.evidence


@requirement("AUTH-04")
def test_auth_certificate_has_time_left_or_a_staged_successor(directory, servers, probes, now, settings, judge):
    """At least the warning days left, or a next certificate staged in time on every Mailbox/CAS server."""
    warn_days = settings.auth_certificate_warning_days
    verdict = judge(auth.auth_certificate_renewal(directory, servers, probes, now, warn_days=warn_days))
    assert verdict.met, verdict.evidence
