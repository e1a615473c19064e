"""GATE-02: Exchange 2016 CU6 breaks OWA and ECP on a server without the Auth (OAuth) certificate (KB 4036163).

Only a 2016 server (not Edge) targeted at CU6 is at stake; for it, AUTH-02's verdict decides between a warning
and a failure. Elsewhere AUTH-02 is not judged at all, so its facts (the server's probe) are not needed.
"""

from __future__ import annotations

from dataclasses import replace

from ..builds import release, release_name
from ..facts import Directory, ExchangeServer, ServerProbe, Unavailable, Version
from .auth import Probes, auth_certificate_on_server
from .verdict import FactUnavailable, Verdict

# Compared and shown as major.minor.build: a security update on top of a CU raises only the revision.
EXCHANGE_2016_CU6 = replace(release("2016", "CU6"), revision=None)
EXCHANGE_2016_CU7 = replace(release("2016", "CU7"), revision=None)


def _not_at_stake(server: ExchangeServer, target: Version) -> Verdict | None:
    """The verdict for a server the CU6 break cannot reach (Edge, not Exchange 2016, a target other than CU6);
    None when it can, and AUTH-02 decides."""
    if server.is_edge:
        # Before the version: whatever build an Edge server runs, the break cannot reach it.
        return Verdict.not_applicable(
            f"{server.name} is an Edge Transport server: the CU6 missing-OAuth-certificate break (KB 4036163) is "
            "about OWA and ECP, which Edge does not serve"
        )
    current = server.version
    if current is None:
        raise FactUnavailable(f"{server.name}: its Exchange version could not be read from AD")
    if (current.major, current.minor) != (15, 1):
        return Verdict.not_applicable(
            f"{server.name} runs {release_name(current)} ({current}): GATE-02 is for Exchange 2016"
        )
    if (target.major, target.minor, target.build) != (15, 1, EXCHANGE_2016_CU6.build):
        return Verdict.passed(
            f"current build {current}, target {target}: not Exchange 2016 CU6 ({EXCHANGE_2016_CU6}), so the CU6 "
            "missing-OAuth-certificate break (KB 4036163) does not apply",
            current=str(current),
            target=str(target),
        )
    return None


def _cu6_verdict(server: ExchangeServer, current: Version, target: Version, auth_verdict: Verdict) -> Verdict:
    builds = f"current build {current}, target {target}"
    details = {"current": str(current), "target": str(target)}
    advice = (
        f"# Target Exchange 2016 CU7 ({EXCHANGE_2016_CU7}) or later instead of CU6 ({EXCHANGE_2016_CU6}), and "
        "make\n# sure AUTH-02 passes for this server first."
    )
    if auth_verdict.applicable and not auth_verdict.met:
        return Verdict.failed(
            f"{builds}: CU6 breaks OWA and ECP when the Auth (OAuth) certificate is missing, and AUTH-02 fails for "
            f"{server.name}: {auth_verdict.evidence}",
            f"{advice}\n# AUTH-02's fix:\n{auth_verdict.fix}",
            auth_02="failed",
            **details,
        )
    return Verdict(
        met=True,
        evidence=f"WARNING: {builds}: Exchange 2016 CU6 breaks OWA and ECP on any server missing the Auth (OAuth) "
        f"certificate (KB 4036163); AUTH-02 passes for {server.name} today, but CU7 ({EXCHANGE_2016_CU7}) fixes it",
        fix=advice,
        details={**details, "warning": True},
    )


def cu_target_supported(server: ExchangeServer, target: Version, auth_verdict: Verdict) -> Verdict:
    """GATE-02 with AUTH-02's verdict for the server already known: a 2016 server targeted at CU6 warns, and fails
    when AUTH-02 fails; not applicable to Edge Transport servers, which serve neither OWA nor ECP. The current
    build comes from AD (server.version)."""
    early = _not_at_stake(server, target)
    if early is not None:
        return early
    assert server.version is not None  # _not_at_stake raised otherwise
    return _cu6_verdict(server, server.version, target, auth_verdict)


def cu_target_gate(
    directory: Directory, server: ExchangeServer, probe: ServerProbe | Unavailable, probes: Probes, target: Version
) -> Verdict:
    """GATE-02 for one server: AUTH-02 is judged only where CU6 is at stake, and there a probe that could not be
    read makes the row an error (FactUnavailable propagates): whether the server would break is unknown."""
    early = _not_at_stake(server, target)
    if early is not None:
        return early
    assert server.version is not None
    auth_02 = auth_certificate_on_server(directory, server, probe, probes)
    return _cu6_verdict(server, server.version, target, auth_02)
