"""EWS-01: the EWS (Default Web Site) virtual directory's URLs (seed 002: hybrid needs EWS reachable over https)."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlsplit

from ..facts import Directory, ExchangeServer, VirtualDirectory
from .powershell import argument, quote
from .verdict import Verdict

EWS_VDIR = "EWS (Default Web Site)"
EWS_PATH = "/EWS/Exchange.asmx"


def is_https_url(url: str | None) -> bool:
    """An absolute https URL with a host: what Exchange hands to clients and to the hybrid side."""
    if not url:
        return False
    parts = urlsplit(url.strip())
    return parts.scheme.lower() == "https" and bool(parts.hostname)


def _belongs_to(vdir: VirtualDirectory, server: ExchangeServer) -> bool:
    # The collector may record the server by name or by DN; the vdir's own DN sits under the server object.
    owner = vdir.server.lower()
    return owner in (server.name.lower(), server.dn.lower()) or vdir.dn.lower().endswith("," + server.dn.lower())


def ews_directory(directory: Directory, server: ExchangeServer) -> VirtualDirectory | None:
    return next(
        (v for v in directory.virtual_directories if v.name.lower() == EWS_VDIR.lower() and _belongs_to(v, server)),
        None,
    )


def _org_external_url(directory: Directory, server: ExchangeServer) -> str | None:
    """The external EWS URL the other servers publish (the org's namespace), the most common one."""
    urls = Counter(
        v.external_url.strip()
        for v in directory.virtual_directories
        if v.name.lower() == EWS_VDIR.lower() and not _belongs_to(v, server) and is_https_url(v.external_url)
    )
    return urls.most_common(1)[0][0] if urls else None


def ews_urls_set(server: ExchangeServer, directory: Directory, hybrid: bool) -> Verdict:
    """EWS-01: https InternalUrl on the server's EWS (Default Web Site), and https ExternalUrl where hybrid."""
    if server.is_edge or not server.is_client_access:
        return Verdict.not_applicable(
            f"{server.name} has no Client Access role ({', '.join(server.role_names) or 'none'}): no EWS front end"
        )
    vdir = ews_directory(directory, server)
    # Both URLs are built from AD (the FQDN, another server's ExternalUrl): argument() keeps a plain URL bare.
    internal_fix = argument(f"https://{server.fqdn or server.name}{EWS_PATH}")
    external = _org_external_url(directory, server)
    external_fix = argument(external) if external else None
    if vdir is None:
        return Verdict.failed(
            f"{server.name} has no '{EWS_VDIR}' virtual directory in AD",
            f'New-WebServicesVirtualDirectory -Server {argument(server.name)} -WebSiteName "Default Web Site" '
            f"-InternalUrl {internal_fix}" + (f" -ExternalUrl {external_fix}" if hybrid and external_fix else ""),
            hybrid=hybrid,
        )
    found = f"InternalUrl {vdir.internal_url or '(not set)'}, ExternalUrl {vdir.external_url or '(not set)'}"
    details = {"vdir": vdir.dn, "internal_url": vdir.internal_url, "external_url": vdir.external_url, "hybrid": hybrid}
    problems, arguments, notes = [], [], []
    if not is_https_url(vdir.internal_url):
        problems.append("InternalUrl is not an https URL")
        arguments.append(f"-InternalUrl {internal_fix}")
    if hybrid and not is_https_url(vdir.external_url):
        problems.append("the org is hybrid and ExternalUrl is not an https URL")
        if external_fix is None:
            # Nothing in the org says what the published name is; the FQDN at least makes the command run.
            external_fix = internal_fix
            notes.append(
                "# No other server publishes an external EWS URL: replace the host with the name published to the "
                "internet."
            )
        arguments.append(f"-ExternalUrl {external_fix}")
    if not problems:
        scope = "" if hybrid else " (ExternalUrl not required: the org is not hybrid)"
        return Verdict.passed(f"'{EWS_VDIR}' on {server.name}: {found}{scope}", **details)
    identity = f"{server.name}\\{EWS_VDIR}"  # SERVER\vdir is one value, quoted whole
    fix = "\n".join([*notes, f"Set-WebServicesVirtualDirectory -Identity {quote(identity)} " + " ".join(arguments)])
    return Verdict.failed(f"'{EWS_VDIR}' on {server.name}: {found}: " + "; ".join(problems), fix, **details)
