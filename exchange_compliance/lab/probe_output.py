"""What collect/probe.ps1 prints on a lab server: the server's state rendered as Windows would render it.

The server's facts (a ServerProbe, as the probe would find them) are written through the probe's own field
description (collect/probe_fields.py), which says how Windows PowerShell 5.1 prints each value: .NET's X500
name rendering, round-trip dates, Get-WebBinding's strings, http.sys's registry values as hex. Then
`ConvertTo-Json -Compress` (JavaScriptSerializer) and the probe's escape of everything outside ASCII. Only the
suite's probe is answered this way; the lab is not a PowerShell interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from cryptography import x509

from ..collect.probe_fields import PROBE, TIME, round_trip
from ..facts import ServerProbe, SiteBinding, SslCertBinding, StoreCertificate
from .certs import dns_name_list, windows_name

__all__ = ["ServerState", "StoreEntry", "probe_document", "render_probe_output", "round_trip", "server_facts"]

# IIS registers its https bindings with http.sys under this application ID.
IIS_APP_ID = "{4dc3e181-e14b-4a21-b022-59fc669b0914}"
BACKEND_SITE = "Exchange Back End"
FRONTEND_SITE = "Default Web Site"


@dataclass(frozen=True)
class StoreEntry:
    """A certificate in Cert:\\LocalMachine\\My."""

    der: bytes = field(repr=False)
    thumbprint: str
    friendly_name: str
    has_private_key: bool = True


@dataclass(frozen=True)
class ServerState:
    """One lab server as the server process sees it: enough to answer WinRM and TLS like the real one."""

    name: str  # NetBIOS name
    fqdn: str
    address: str
    version: str  # Exchange build, e.g. "15.2.1544.4"
    boot: str  # LastBootUpTime in round-trip format, e.g. "2026-11-20T03:04:05.1234567Z"
    store: tuple[StoreEntry, ...] = ()
    has_iis: bool = True  # Edge Transport servers have no IIS
    backend_thumbprint: str | None = None  # the https *:444: binding; None: there is none
    frontend_thumbprint: str | None = None  # the https *:443: binding of Default Web Site
    presented_thumbprint: str | None = None  # what a TLS handshake on 444 presents; None: nothing listens
    presented_has_key: bool = True  # http.sys cannot complete a handshake without the private key
    winrm_thumbprint: str = ""
    latency_ms: int = 0
    probe_seconds: float = 0.0  # how long the probe's command runs before its output is there
    unreachable: bool = False

    @property
    def computer_name(self) -> str:
        # $env:COMPUTERNAME: the NetBIOS name, upper-case, at most 15 characters.
        return self.name.upper()[:15]


def render_probe_output(state: ServerState) -> str:
    """Exactly what `powershell -EncodedCommand <probe>` writes to stdout on this server (CRLF-terminated)."""
    return ascii_only(convert_to_json(probe_document(state))) + "\r\n"


def probe_document(state: ServerState) -> dict:
    return {"probe": 1, **PROBE.write(server_facts(state))}


def server_facts(state: ServerState) -> ServerProbe:
    """What the probe finds on this server."""
    return ServerProbe(
        computer_name=state.computer_name,
        last_boot=cast(datetime, TIME.read(state.boot, "boot")),
        # Cert:\LocalMachine\My lists certificates in the order of their registry keys: by thumbprint.
        certificates=tuple(_certificate(entry) for entry in sorted(state.store, key=lambda e: e.thumbprint)),
        bindings=site_bindings(state),
        ssl_bindings=http_sys_bindings(state),
    )


def site_bindings(state: ServerState) -> tuple[SiteBinding, ...]:
    """Get-WebBinding of both sites; http bindings have no hash or store. Without IIS (Edge) probe.ps1 skips
    Get-WebBinding: no bindings at all."""
    if not state.has_iis:
        return ()

    def binding(site: str, protocol: str, info: str, thumb: str | None = None) -> SiteBinding:
        return SiteBinding(site, protocol, info, thumb, "My" if thumb else None)

    rows = [binding(BACKEND_SITE, "http", "*:81:")]
    if state.backend_thumbprint:
        rows.append(binding(BACKEND_SITE, "https", "*:444:", state.backend_thumbprint))
    rows.append(binding(FRONTEND_SITE, "http", "*:80:"))
    if state.frontend_thumbprint:
        rows.append(binding(FRONTEND_SITE, "https", "*:443:", state.frontend_thumbprint))
    return tuple(rows)


def http_sys_bindings(state: ServerState) -> tuple[SslCertBinding, ...]:
    """The SslBindingInfo subkeys IIS writes for the sites' https bindings (registry order: by name)."""
    bound = (("0.0.0.0:443", state.frontend_thumbprint), ("0.0.0.0:444", state.backend_thumbprint))
    return tuple(SslCertBinding(ip_port, thumb, IIS_APP_ID, "My") for ip_port, thumb in bound if thumb)


def _certificate(entry: StoreEntry) -> StoreCertificate:
    cert = x509.load_der_x509_certificate(entry.der)
    return StoreCertificate(
        thumbprint=entry.thumbprint,
        subject=windows_name(cert.subject),
        issuer=windows_name(cert.issuer),
        dns_names=tuple(dns_name_list(cert)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        has_private_key=entry.has_private_key,
        friendly_name=entry.friendly_name,
        der=entry.der,
    )


def ascii_only(text: str) -> str:
    """probe.ps1's last step: every character outside ASCII as a JSON \\u escape of each UTF-16 code unit."""
    out = []
    for char in text:
        if char < "\x80":
            out.append(char)
            continue
        encoded = char.encode("utf-16-le")
        out += [f"\\u{int.from_bytes(encoded[i : i + 2], 'little'):04x}" for i in range(0, len(encoded), 2)]
    return "".join(out)


def convert_to_json(value: object) -> str:
    """Windows PowerShell 5.1 `ConvertTo-Json -Compress` (System.Web.Script.Serialization.JavaScriptSerializer)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(_escape(c) for c in value) + '"'
    if isinstance(value, dict):
        return "{" + ",".join(f"{convert_to_json(str(k))}:{convert_to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(convert_to_json(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    # JavaScriptSerializer also escapes the HTML-sensitive characters, in lower-case hex.
    if char < " " or char in "<>&'":
        return f"\\u{ord(char):04x}"
    return char
