"""What a cumulative update needs before it is installed (Practical365 2016; seed 001)."""

from exchange_compliance.judge import backend
from exchange_compliance.plugin import requirement


@requirement("GATE-01")
def test_no_iis_bound_certificate_has_expired(server, probe, now, judge):
    """No certificate bound in IIS (443, 444) has expired: CU setup fails on it and leaves the server unusable."""
    verdict = judge(backend.iis_certificates_not_expired(server, probe, now))
    assert verdict.met, verdict.evidence
