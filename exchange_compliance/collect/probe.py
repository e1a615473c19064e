"""The server probe: the one PowerShell script the suite runs on each server, and the parsing of what it prints
(through the description of its fields in probe_fields.py).

Pure functions only; exchange_compliance.collect.winrm runs the command.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from typing import cast

from ..facts import ServerProbe
from .probe_fields import PROBE, ProbeError

__all__ = ["ProbeError", "parse_probe_output", "probe_command", "probe_script"]

# cmd.exe refuses command lines over 8191 characters; pywinrm sends the whole line through it.
CMD_LINE_LIMIT = 8191
PROBE_ARGS_PREFIX = ("-NoProfile", "-NonInteractive", "-EncodedCommand")


def probe_script() -> str:
    """probe.ps1 as it is sent: without its comment lines and indentation, which PowerShell does not need and
    which would cost command line (each character is about 2.7 on the line, after UTF-16 and base64)."""
    text = resources.files(__package__).joinpath("probe.ps1").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("#"))


def encode_script(script: str) -> str:
    """PowerShell's -EncodedCommand form: base64 of UTF-16LE."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def probe_command() -> tuple[str, list[str]]:
    """The command and arguments pywinrm sends: `powershell -NoProfile -NonInteractive -EncodedCommand ...`."""
    return "powershell", [*PROBE_ARGS_PREFIX, encode_script(probe_script())]


def command_line_length(command: str, args: list[str]) -> int:
    return len(" ".join([command, *args]))


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
    return cast(ServerProbe, PROBE.read(document, ""))
