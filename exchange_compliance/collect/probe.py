"""The server probe: the one PowerShell script the suite runs on each server, and the parsing of what it prints.

Pure functions only; exchange_compliance.collect.winrm runs the command.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from importlib import resources

from ..facts import ServerProbe, SiteBinding, SslCertBinding, StoreCertificate
from ..names import normalize_thumbprint

# cmd.exe refuses command lines over 8191 characters; pywinrm sends the whole line through it.
CMD_LINE_LIMIT = 8191
PROBE_ARGS_PREFIX = ("-NoProfile", "-NonInteractive", "-EncodedCommand")


class ProbeError(ValueError):
    """The probe's output was not the document it prints."""


def probe_script() -> str:
    return resources.files(__package__).joinpath("probe.ps1").read_text(encoding="utf-8")


def encode_script(script: str) -> str:
    """PowerShell's -EncodedCommand form: base64 of UTF-16LE."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def probe_command() -> tuple[str, list[str]]:
    """The command and arguments pywinrm sends: `powershell -NoProfile -NonInteractive -EncodedCommand ...`."""
    return "powershell", [*PROBE_ARGS_PREFIX, encode_script(probe_script())]


def command_line_length(command: str, args: list[str]) -> int:
    return len(" ".join([command, *args]))


def _parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise ProbeError(f"{what} is not a date: {value!r}")
    try:
        # PowerShell's round-trip format has 7 fractional digits; Python takes 6.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ProbeError(f"{what} is not a date: {value!r}") from exc


def _as_list(value: object) -> list:
    # ConvertTo-Json in PowerShell 5.1 can flatten a one-element array to the element itself.
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse_netsh_sslcert(text: str) -> list[SslCertBinding]:
    """Parse `netsh http show sslcert` output (English labels) into its bindings."""
    entries: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        match = re.match(r"^\s+([A-Za-z][A-Za-z :/]*?)\s+:\s?(.*)$", line)
        if not match:
            continue
        key, value = match.group(1).strip().lower(), match.group(2).strip()
        if key in ("ip:port", "hostname:port", "ccs:port"):
            current = {"ip_port": value}
            entries.append(current)
        elif current is not None:
            current[key] = value
    return [
        SslCertBinding(
            ip_port=entry["ip_port"],
            certificate_hash=normalize_thumbprint(entry.get("certificate hash")),
            application_id=entry.get("application id"),
            store_name=entry.get("certificate store name") or None,
        )
        for entry in entries
    ]


def _certificate(raw: dict, index: int) -> StoreCertificate:
    where = f"certificates[{index}]"
    try:
        der = base64.b64decode(raw["raw"], validate=True)
        return StoreCertificate(
            thumbprint=normalize_thumbprint(raw["thumbprint"]) or "",
            subject=raw.get("subject") or "",
            issuer=raw.get("issuer") or "",
            dns_names=tuple(str(name) for name in _as_list(raw.get("dns"))),
            not_before=_parse_time(raw.get("notBefore"), f"{where}.notBefore"),
            not_after=_parse_time(raw.get("notAfter"), f"{where}.notAfter"),
            has_private_key=bool(raw.get("privateKey")),
            friendly_name=raw.get("friendlyName") or "",
            der=der,
        )
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ProbeError(f"{where} is malformed: {exc}") from exc


def parse_probe_output(stdout: str | bytes) -> ServerProbe:
    """Turn the probe's stdout into a ServerProbe, or raise ProbeError saying what was wrong."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", errors="replace")
    text = stdout.strip().lstrip("\ufeff")
    if not text:
        raise ProbeError("the probe printed nothing")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise ProbeError(f"the probe printed something other than its JSON document: {text[:200]!r}") from None
    if not isinstance(document, dict) or document.get("probe") != 1:
        raise ProbeError(f"the probe printed JSON that is not its document: {text[:200]!r}")
    if "error" in document:
        raise ProbeError(f"the probe failed on the server: {document['error']}")
    try:
        certificates = tuple(_certificate(raw, i) for i, raw in enumerate(_as_list(document["certificates"])))
        bindings = tuple(
            SiteBinding(
                site=raw["site"],
                protocol=raw.get("protocol") or "",
                binding_information=raw.get("info") or "",
                certificate_hash=normalize_thumbprint(raw.get("hash")),
                certificate_store=raw.get("store") or None,
            )
            for raw in _as_list(document.get("bindings"))
        )
        netsh = document.get("netsh") or {}
        ssl_bindings = tuple(b for text in netsh.values() for b in parse_netsh_sslcert(text or ""))
        boot = document.get("boot")
        return ServerProbe(
            computer_name=str(document.get("computer") or ""),
            last_boot=_parse_time(boot, "boot") if boot else None,
            certificates=certificates,
            bindings=bindings,
            ssl_bindings=ssl_bindings,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProbeError(f"the probe document is missing or mangles {exc}") from exc
