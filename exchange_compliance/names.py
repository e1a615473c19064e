"""The vocabulary of names the collectors and the judges share: distinguished names and thumbprints.

Pure string functions on the standard library alone: the judges use them without loading ldap3 or pywinrm, and
every reader of a DN or a thumbprint agrees with every other.
"""

from __future__ import annotations

import re
from itertools import pairwise

# --- thumbprints ---------------------------------------------------------------------------------------------


def normalize_thumbprint(value: str | None) -> str | None:
    """Thumbprints compare case- and space-insensitively (Windows shows them both ways)."""
    if value is None:
        return None
    cleaned = re.sub(r"[\s:\u200e\u200f]", "", value).upper()
    return cleaned or None


# --- distinguished names (RFC 4514) ------------------------------------------------------------------------------
# One helper per job, so that every reader of a DN agrees on where an RDN ends: a comma escaped as `\,` or `\2C`
# is part of a value (`CN=Smith\, John`), and `\\` is an escaped backslash, after which a comma does separate.

_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")


def _separators(dn: str) -> list[int]:
    """Indexes of the commas that separate RDNs (the unescaped ones)."""
    found, i = [], 0
    while i < len(dn):
        if dn[i] == "\\":
            i += 2  # skip the escaped character (of a hex pair, its first digit, which is never a comma)
            continue
        if dn[i] == ",":
            found.append(i)
        i += 1
    return found


def _strip(text: str) -> str:
    r"""Surrounding spaces dropped, but not an escaped trailing one (`CN=x\ `)."""
    text = text.lstrip()
    stripped = text.rstrip()
    if len(stripped) < len(text) and (len(stripped) - len(stripped.rstrip("\\"))) % 2:
        stripped += text[len(stripped)]
    return stripped


def split_dn(dn: str) -> list[str]:
    r"""The RDNs of a DN as written (escapes kept, surrounding spaces dropped):
    `CN=Smith\, John,OU=People,DC=x` -> [`CN=Smith\, John`, `OU=People`, `DC=x`]; [] for ""."""
    if not dn.strip():
        return []
    bounds = [-1, *_separators(dn), len(dn)]
    return [_strip(dn[start + 1 : end]) for start, end in pairwise(bounds)]


def parent_dn(dn: str) -> str:
    """The DN without its first RDN (`CN=EX01,CN=Servers,...` -> `CN=Servers,...`); "" for a one-RDN DN."""
    separators = _separators(dn)
    return _strip(dn[separators[0] + 1 :]) if separators else ""


def unescape_dn_value(value: str) -> str:
    r"""An attribute value as a DN writes it, unescaped: `\,` -> `,`, `\\` -> `\`, `\2C` -> `,` (hex pairs are
    UTF-8 bytes)."""
    if "\\" not in value:
        return value
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "\\" and _HEX_PAIR.fullmatch(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        elif value[i] == "\\" and i + 1 < len(value):
            out += value[i + 1].encode()
            i += 2
        else:
            out += value[i].encode()
            i += 1
    return out.decode("utf-8", errors="replace")


def rdn_value(dn: str) -> str:
    r"""The value of a DN's first RDN, unescaped: `CN=EX01,CN=Servers,...` -> `EX01`, `CN=Smith\, John,...` ->
    `Smith, John`."""
    rdns = split_dn(dn)
    first = rdns[0] if rdns else dn
    _, separator, value = first.partition("=")
    return unescape_dn_value(_strip(value)) if separator else first


def dns_domain_of(dn: str) -> str:
    """The DNS name its DC= components spell: `OU=x,DC=lab,DC=contoso,DC=test` -> `lab.contoso.test`."""
    labels = []
    for rdn in split_dn(dn):
        attribute, _, value = rdn.partition("=")
        if attribute.strip().lower() == "dc":
            labels.append(unescape_dn_value(_strip(value)))
    return ".".join(labels)
