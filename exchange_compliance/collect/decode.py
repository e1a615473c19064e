"""The attributes the read asks for, and the decoders of the entries into the fact dataclasses: every value read
from AD is data, and one that cannot be decoded is a DirectoryError naming its entry, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from ..facts import ExchangeServer, Principal
from ..names import rdn_value
from . import values
from .ldap import DirectoryError

SERVER_ATTRIBUTES = [
    "cn",
    "networkAddress",
    "msExchCurrentServerRoles",
    "serialNumber",
    "versionNumber",
    "msExchServerSite",
    "nTSecurityDescriptor",
]
T = TypeVar("T")
_PRINCIPAL = ["objectSid", "sAMAccountName", "cn", "memberOf", "sIDHistory", "objectClass"]
COMPUTER_ATTRIBUTES = [*_PRINCIPAL, "dNSHostName", "primaryGroupID"]
# `member` gives the edges (which of the principals asked for a group holds); groupType, its scope.
GROUP_ATTRIBUTES = [*_PRINCIPAL, "member", "groupType"]
TOKEN_ATTRIBUTES = ["tokenGroups", "tokenGroupsGlobalAndUniversal"]


def sids(entry: dict, name: str) -> tuple[str, ...] | None:
    listed = entry.get("raw_attributes", {}).get(name)
    return None if not listed else tuple(values.sid_from_bytes(bytes(value)) for value in listed)


def sid_filter(sid: str) -> str:
    return "".join(f"\\{byte:02x}" for byte in values.sid_to_bytes(sid))


def raw(entry: dict, name: str) -> bytes | None:
    listed = entry.get("raw_attributes", {}).get(name) or []
    return bytes(listed[0]) if listed else None


def texts(entry: dict, name: str) -> list[str]:
    return [bytes(v).decode("utf-8", errors="replace") for v in entry.get("raw_attributes", {}).get(name) or []]


def text(entry: dict, name: str) -> str | None:
    found = texts(entry, name)
    return found[0] if found else None


def server(entry: dict, _kind: str = "") -> ExchangeServer:
    serial = text(entry, "serialNumber")
    version = values.version_from_serial_number(serial) if serial else None
    number = text(entry, "versionNumber")
    if version is None and number and number.lstrip("-").isdigit():
        version = values.version_from_version_number(int(number))
    roles = text(entry, "msExchCurrentServerRoles")
    site = text(entry, "msExchServerSite")
    return ExchangeServer(
        name=text(entry, "cn") or rdn_value(entry["dn"]),
        dn=entry["dn"],
        fqdn=values.fqdn_from_network_address(texts(entry, "networkAddress")),
        roles=int(roles) if roles and roles.lstrip("-").isdigit() else 0,
        version=version,
        site=rdn_value(site) if site else None,
        security_descriptor=raw(entry, "nTSecurityDescriptor"),
    )


def decoded(decode: Callable[..., T], entry: dict, kind: str) -> T:
    """`decode(entry, kind)`, or a DirectoryError naming the entry: never a traceback out of the collector.

    A principal whose objectSid cannot be read (withheld from the audit account, or not a SID) stops the read
    rather than being skipped: every token and membership chain through it would be unknown, and judging
    without it could pass a server whose computer account is in fact denied. The message names the entry, so
    the read permission (or the object) can be fixed.
    """
    try:
        return decode(entry, kind)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise DirectoryError(f"{entry.get('dn') or 'an entry'}: cannot read this {kind}: {exc}") from None


def next_effective(entry: dict, _kind: str) -> datetime | None:
    return values.parse_generalized_time(text(entry, "msExchAuthNextEffectiveDate"))


def principal(entry: dict, kind: str) -> Principal:
    raw_sid = raw(entry, "objectSid")
    if not raw_sid:
        raise ValueError("no objectSid (not readable by the audit account?)")
    sid = values.sid_from_bytes(raw_sid)
    primary = text(entry, "primaryGroupID")
    group_type = text(entry, "groupType")
    history = entry.get("raw_attributes", {}).get("sIDHistory") or []
    return Principal(
        dn=entry["dn"],
        sid=sid,
        name=text(entry, "sAMAccountName") or text(entry, "cn") or rdn_value(entry["dn"]),
        member_of=tuple(texts(entry, "memberOf")),
        kind=kind,
        dns_host_name=text(entry, "dNSHostName"),
        primary_group_sid=f"{sid.rsplit('-', 1)[0]}-{primary}" if primary and primary.isdigit() else None,
        group_type=int(group_type) & 0xFFFFFFFF if group_type and group_type.lstrip("-").isdigit() else None,
        sid_history=tuple(values.sid_from_bytes(bytes(value)) for value in history),
    )
