"""The Exchange Back End site on 444 (BE-01..03: "Exchange 2013 Clients not able to connect
using Outlook Anywhere") and expired IIS certificates before a CU (GATE-01).

Front ends proxy every protocol to the mailbox server's FQDN on 444 over TLS and validate the name, so the
certificate http.sys serves there must name the server. Setup binds a self-signed "Microsoft Exchange"
certificate (CN=<host>, SANs host and FQDN); the fix is always to bind that one back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ..facts import ExchangeServer, Handshake, ServerProbe, SiteBinding, SslCertBinding, StoreCertificate, Unavailable
from ..names import normalize_thumbprint
from .certificates import (
    CertificateError,
    CertificateInfo,
    certificate_info,
    dns_name_matches,
    find_in_store,
    store_info,
)
from .powershell import argument, comment, literal, quote
from .verdict import FactUnavailable, Verdict, available

BACKEND_SITE = "Exchange Back End"
BACKEND_IPPORT = "0.0.0.0:444"
EXCHANGE_FRIENDLY_NAME = "Microsoft Exchange"
# IIS's application ID in http.sys, used when no binding exists to take it from.
IIS_APPID = "{4dc3e181-e14b-4a21-b022-59fc669b0914}"
_GUID = re.compile(r"\{?[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}?")


def host_names(server: ExchangeServer) -> tuple[str, ...]:
    """The names a back-end certificate may carry: the short host name and the FQDN (BE-02)."""
    return tuple(dict.fromkeys(name for name in (server.host_name, server.fqdn) if name))


def _not_mailbox(server: ExchangeServer) -> Verdict | None:
    if server.is_mailbox and not server.is_edge:
        return None
    return Verdict.not_applicable(
        f"{server.name} has no Mailbox role ({', '.join(server.role_names) or 'none'}): only Mailbox servers run the "
        "Exchange Back End site"
    )


def _backend_bindings(probe: ServerProbe) -> tuple[SiteBinding | None, SslCertBinding | None]:
    """The site's https binding on 444 (IIS) and the http.sys SSL binding on 0.0.0.0:444 (its registry key)."""
    site = next(
        (
            b
            for b in probe.bindings
            if b.site.lower() == BACKEND_SITE.lower() and b.protocol.lower() == "https" and b.port == 444
        ),
        None,
    )
    netsh = next((b for b in probe.ssl_bindings if b.ip_port == BACKEND_IPPORT), None)
    return site, netsh


def _bound(site: SiteBinding | None, netsh: SslCertBinding | None) -> tuple[str | None, str | None, str]:
    """The thumbprint TLS serves on 444, the store that binding names, and a description of both bindings.
    http.sys is what a client gets, so it wins when IIS's view differs; the difference is reported."""
    iis_hash = normalize_thumbprint(site.certificate_hash) if site else None
    sys_hash = normalize_thumbprint(netsh.certificate_hash) if netsh else None
    parts = [
        f"IIS '{BACKEND_SITE}' https {site.binding_information} certificateHash {iis_hash or '(none)'}"
        if site
        else f"IIS '{BACKEND_SITE}': no https binding on 444",
        f"http.sys {BACKEND_IPPORT} Certificate Hash {sys_hash or '(none)'}, Application ID "
        f"{netsh.application_id or '(none)'}, store {netsh.store_name or '(none)'}"
        if netsh
        else f"http.sys: no SSL binding for {BACKEND_IPPORT}",
    ]
    if iis_hash and sys_hash and iis_hash != sys_hash:
        parts.append(f"they disagree (IIS {iis_hash}, http.sys {sys_hash}); judged http.sys, which TLS serves")
    # The store named by the binding whose thumbprint is judged.
    store = netsh.store_name if sys_hash and netsh else (site.certificate_store if site else None)
    return sys_hash or iis_hash, store, "; ".join(parts)


def _other_store(store: str | None) -> str | None:
    """The store a binding names when it is not LocalMachine\\My, which is the only one the probe reads. Unnamed
    (IIS leaves it empty, netsh prints "(null)") means My."""
    name = (store or "").strip()
    return None if name.lower() in ("", "my", "(null)") else name


def _unseen(server: ExchangeServer, thumbprint: str, store: str, where: str) -> str:
    return (
        f"{where} on {server.name} names {thumbprint} in LocalMachine\\{store}; the probe reads only "
        "LocalMachine\\My, so that certificate could not be checked"
    )


def exchange_certificate(
    server: ExchangeServer, probe: ServerProbe, now: datetime | None
) -> tuple[StoreCertificate, CertificateInfo] | None:
    """The server's own self-signed "Microsoft Exchange" certificate, usable on 444: with its key, naming the
    host, valid at `now` (any date when None). The latest-expiring one when there are several."""
    candidates = []
    for cert in probe.certificates:
        if cert.friendly_name.strip().lower() != EXCHANGE_FRIENDLY_NAME.lower() or not cert.has_private_key:
            continue
        try:
            info = certificate_info(cert.der)
        except CertificateError:
            continue
        if (
            info.self_signed
            and (now is None or info.is_valid_at(now))
            and any(info.matches_host(h) for h in host_names(server))
        ):
            candidates.append((cert, info))
    return max(candidates, key=lambda pair: pair[1].not_after, default=None)


def _new_self_signed(server: ExchangeServer, options: str, assign: str = "") -> str:
    """New-ExchangeCertificate for the server's own "Microsoft Exchange" certificate, as setup makes it."""
    names = ",".join(quote(name) for name in host_names(server))
    subject = quote(f"CN={server.host_name}")
    return (
        f"{assign}New-ExchangeCertificate -Server {argument(server.name)} -SubjectName {subject} -DomainName {names} "
        f'-FriendlyName "{EXCHANGE_FRIENDLY_NAME}" {options}'
    )


def bind_backend_fix(server: ExchangeServer, probe: ServerProbe, now: datetime | None) -> str:
    """Bind the self-signed "Microsoft Exchange" certificate to the Exchange Back End site on 444, then iisreset."""
    site, netsh = _backend_bindings(probe)
    where = f"# On {comment(server.name)} ({comment(server.fqdn or server.name)}), elevated PowerShell:"
    own = exchange_certificate(server, probe, now)
    if own is not None:
        # describe() carries the certificate's subject and names, which whoever made the certificate chose.
        lines = [where, f'# the self-signed "{EXCHANGE_FRIENDLY_NAME}" certificate: {comment(own[1].describe())}']
        # The thumbprint is the SHA-1 of the DER, computed here: hex digits only.
        thumbprint, ps_thumbprint = own[1].thumbprint, literal(own[1].thumbprint)
    else:
        lines = [
            where,
            f'# no valid self-signed "{EXCHANGE_FRIENDLY_NAME}" certificate naming the host is in the store: create '
            "one (Exchange Management Shell; answer N if asked to overwrite the default SMTP certificate)",
            _new_self_signed(server, "-KeySize 2048", assign="$cert = "),
        ]
        thumbprint, ps_thumbprint = "$($cert.Thumbprint)", "$cert.Thumbprint"
    if netsh is not None:
        # An existing http.sys binding makes IIS's AddSslCertificate fail; update it in place, keeping its app ID.
        # The app ID comes from the server (http.sys's AppId): only a GUID is passed on, anything else is not one.
        appid = netsh.application_id or IIS_APPID
        if not _GUID.fullmatch(appid):
            lines.append(f"# http.sys reported application ID {comment(appid)}, not a GUID: IIS's is used instead")
            appid = IIS_APPID
        lines.append(
            f"netsh http update sslcert ipport={BACKEND_IPPORT} certhash={thumbprint} "
            f"appid={literal(appid)} certstorename=MY"
        )
    else:
        lines.append("Import-Module WebAdministration")
        if site is None:
            lines.append(f"New-WebBinding -Name '{BACKEND_SITE}' -Protocol https -Port 444 -IPAddress '*'")
        lines.append(
            f"(Get-WebBinding -Name '{BACKEND_SITE}' -Protocol https -Port 444)"
            f".AddSslCertificate({ps_thumbprint}, 'My')"
        )
    lines.append("iisreset")
    return "\n".join(lines)


def backend_binding_exists(server: ExchangeServer, probe: ServerProbe | Unavailable) -> Verdict:
    """BE-01: the Exchange Back End site has an https binding on port 444."""
    if (skip := _not_mailbox(server)) is not None:
        return skip
    probed = available(probe)
    site, _ = _backend_bindings(probed)
    if site is not None:
        return Verdict.passed(
            f"'{BACKEND_SITE}' on {server.name} has https binding {site.binding_information} "
            f"(certificateHash {normalize_thumbprint(site.certificate_hash) or '(none)'})",
            binding=site.binding_information,
        )
    found = [f"{b.protocol} {b.binding_information}" for b in probed.bindings if b.site.lower() == BACKEND_SITE.lower()]
    return Verdict.failed(
        f"'{BACKEND_SITE}' on {server.name} has no https binding on 444; its bindings: {', '.join(found) or 'none'}",
        # BE-01 has no `now`: pick the latest-expiring self-signed certificate; BE-02 judges its dates.
        bind_backend_fix(server, probed, None),
        bindings=found,
    )


def _name_check(info: CertificateInfo, names: tuple[str, ...]) -> tuple[str | None, str]:
    for name in names:
        if (pattern := info.matching_name(name)) is not None:
            return name, f"checked {', '.join(names)}: {name} matched by {pattern}"
    return None, f"checked {', '.join(names)}: none matched its names {', '.join(info.reference_names) or '(none)'}"


def backend_certificate_valid(server: ExchangeServer, probe: ServerProbe | Unavailable, now: datetime) -> Verdict:
    """BE-02: the certificate bound to 0.0.0.0:444 is in the store, not expired, and names the host or FQDN."""
    if (skip := _not_mailbox(server)) is not None:
        return skip
    probed = available(probe)
    site, netsh = _backend_bindings(probed)
    thumbprint, store, bindings = _bound(site, netsh)
    details: dict[str, object] = {"bound_thumbprint": thumbprint, "bindings": bindings}
    if thumbprint is None:
        return Verdict.failed(
            f"No certificate is bound to 444 on {server.name}: {bindings}",
            bind_backend_fix(server, probed, now),
            **details,
        )
    if (elsewhere := _other_store(store)) is not None:
        raise FactUnavailable(_unseen(server, thumbprint, elsewhere, "the binding on 444") + f": {bindings}")
    cert = find_in_store(probed, thumbprint)
    if cert is None:
        return Verdict.failed(
            f"The certificate bound to 444, {thumbprint}, is not in {server.name}'s LocalMachine\\My: {bindings}",
            bind_backend_fix(server, probed, now),
            **details,
        )
    info = store_info(cert, server.name)
    matched, checked = _name_check(info, host_names(server))
    problems = [] if info.is_valid_at(now) else [info.validity(now)]
    if matched is None:
        problems.append("names neither the host name nor the FQDN")
    if not cert.has_private_key:
        problems.append("its private key is not in the store")
    evidence = f"{bindings}. Bound certificate: {info.describe()}; {checked}"
    details.update(certificate=info.describe(), checked=list(host_names(server)))
    if problems:
        fix = bind_backend_fix(server, probed, now)
        return Verdict.failed(f"{evidence}. Problem: {'; '.join(problems)}", fix, **details)
    return Verdict.passed(f"{evidence}; {info.validity(now)}", **details)


def backend_presents_valid_certificate(
    server: ExchangeServer, probe: ServerProbe | Unavailable, handshake: Handshake | Unavailable, now: datetime
) -> Verdict:
    """BE-03: a TLS handshake to the FQDN on 444 presents a certificate valid for it now, the one bound there."""
    if (skip := _not_mailbox(server)) is not None:
        return skip
    probed, hello = available(probe), available(handshake)
    try:
        info = certificate_info(hello.der)
    except CertificateError as exc:
        raise FactUnavailable(f"the certificate {server.name} presented on {hello.port} does not parse: {exc}") from exc
    fqdn = server.fqdn or hello.host
    thumbprint, _store, bindings = _bound(*_backend_bindings(probed))
    matched, checked = _name_check(info, (fqdn,))
    problems = [] if info.is_valid_at(now) else [info.validity(now)]
    if matched is None:
        problems.append(f"it does not name {fqdn}")
    differs = thumbprint != info.thumbprint
    if differs:
        problems.append(
            f"it is not the bound certificate: presented {info.thumbprint}, bound {thumbprint or '(none)'} (the "
            "binding changed without a restart, or a middle box answers on 444)"
        )
    evidence = (
        f"TLS to {hello.host} ({hello.address}:{hello.port}, {hello.tls_version or 'TLS'}) presented: {info.describe()}"
        f"; {checked}; {bindings}"
    )
    details = {"presented": info.thumbprint, "bound": thumbprint, "fqdn": fqdn}
    if not problems:
        return Verdict.passed(f"{evidence}; {info.validity(now)}", **details)
    bound = find_in_store(probed, thumbprint) if thumbprint else None
    bound_info = store_info(bound, server.name) if bound else None
    if differs and bound_info is not None and bound_info.is_valid_at(now) and bound_info.matches_host(fqdn):
        # The binding itself is right: make IIS serve it, then look for what else answers on 444.
        fix = (
            f"# On {comment(server.name)}, elevated:\niisreset\n# If {comment(hello.address)}:444 still presents "
            f"{info.thumbprint}, a load balancer or TLS inspection device answers there: send back-end traffic "
            f"straight to {comment(fqdn)}."
        )
    else:
        fix = bind_backend_fix(server, probed, now)
    return Verdict.failed(f"{evidence}. Problem: {'; '.join(problems)}", fix, **details)


@dataclass(frozen=True)
class _Bound:
    """One IIS or http.sys binding of a certificate on 443/444: how the evidence names it, the store it names, and
    for a host-name (SNI) binding the http.sys endpoint (host:port) and application ID its fix needs."""

    where: str
    store: str | None
    port: int
    sni: str | None = None
    app_id: str | None = None


def _iis_bound(probe: ServerProbe) -> dict[str, list[_Bound]]:
    """Thumbprint -> where it is bound on 443/444, from IIS site bindings and http.sys."""
    bound: dict[str, list[_Bound]] = {}
    http_sys = {b.ip_port.lower(): b for b in probe.ssl_bindings}
    for site in probe.bindings:
        if site.protocol.lower() == "https" and site.port in (443, 444) and site.certificate_hash:
            host = site.binding_information.split(":", 2)[2] if site.binding_information.count(":") >= 2 else ""
            sni = f"{host}:{site.port}" if host else None
            app_id = http_sys[sni.lower()].application_id if sni and sni.lower() in http_sys else None
            entry = _Bound(f"IIS '{site.site}' https {site.binding_information}", site.certificate_store, site.port,
                           sni, app_id)  # fmt: skip
            bound.setdefault(normalize_thumbprint(site.certificate_hash) or "", []).append(entry)
    for binding in probe.ssl_bindings:
        port = binding.ip_port.rsplit(":", 1)[-1]
        if port in ("443", "444") and binding.certificate_hash:
            sni = binding.ip_port if binding.kind == "hostnameport" else None
            entry = _Bound(f"http.sys {binding.ip_port}", binding.store_name, int(port), sni, binding.application_id)
            bound.setdefault(normalize_thumbprint(binding.certificate_hash) or "", []).append(entry)
    return bound


def _covers(new: CertificateInfo, old: CertificateInfo) -> bool:
    """Does `new` carry every name of `old` (a renewal)? A wildcard covers itself and the names under it."""
    return bool(old.reference_names) and all(
        any(mine.lower() == name.lower() or dns_name_matches(mine, name) for mine in new.reference_names)
        for name in old.reference_names
    )


def _replacement(server: ExchangeServer, probe: ServerProbe, old: CertificateInfo | None, now: datetime) -> str | None:
    """A valid certificate with its key that covers every name of the expired one (its renewal), else the
    server's own "Microsoft Exchange" certificate."""
    best: CertificateInfo | None = None
    for cert in probe.certificates if old else ():
        try:
            info = certificate_info(cert.der)
        except CertificateError:
            continue
        if cert.has_private_key and info.is_valid_at(now) and _covers(info, old):
            best = info if best is None or info.not_after > best.not_after else best
    if best is not None:
        return best.thumbprint
    own = exchange_certificate(server, probe, now)
    return own[1].thumbprint if own else None


def iis_certificates_not_expired(server: ExchangeServer, probe: ServerProbe | Unavailable, now: datetime) -> Verdict:
    """GATE-01: no certificate bound in IIS (443, 444) has expired or is missing, or CU setup fails on it."""
    if server.is_edge:
        return Verdict.not_applicable(f"{server.name} is an Edge Transport server: CU setup binds no IIS certificate")
    probed = available(probe)
    bound = _iis_bound(probed)
    if not bound:
        return Verdict.passed(f"No certificate is bound on 443 or 444 on {server.name}", bound={})
    problems, fixes, seen, unseen = [], [], [], []
    for thumbprint, bindings in sorted(bound.items()):
        where = [b.where for b in bindings]
        seen.append(f"{thumbprint} ({', '.join(where)})")
        # Looked for in My when any of its bindings uses My; bound only from another store, it cannot be seen.
        elsewhere = [b.store for b in bindings if _other_store(b.store) is not None]
        if len(elsewhere) == len(bindings):
            unseen.append(_unseen(server, thumbprint, " or ".join(dict.fromkeys(elsewhere)), ", ".join(where)))
            continue
        cert = find_in_store(probed, thumbprint)
        info = store_info(cert, server.name) if cert else None
        if info is not None and not info.is_expired(now):
            continue
        state = f"expired: {info.describe()}" if info else "not in LocalMachine\\My"
        problems.append(f"{', '.join(where)} → {thumbprint}, {state}")
        fixes += _gate01_fixes(server, probed, info, bindings, now)
    details = {"bound": {tp: [b.where for b in bindings] for tp, bindings in bound.items()}}
    if problems:
        fix = "# Bind a valid certificate before running setup.\n" + "\n".join(dict.fromkeys(fixes))
        notes = [f"could not be checked: {u}" for u in unseen]
        return Verdict.failed(f"On {server.name}: " + "; ".join([*problems, *notes]), fix, unseen=unseen, **details)
    if unseen:
        raise FactUnavailable("; ".join(unseen))
    return Verdict.passed(f"Bound on {server.name}, none expired: {'; '.join(seen)}", **details)


def _gate01_fixes(
    server: ExchangeServer, probed: ServerProbe, info: CertificateInfo | None, bindings: list[_Bound], now: datetime
) -> list[str]:
    fixes = []
    if any(b.port == 444 for b in bindings):
        fixes.append(bind_backend_fix(server, probed, now))
    # A host-name (SNI) binding is its own http.sys entry: Enable-ExchangeCertificate rebinds *:443 only.
    sni = {b.sni: b.app_id for b in bindings if b.port == 443 and b.sni}
    plain = any(b.port == 443 and not b.sni for b in bindings)
    new = _replacement(server, probed, info, now) if sni or plain else None
    for endpoint, app_id in sni.items():
        if new is None:
            fixes.append(
                f"# No valid certificate for the host-name binding {comment(endpoint)} in {comment(server.name)}'s "
                "store: bind a renewed one there (IIS Manager, the site's https binding for that host name)"
            )
            continue
        # The app ID is read from the server: only a GUID is passed on.
        app_id = app_id if app_id and _GUID.fullmatch(app_id) else IIS_APPID
        fixes.append(
            f"netsh http update sslcert {argument('hostnameport=' + endpoint)} certhash={new} "
            f"appid={literal(app_id)} certstorename=MY"
        )
    if plain:
        fixes.append(
            f"Enable-ExchangeCertificate -Server {argument(server.name)} -Thumbprint {argument(new)} -Services IIS "
            "-Force\niisreset"
            if new
            else f"# No valid certificate for 443 in {comment(server.name)}'s store: bind a new self-signed one "
            "for setup (clients will warn until a renewed CA-issued certificate is enabled)\n"
            + _new_self_signed(server, "-Services IIS")
            + "\niisreset"
        )
    return fixes
