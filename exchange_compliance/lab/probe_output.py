"""What collect/probe.ps1 prints on a lab server: the server's state rendered as Windows would render it.

Windows PowerShell 5.1 `ConvertTo-Json -Compress` (JavaScriptSerializer), .NET's X500 name rendering and
round-trip dates, IIS's Get-WebBinding and `netsh http show sslcert` as English Windows Server prints them.
Only the suite's probe is answered this way; the lab is not a PowerShell interpreter.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from .certs import dns_name_list, windows_name

# IIS registers its https bindings with http.sys under this application ID.
IIS_APP_ID = "{4dc3e181-e14b-4a21-b022-59fc669b0914}"
BACKEND_SITE = "Exchange Back End"
FRONTEND_SITE = "Default Web Site"
# What netsh prints (after its header) when http.sys has no binding for the ipport: ERROR_FILE_NOT_FOUND.
NETSH_NOT_FOUND = "The system cannot find the file specified."


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
    version: str  # Exchange build, e.g. "15.2.1544.4": picks the Windows release netsh output follows
    boot: str  # LastBootUpTime in round-trip format, e.g. "2026-11-20T03:04:05.1234567Z"
    store: tuple[StoreEntry, ...] = ()
    has_iis: bool = True  # Edge Transport servers have no IIS
    backend_thumbprint: str | None = None  # the https *:444: binding; None: there is none
    frontend_thumbprint: str | None = None  # the https *:443: binding of Default Web Site
    presented_thumbprint: str | None = None  # what a TLS handshake on 444 presents; None: nothing listens
    presented_has_key: bool = True  # http.sys cannot complete a handshake without the private key
    winrm_thumbprint: str = ""
    latency_ms: int = 0
    unreachable: bool = False

    @property
    def computer_name(self) -> str:
        # $env:COMPUTERNAME: the NetBIOS name, upper-case, at most 15 characters.
        return self.name.upper()[:15]


def render_probe_output(state: ServerState) -> str:
    """Exactly what `powershell -EncodedCommand <probe>` writes to stdout on this server (CRLF-terminated)."""
    return convert_to_json(probe_document(state)) + "\r\n"


def probe_document(state: ServerState) -> dict:
    document: dict = {"probe": 1, "computer": state.computer_name, "boot": state.boot}
    # Cert:\LocalMachine\My lists certificates in the order of their registry keys: by thumbprint.
    document["certificates"] = [_certificate(entry) for entry in sorted(state.store, key=lambda e: e.thumbprint)]
    document["bindings"] = site_bindings(state)
    document["netsh"] = {
        "0.0.0.0:444": netsh_show_sslcert("0.0.0.0:444", state.backend_thumbprint, state.version),
        "0.0.0.0:443": netsh_show_sslcert("0.0.0.0:443", state.frontend_thumbprint, state.version),
    }
    return document


def site_bindings(state: ServerState) -> list[dict]:
    """Get-WebBinding of both sites, as probe.ps1 shapes them; http bindings have empty hash and store.
    Without IIS (Edge) probe.ps1 skips Get-WebBinding: no bindings at all."""
    if not state.has_iis:
        return []

    def binding(site: str, protocol: str, info: str, thumb: str | None = None) -> dict:
        return {
            "site": site,
            "protocol": protocol,
            "info": info,
            "hash": thumb or "",
            "store": "My" if thumb else "",
        }

    rows = [binding(BACKEND_SITE, "http", "*:81:")]
    if state.backend_thumbprint:
        rows.append(binding(BACKEND_SITE, "https", "*:444:", state.backend_thumbprint))
    rows.append(binding(FRONTEND_SITE, "http", "*:80:"))
    if state.frontend_thumbprint:
        rows.append(binding(FRONTEND_SITE, "https", "*:443:", state.frontend_thumbprint))
    return rows


def netsh_show_sslcert(ip_port: str, thumb: str | None, exchange_version: str) -> str:
    """`netsh http show sslcert ipport=...` piped through Out-String: CRLF lines, a trailing CRLF."""
    lines = ["", "SSL Certificate bindings:", "-------------------------", ""]
    if thumb is None:
        lines += [NETSH_NOT_FOUND, ""]
    else:
        fields = [
            ("IP:port", ip_port),
            ("Certificate Hash", thumb.lower()),
            ("Application ID", IIS_APP_ID),
            ("Certificate Store Name", "My"),
            ("Verify Client Certificate Revocation", "Enabled"),
            ("Verify Revocation Using Cached Client Certificate Only", "Disabled"),
            ("Usage Check", "Enabled"),
            ("Revocation Freshness Time", "0"),
            ("URL Retrieval Timeout", "0"),
            ("Ctl Identifier", "(null)"),
            ("Ctl Store Name", "(null)"),
            ("DS Mapper Usage", "Disabled"),
            ("Negotiate Client Certificate", "Disabled"),
        ]
        # Later Windows releases print more flags: 2016 (Exchange 2016/2019) adds these two.
        if not exchange_version.startswith("15.0."):
            fields += [("Reject Connections", "Disabled"), ("Disable HTTP2", "Not Set")]
        # Labels are padded to 29 columns; longer ones are followed by a single space.
        lines += [f"    {label.ljust(max(29, len(label) + 1))}: {value}" for label, value in fields]
        lines += ["", ""]
    return "\r\n".join(lines) + "\r\n"


def round_trip(moment: datetime) -> str:
    """.NET's DateTime.ToUniversalTime().ToString('o'): seven fractional digits and a Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def _certificate(entry: StoreEntry) -> dict:
    cert = x509.load_der_x509_certificate(entry.der)
    return {
        "thumbprint": entry.thumbprint,
        "subject": windows_name(cert.subject),
        "issuer": windows_name(cert.issuer),
        "dns": dns_name_list(cert),
        "notBefore": round_trip(cert.not_valid_before_utc),
        "notAfter": round_trip(cert.not_valid_after_utc),
        "privateKey": entry.has_private_key,
        "friendlyName": entry.friendly_name,
        "raw": base64.b64encode(entry.der).decode("ascii"),
    }


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
