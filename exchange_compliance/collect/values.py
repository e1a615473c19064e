"""Decoding the values Exchange keeps in Active Directory (EXCHANGE_FACTS.md §1-§3). Pure functions."""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime

from ..facts import Version
from ..names import normalize_thumbprint

# otherWellKnownObjects GUIDs on CN=Microsoft Exchange (CSS Get-ExchangeOtherWellKnownObjects.ps1).
WELL_KNOWN_GROUP_GUIDS = {
    "A7D2016C83F003458132789EEB127B84": "exchange_servers",
    "C262A929D691B74A9E068728F8F842EA": "organization_management",
    "EA876A58DB6DD04C9006939818F800EB": "exchange_trusted_subsystem",
}

EXTENDED_RIGHTS = ("ms-Exch-EPI-Token-Serialization", "ms-Exch-EPI-Impersonation", "ms-Exch-EPI-May-Impersonate")


def version_from_serial_number(value: str) -> Version | None:
    """`Version 15.1 (Build 32507.6)` -> 15.1.2507.6: the build is stored with 30000 added (ServerVersion.cs)."""
    major_minor = re.search(r"version (\d+)\.(\d+)", value, re.IGNORECASE)
    build = re.search(r"build (\d+)(?:\.(\d+))?", value, re.IGNORECASE)
    if not major_minor or not build:
        return None
    major, minor = int(major_minor.group(1)), int(major_minor.group(2))
    number = int(build.group(1))
    if major >= 8:
        if number >= 30000:
            number -= 30000
        elif number >= 10000:
            number -= 10000
    revision = int(build.group(2)) if build.group(2) is not None else None
    return Version(major, minor, number, revision)


def version_from_version_number(value: int) -> Version:
    """versionNumber packs major, minor and build; it has no revision."""
    return Version((value >> 22) & 63, (value >> 16) & 63, value & 0x7FFF)


def fqdn_from_network_address(values: list[str]) -> str | None:
    for value in values:
        protocol, _, address = value.partition(":")
        if protocol.lower() == "ncacn_ip_tcp" and address:
            return address
    return None


def auth_thumbprints(values: list[str]) -> tuple[str | None, str | None, str | None]:
    """msExchAuthCertificateThumbprint values `<index>:<thumbprint>` -> (current, previous, next).

    A value without an index prefix is old data and means the current certificate.
    """
    slots: dict[int, str | None] = {}
    for value in values:
        index, sep, thumbprint = value.partition(":")
        if sep and index.strip().isdigit():
            slots[int(index)] = normalize_thumbprint(thumbprint)
        else:
            slots.setdefault(0, normalize_thumbprint(value))
    return slots.get(0), slots.get(1), slots.get(2)


def parse_generalized_time(value: str | bytes | datetime | None) -> datetime | None:
    """`yyyyMMddHHmmss.0Z` (and the other generalized-time forms AD returns) as an aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value.astimezone(UTC) if isinstance(value, datetime) else None
    text = value.decode() if isinstance(value, bytes) else value
    match = re.fullmatch(r"(\d{14})(?:[.,]\d+)?(Z|[+-]\d{4})?", text.strip())
    if not match:
        return None
    moment = datetime.strptime(match.group(1), "%Y%m%d%H%M%S")
    offset = match.group(2)
    if offset and offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        minutes = sign * (int(offset[1:3]) * 60 + int(offset[3:5]))
        return datetime.fromtimestamp(moment.replace(tzinfo=UTC).timestamp() - minutes * 60, UTC)
    return moment.replace(tzinfo=UTC)


def well_known_groups(values: list[str]) -> dict[str, str]:
    """otherWellKnownObjects `B:32:<GUID>:<DN>` -> {"exchange_servers": DN, ...}."""
    groups = {}
    for value in values:
        parts = value.split(":", 3)
        if len(parts) == 4 and parts[0] == "B" and parts[2].upper() in WELL_KNOWN_GROUP_GUIDS:
            groups[WELL_KNOWN_GROUP_GUIDS[parts[2].upper()]] = parts[3]
    return groups


def sid_from_bytes(data: bytes) -> str:
    """A binary SID (MS-DTYP 2.4.2.2) as S-1-...; ValueError if it is not one."""
    if len(data) < 8 or data[0] != 1 or len(data) != 8 + 4 * data[1]:
        raise ValueError(f"not a SID: {data.hex()}")
    authority = int.from_bytes(data[2:8], "big")
    subs = struct.unpack(f"<{data[1]}I", data[8:])
    return "S-1-" + "-".join(str(n) for n in (authority, *subs))


def sid_to_bytes(sid: str) -> bytes:
    parts = sid.split("-")
    if len(parts) < 3 or parts[0].upper() != "S" or parts[1] != "1":
        raise ValueError(f"not a SID: {sid}")
    subs = [int(p) for p in parts[3:]]
    return bytes([1, len(subs)]) + int(parts[2]).to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
