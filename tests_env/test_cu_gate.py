"""What a cumulative update needs before it is installed (Practical365 2016; KB 4036163).

GATE-01 runs in every run: an expired certificate bound in IIS is a defect whether or not a CU is planned.
GATE-02 is about a target version, so it runs only in a CU gate run (`--gate --target-version BUILD`): the
plugin collects tests that use the `target_version` fixture only then.
"""

from exchange_compliance.judge import backend, cu_gate
from exchange_compliance.plugin import requirement


@requirement("GATE-01")
def test_no_iis_bound_certificate_has_expired(server, probe, now, judge):
    """No certificate bound in IIS (443, 444) has expired: CU setup fails on it and leaves the server unusable."""
    verdict = judge(backend.iis_certificates_not_expired(server, probe, now))
    assert verdict.met, verdict.evidence


@requirement("GATE-02")
def test_target_version_does_not_break_oauth(directory, server, probe, probes, target_version, judge):
    """With Exchange 2016 CU6 as the target: warn of the missing-OAuth-certificate break, fail when AUTH-02 fails.
    AUTH-02 is judged only for a 2016 server targeted at CU6: only there does an unreadable probe make an error."""
    verdict = judge(cu_gate.cu_target_gate(directory, server, probe, probes, target_version))
    assert verdict.met, verdict.evidence
