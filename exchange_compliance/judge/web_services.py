"""EWS-01: the EWS (Default Web Site) virtual directory's URLs (hybrid needs EWS reachable over https: "O365 Hybrid
Wizard - Hybrid Agent Fails to Validate")."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..facts import Directory, ExchangeServer, VirtualDirectory
from .memo import IdentityCache
from .powershell import argument, comment, quote
from .verdict import Verdict

EWS_VDIR = "EWS (Default Web Site)"
EWS_PATH = "/EWS/Exchange.asmx"


def is_https_url(url: str | None) -> bool:
    """An absolute https URL with a host: what Exchange hands to clients and to the hybrid side. A value that does
    not parse as a URL at all (`https://[x`, from AD as anyone typed it) is not one."""
    if not url:
        return False
    try:
        parts = urlsplit(url.strip())
        return parts.scheme.lower() == "https" and bool(parts.hostname)
    except ValueError:
        return False


@dataclass(frozen=True)
class _EwsIndex:
    by_server: dict[str, VirtualDirectory]  # server name, lower-case -> its EWS (Default Web Site)
    external: Counter[str]  # the https ExternalUrls the servers publish, and how many publish each


def _build(directory: Directory) -> _EwsIndex:
    by_server: dict[str, VirtualDirectory] = {}
    # The collector records the owning server by name (the CN above CN=Protocols): that is the one ownership rule.
    for vdir in directory.virtual_directories:
        if vdir.name.lower() == EWS_VDIR.lower():
            by_server.setdefault(vdir.server.lower(), vdir)
    external = Counter(
        v.external_url.strip() for v in by_server.values() if v.external_url and is_https_url(v.external_url)
    )
    return _EwsIndex(by_server, external)


# Built once per Directory: EWS-01 looks up every Client Access server's directory and the org's published URL.
_index: IdentityCache[Directory, _EwsIndex] = IdentityCache(_build)


def _org_external_url(index: _EwsIndex) -> str | None:
    """The external EWS URL the servers publish (the org's namespace): the most common one, the first
    alphabetically among equals, so that the fix is the same whatever order AD returned the servers in. Asked
    only for a server without an https ExternalUrl of its own, so that server never counts for itself."""
    published = [(-count, url) for url, count in index.external.items()]
    return min(published)[1] if published else None


def ews_urls_set(server: ExchangeServer, directory: Directory, hybrid: bool) -> Verdict:
    """EWS-01: https InternalUrl on the server's EWS (Default Web Site), and https ExternalUrl where hybrid."""
    if server.is_edge or not server.is_client_access:
        return Verdict.not_applicable(
            f"{server.name} has no Client Access role ({', '.join(server.role_names) or 'none'}): no EWS front end"
        )
    index = _index(directory)
    vdir = index.by_server.get(server.name.lower())
    if vdir is None:
        return _missing(server, index, hybrid)
    found = f"InternalUrl {vdir.internal_url or '(not set)'}, ExternalUrl {vdir.external_url or '(not set)'}"
    details = {"vdir": vdir.dn, "internal_url": vdir.internal_url, "external_url": vdir.external_url, "hybrid": hybrid}
    problems = []
    if not is_https_url(vdir.internal_url):
        problems.append("InternalUrl is not an https URL")
    if hybrid and not is_https_url(vdir.external_url):
        problems.append("the org is hybrid and ExternalUrl is not an https URL")
    if not problems:
        scope = "" if hybrid else " (ExternalUrl not required: the org is not hybrid)"
        return Verdict.passed(f"'{EWS_VDIR}' on {server.name}: {found}{scope}", **details)
    arguments, notes = [], []
    if not is_https_url(vdir.internal_url):
        arguments.append(f"-InternalUrl {_internal_url(server)}")
    if hybrid and not is_https_url(vdir.external_url):
        external = _org_external_url(index)
        if external is not None:
            arguments.append(f"-ExternalUrl {argument(external)}")
        else:
            notes = _choose_external(server)
    identity = f"{server.name}\\{EWS_VDIR}"  # SERVER\vdir is one value, quoted whole
    commands = (
        [f"Set-WebServicesVirtualDirectory -Identity {quote(identity)} " + " ".join(arguments)] if arguments else []
    )
    return Verdict.failed(
        f"'{EWS_VDIR}' on {server.name}: {found}: " + "; ".join(problems), "\n".join([*commands, *notes]), **details
    )


def _internal_url(server: ExchangeServer) -> str:
    # Built from AD (the FQDN): argument() keeps a plain URL bare.
    return argument(f"https://{server.fqdn or server.name}{EWS_PATH}")


def _choose_external(server: ExchangeServer) -> list[str]:
    """No server publishes an external EWS URL, and nothing else in the facts names the host published to the
    internet: it has to be chosen. Said so, with the command to run once it is, as a comment (not runnable)."""
    identity = quote(f"{server.name}\\{EWS_VDIR}")
    return [
        "# ExternalUrl: no server in the org publishes an external EWS URL, so the name published to the internet "
        "must be chosen (the hybrid side reaches EWS through it); then run:",
        f"#   Set-WebServicesVirtualDirectory -Identity {comment(identity)} -ExternalUrl "
        f"https://<published name>{EWS_PATH}",
    ]


def _missing(server: ExchangeServer, index: _EwsIndex, hybrid: bool) -> Verdict:
    external = _org_external_url(index) if hybrid else None
    command = (
        f'New-WebServicesVirtualDirectory -Server {argument(server.name)} -WebSiteName "Default Web Site" '
        f"-InternalUrl {_internal_url(server)}" + (f" -ExternalUrl {argument(external)}" if external else "")
    )
    notes = _choose_external(server) if hybrid and external is None else []
    return Verdict.failed(
        f"{server.name} has no '{EWS_VDIR}' virtual directory in AD", "\n".join([command, *notes]), hybrid=hybrid
    )
