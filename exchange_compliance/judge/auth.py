"""The Auth (OAuth signing) certificate: AUTH-01..04 and the CU6 gate, GATE-02 (KB 4036163, "You can't access OWA or ECP
after you install Exchange Server 2016 CU6"; "Exchange Server OWA and ECP not working" on the expired certificate).

The thumbprints come from AD (Directory.auth_config); the certificates themselves from each server's
LocalMachine\\My (ServerProbe), judged from their DER.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from ..facts import AuthConfig, Directory, ExchangeServer, ServerProbe, Unavailable
from ..names import dns_domain_of, normalize_thumbprint
from ..text import name_list
from .certificates import (
    CertificateInfo,
    find_in_store,
    format_age,
    format_time,
    servers_holding,
    store_info,
    utc,
)
from .powershell import argument, comment, quote
from .verdict import FactUnavailable, Verdict, available

AUTH_NAME = "Microsoft Exchange Server Auth Certificate"
_SHA1_HEX = re.compile(r"[0-9A-F]{40}")

Probes = Mapping[str, ServerProbe | Unavailable]


def needs_auth_certificate(server: ExchangeServer) -> bool:
    """Mailbox and Client Access servers sign and validate OAuth tokens; Edge servers have no Auth certificate."""
    return not server.is_edge and (server.is_mailbox or server.is_client_access)


def _current(config: AuthConfig | None) -> str | None:
    return normalize_thumbprint(config.current_thumbprint) if config else None


def _found_values(config: AuthConfig) -> str:
    effective = format_time(config.next_effective) if config.next_effective else "(none)"
    return (
        f"CurrentCertificateThumbprint {config.current_thumbprint or '(none)'}; "
        f"PreviousCertificateThumbprint {config.previous_thumbprint or '(none)'}; "
        f"NextCertificateThumbprint {config.next_thumbprint or '(none)'}; NextCertificateEffectiveDate {effective}; "
        f"msExchAuthCertificateThumbprint {list(config.raw_thumbprint_values)}"
    )


def _locate(probes: Probes, thumbprint: str) -> CertificateInfo | None:
    """The certificate parsed from the DER of any store that holds it (same thumbprint, same DER); read from the
    first holder by name, so that a DER that does not parse is reported the same way every run."""
    holders = [
        (name, found)
        for name, probe in probes.items()
        if not isinstance(probe, Unavailable) and (found := find_in_store(probe, thumbprint)) is not None
    ]
    if not holders:
        return None
    name, found = min(holders, key=lambda holder: holder[0].lower())
    return store_info(found, name)


def _not_found(thumbprint: str, probes: Probes, what: str) -> FactUnavailable:
    unknown = sorted((name for name, probe in probes.items() if isinstance(probe, Unavailable)), key=str.lower)
    probed = f"; not probed: {name_list(unknown, 5)}" if unknown else ""
    return FactUnavailable(
        f"the {what} Auth certificate {thumbprint} is in no probed server's LocalMachine\\My, so its dates cannot "
        f"be read (AUTH-02 reports the servers that lack it){probed}"
    )


# --- fixes -------------------------------------------------------------------------------------------


def _restart(servers: Iterable[ExchangeServer]) -> str:
    """Restart the Service Host and recycle the OWA and ECP pools (both Auth certificate articles), on the named
    servers."""
    commands = (
        "Restart-Service MSExchangeServiceHost; Import-Module WebAdministration; "
        "Restart-WebAppPool MSExchangeOWAAppPool; Restart-WebAppPool MSExchangeECPAppPool"
    )
    names = ", ".join(argument(server.fqdn or server.name) for server in servers)
    return f"Invoke-Command -ComputerName {names} -ScriptBlock {{ {commands} }}" if names else commands


def _new_auth_certificate(directory: Directory, named: bool) -> list[str]:
    # KB 4036163 names a domain (contoso.com in the article): the AD domain is used, as derived. The expired
    # certificate article creates it without names, as setup does. Either works: OAuth finds the certificate by
    # thumbprint, never by name.
    if named:
        domain_arg = quote(dns_domain_of(directory.domain_dn))
        note = [
            f"# -DomainName is the AD domain ({comment(directory.domain_dn)}); the Auth certificate is found by its "
            "thumbprint, not its names, so no other domain is needed."
        ]
    else:
        domain_arg, note = "@()", []
    return [
        "# Exchange Management Shell on one Exchange server; answer N if asked to overwrite the default SMTP "
        "certificate.",
        *note,
        f'$cert = New-ExchangeCertificate -KeySize 2048 -PrivateKeyExportable $true -SubjectName "cn={AUTH_NAME}" '
        f'-FriendlyName "{AUTH_NAME}" -DomainName {domain_arg}',
    ]


def create_and_publish_fix(
    directory: Directory,
    *,
    named: bool = True,
    old: str | None = None,
    probes: Probes | None = None,
    hybrid: bool = False,
) -> str:
    """Create a new Auth certificate, make it current now, publish it, restart (KB 4036163; for a renewal,
    `named=False`, as "Exchange Server OWA and ECP not working" does it)."""
    lines = [
        *_new_auth_certificate(directory, named),
        "Set-AuthConfig -NewCertificateThumbprint $cert.Thumbprint -NewCertificateEffectiveDate (Get-Date) -Force",
        "Set-AuthConfig -PublishCertificate",
        "Set-AuthConfig -ClearPreviousCertificate",
        _restart(s for s in directory.servers if needs_auth_certificate(s)),
    ]
    if old and probes:
        with_key, without_key, _ = servers_holding(probes.items(), old)
        holders = sorted([*with_key, *without_key], key=str.lower)
        if holders:
            lines.append("# Once the new certificate is current, remove the old one from every server holding it:")
        lines += [
            f"Remove-ExchangeCertificate -Server {argument(name)} -Thumbprint {argument(old)} -Confirm:$false"
            for name in holders
        ]
    if hybrid:
        lines.append("# The org is hybrid: rerun the Hybrid Configuration Wizard so Azure AD gets the new certificate.")
    lines.append("# Publishing can take up to an hour to reach every server.")
    return "\n".join(lines)


def copy_certificate_fix(
    thumbprint: str, source: str, targets: Sequence[ExchangeServer], replace: Sequence[str] = (), restart: bool = True
) -> str:
    """KB 4036163's workaround: export the certificate with its key from `source`, import it on `targets`; then
    restart what signs tokens (not needed for a staged next certificate, which the Service Host picks up)."""
    lines = [
        f"# Exchange Management Shell: copy {comment(thumbprint)} from {comment(source)}, which has it with its "
        "private key.",
        "$password = Read-Host -AsSecureString -Prompt 'Password protecting the exported certificate'",
        f"$pfx = Export-ExchangeCertificate -Server {argument(source)} -Thumbprint {argument(thumbprint)} "
        "-BinaryEncoded -Password $password",
    ]
    for target in targets:
        server = argument(target.name)
        if target.name in replace:  # a copy without its key blocks the import of the same thumbprint
            lines.append(
                f"Remove-ExchangeCertificate -Server {server} -Thumbprint {argument(thumbprint)} -Confirm:$false"
            )
        lines.append(
            f"Import-ExchangeCertificate -Server {server} -FileData $pfx.FileData -Password $password "
            "-PrivateKeyExportable $true"
        )
    lines += [
        *([_restart(targets)] if restart else []),
        f"# If the export fails because the key is not exportable on {comment(source)}, create and publish a new "
        "Auth certificate instead (KB 4036163).",
    ]
    return "\n".join(lines)


# --- judges ------------------------------------------------------------------------------------------


def auth_certificate_configured(directory: Directory) -> Verdict:
    """AUTH-01: the Auth configuration exists and names a current thumbprint."""
    config = directory.auth_config
    if config is None:
        return Verdict.failed(
            f"No Auth Configuration object: CN=Auth Configuration,{directory.org_dn} was not found",
            create_and_publish_fix(directory),
            auth_config=None,
        )
    found = _found_values(config)
    details = {"auth_config_dn": config.dn, "raw_thumbprint_values": list(config.raw_thumbprint_values)}
    current = _current(config)
    if current is None:
        problem = f"The Auth configuration names no current certificate: {found}"
    elif not _SHA1_HEX.fullmatch(current):
        problem = f"The current thumbprint {current!r} is not a SHA-1 thumbprint: {found}"
    else:
        return Verdict.passed(f"The Auth configuration names current certificate {current}: {found}", **details)
    return Verdict.failed(problem, create_and_publish_fix(directory), **details)


def auth_certificate_on_server(
    directory: Directory, server: ExchangeServer, probe: ServerProbe | Unavailable, probes: Probes
) -> Verdict:
    """AUTH-02: the current Auth certificate is in the server's LocalMachine\\My with its private key."""
    if not needs_auth_certificate(server):
        return Verdict.not_applicable(
            f"{server.name} is an Edge Transport server ({', '.join(server.role_names)}): only Mailbox and Client "
            "Access servers need the Auth certificate"
        )
    thumbprint = _current(directory.auth_config)
    if thumbprint is None:
        return Verdict.failed(
            f"The Auth configuration names no current certificate (AUTH-01), so {server.name} cannot have it",
            create_and_publish_fix(directory),
        )
    own = find_in_store(available(probe), thumbprint)
    if own is not None and own.has_private_key:
        return Verdict.passed(
            f"{thumbprint} is in {server.name}'s LocalMachine\\My with its private key", thumbprint=thumbprint
        )
    others = ((name, p) for name, p in probes.items() if name.lower() != server.name.lower())
    with_key, without_key, unknown = servers_holding(others, thumbprint)
    state = "without its private key" if own is not None else "absent"
    evidence = (
        f"Looked for the current Auth certificate {thumbprint} in {server.name}'s LocalMachine\\My: {state}. "
        f"Other servers with it and its private key: {name_list(with_key, 5) or 'none'}"
        + (f"; with it but no private key: {name_list(without_key, 5)}" if without_key else "")
        + (f"; not probed: {name_list(unknown, 5)}" if unknown else "")
    )
    if with_key:
        fix = copy_certificate_fix(thumbprint, with_key[0], [server], replace=[server.name] if own else [])
    else:
        fix = create_and_publish_fix(directory)
    return Verdict.failed(
        evidence, fix, thumbprint=thumbprint, present=own is not None, holders=with_key, holders_without_key=without_key
    )


def auth_certificate_not_expired(directory: Directory, probes: Probes, now: datetime, hybrid: bool = False) -> Verdict:
    """AUTH-03: the current Auth certificate has not expired, judged from the DER found in any server's store.

    When no probed server holds it, its NotAfter is unknown: that is FactUnavailable (an error row naming why),
    not a failure, because claiming "expired" would be a guess; AUTH-02 already fails for every server lacking it.
    """
    thumbprint = _current(directory.auth_config)
    if thumbprint is None:
        return Verdict.failed(
            "The Auth configuration names no current certificate (AUTH-01)",
            create_and_publish_fix(directory, named=False, hybrid=hybrid),
        )
    info = _locate(probes, thumbprint)
    if info is None:
        raise _not_found(thumbprint, probes, "current")
    details = {"thumbprint": thumbprint, "subject": info.subject, "not_after": format_time(info.not_after)}
    summary = f"Current Auth certificate {thumbprint}, subject {info.subject}, NotAfter {format_time(info.not_after)}"
    if info.is_expired(now):
        since = utc(now) - info.not_after
        fix = create_and_publish_fix(directory, named=False, old=thumbprint, probes=probes, hybrid=hybrid)
        return Verdict.failed(
            f"{summary}: expired {format_age(since)} ago", fix, days_since_expiry=since.days, **details
        )
    if info.is_not_yet_valid(now):
        fix = create_and_publish_fix(directory, named=False, old=thumbprint, probes=probes, hybrid=hybrid)
        return Verdict.failed(f"{summary}: not valid until {format_time(info.not_before)}", fix, **details)
    return Verdict.passed(f"{summary}: {info.validity(now)}", days_left=info.days_left(now), **details)


def _effective_in_days(left: timedelta) -> int:
    # CSS MonitorExchangeAuthCertificate: activate the next certificate in 30 days, sooner when the current
    # one expires first (4 or 2 days), immediately when under 2 days are left.
    for days, needed in ((30, 32), (4, 4), (2, 2)):
        if left > timedelta(days=needed):
            return days
    return 0


def _stage_fix(directory: Directory, left: timedelta, next_thumbprint: str | None, probes: Probes) -> str:
    days = _effective_in_days(left)
    if days == 0:
        return create_and_publish_fix(directory, named=False, old=_current(directory.auth_config), probes=probes)
    # $cert.Thumbprint is the suite's own text (the certificate created just above); a staged one comes from AD.
    staged = "$cert.Thumbprint" if next_thumbprint is None else argument(next_thumbprint)
    lines = [] if next_thumbprint else _new_auth_certificate(directory, "003")
    lines += [
        f"Set-AuthConfig -NewCertificateThumbprint {staged} -NewCertificateEffectiveDate (Get-Date).AddDays({days}) "
        "-Force",
        "# Then make sure every Mailbox and Client Access server has it with its private key (rerun this check).",
    ]
    return "\n".join(lines)


def auth_certificate_renewal(
    directory: Directory, servers: Iterable[ExchangeServer], probes: Probes, now: datetime, warn_days: int = 60
) -> Verdict:
    """AUTH-04: at least `warn_days` left, or a next certificate staged before the current expiry and present
    (with its private key) on every Mailbox/Client Access server."""
    config = directory.auth_config
    thumbprint = _current(config)
    if config is None or thumbprint is None:
        return Verdict.failed(
            "The Auth configuration names no current certificate (AUTH-01)",
            create_and_publish_fix(directory, named=False),
        )
    info = _locate(probes, thumbprint)
    if info is None:
        raise _not_found(thumbprint, probes, "current")
    left = info.time_left(now)
    details: dict[str, object] = {"thumbprint": thumbprint, "days_left": left.days, "warn_days": warn_days}
    head = f"Current Auth certificate {thumbprint}: {info.validity(now)} (NotAfter {format_time(info.not_after)})"
    if left >= timedelta(days=warn_days):
        return Verdict.passed(f"{head}, at least {warn_days} days", **details)

    next_thumbprint = normalize_thumbprint(config.next_thumbprint)
    if next_thumbprint is None:
        return Verdict.failed(
            f"{head}, under {warn_days} days, and no next certificate is staged",
            _stage_fix(directory, left, None, probes),
            **details,
        )
    effective = utc(config.next_effective) if config.next_effective else None
    details.update(next_thumbprint=next_thumbprint, next_effective=format_time(effective) if effective else None)
    required = [server for server in servers if needs_auth_certificate(server)]
    without_key: list[str] = []
    unknown: list[str] = []
    missing: list[ExchangeServer] = []
    for server in required:
        probe = probes.get(server.name)
        if probe is None or isinstance(probe, Unavailable):
            unknown.append(server.name)
        elif (found := find_in_store(probe, next_thumbprint)) is None or not found.has_private_key:
            missing.append(server)
            if found is not None:
                without_key.append(server.name)
    details["missing"] = [server.name for server in missing]

    problems = []
    next_info = _locate(probes, next_thumbprint)
    usable = next_info is not None and not next_info.is_expired(now)
    if next_info is None:
        problems.append(f"next certificate {next_thumbprint} is in no probed server's store")
    elif not usable:
        problems.append(f"next certificate {next_thumbprint} has expired ({format_time(next_info.not_after)})")
    if effective is None:
        problems.append("no NextCertificateEffectiveDate is set")
    elif effective >= info.not_after:
        problems.append(f"its effective date {format_time(effective)} is not before the current expiry")
    staging_ok = not problems
    if missing:
        problems.append(f"servers missing it (with its private key): {', '.join(s.name for s in missing)}")
    staged = f"next {next_thumbprint} effective {format_time(effective) if effective else '(none)'}"
    if problems:
        fixes = [] if staging_ok else [_stage_fix(directory, left, next_thumbprint if usable else None, probes)]
        # Copying is worth it only for a certificate that stays the next one (usable, not replaced right away).
        holders = servers_holding(probes.items(), next_thumbprint)[0]
        if missing and usable and holders and _effective_in_days(left) > 0:
            fixes.append(copy_certificate_fix(next_thumbprint, holders[0], missing, replace=without_key, restart=False))
        return Verdict.failed(
            f"{head}, under {warn_days} days; {staged}; " + "; ".join(problems), "\n".join(fixes), **details
        )
    if unknown:
        raise FactUnavailable(
            f"next Auth certificate {next_thumbprint} is staged, but whether {', '.join(unknown)} have it is unknown: "
            "their probe is unavailable"
        )
    return Verdict.passed(f"{head}; {staged}, on every Mailbox/Client Access server", **details)
