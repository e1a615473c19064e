"""The probe's fields, described once: the JSON key probe.ps1 writes, how Windows PowerShell prints the value,
and the facts dataclass field it fills.

The parser (collect/probe.py) reads the probe's document through this description and the lab's servers
(lab/probe_output.py) write their answer through it, so the two cannot drift apart. Adding a fact from the
servers is: the line in probe.ps1, one `Field` below, the dataclass field in facts.py (with a default, so that
evidence files written before it, the unit factories and the lab's answer need no change).

Nothing here reads display text: every value is one Windows prints the same in every language (registry
values, IIS configuration, certificate properties, round-trip dates).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..facts import ServerProbe, SiteBinding, SslCertBinding, StoreCertificate
from ..names import normalize_thumbprint


class ProbeError(ValueError):
    """The probe's output was not the document it prints."""


@dataclass(frozen=True)
class Kind:
    """How one value travels. `read(value, where)` turns what ConvertTo-Json printed into the fact's value (a
    ProbeError naming `where` when it cannot); `write(fact value)` is what Windows PowerShell prints for it."""

    read: Callable[[object, str], object]
    write: Callable[[object], object]
    record: Record | None = None  # a list of nested objects: what each one is


@dataclass(frozen=True)
class Field:
    key: str  # the key in probe.ps1's [ordered]@{...}
    attr: str  # the facts dataclass field it fills
    kind: Kind
    required: bool = False  # absent or null: the document is not the probe's


@dataclass(frozen=True)
class Record:
    """A JSON object of the probe and the frozen dataclass it becomes."""

    fact: type
    fields: tuple[Field, ...]

    def read(self, raw: object, where: str) -> object:
        if not isinstance(raw, dict):
            raise ProbeError(f"the probe document is missing or mangles {where}: not an object")
        values = {}
        for field in self.fields:
            path = f"{where}.{field.key}" if where else field.key
            value = raw.get(field.key)
            if value is None and field.required:
                raise ProbeError(f"the probe document is missing or mangles {path}")
            values[field.attr] = field.kind.read(value, path)
        return self.fact(**values)

    def write(self, fact: object) -> dict[str, object]:
        """The object probe.ps1 prints for `fact`, keys in the script's order."""
        return {field.key: field.kind.write(getattr(fact, field.attr)) for field in self.fields}


def _text(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise ProbeError(f"{where} is not text: {value!r}")
    return str(value)


def _optional_text(value: object, where: str) -> str | None:
    return _text(value, where) or None


def _thumbprint(value: object, where: str) -> str | None:
    return normalize_thumbprint(_optional_text(value, where))


def _time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ProbeError(f"{where} is not a date: {value!r}")
    try:
        # PowerShell's round-trip format ('o') has 7 fractional digits; Python takes 6.
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        raise ProbeError(f"{where} is not a date: {value!r}") from None


def round_trip(moment: datetime) -> str:
    """.NET's DateTime.ToUniversalTime().ToString('o') (culture-invariant): seven fractional digits and a Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def _base64(value: object, where: str) -> bytes:
    try:
        return base64.b64decode(_text(value, where), validate=True)
    except (binascii.Error, ValueError):
        raise ProbeError(f"{where} is not base64") from None


def as_list(value: object) -> list:
    """ConvertTo-Json in Windows PowerShell 5.1 can flatten a one-element array to the element itself."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _guid_bytes(value: object, where: str) -> str | None:
    """A REG_BINARY GUID (http.sys's AppId) as hex: the 16 bytes of the GUID structure, little-endian fields."""
    text = _optional_text(value, where)
    if text is None:
        return None
    try:
        return "{" + str(uuid.UUID(bytes_le=bytes.fromhex(text))) + "}"
    except ValueError:
        raise ProbeError(f"{where} is not a GUID: {text!r}") from None


def _write_guid_bytes(value: object) -> str | None:
    return uuid.UUID(str(value)).bytes_le.hex().upper() if value else None


def _records(record: Record) -> Kind:
    return Kind(
        read=lambda value, where: tuple(record.read(raw, f"{where}[{i}]") for i, raw in enumerate(as_list(value))),
        write=lambda facts: [record.write(fact) for fact in facts],  # type: ignore[attr-defined]
        record=record,
    )


def _mapped(names: dict[str, str]) -> Kind:
    """A fixed vocabulary (names Windows gives, not display text) mapped to the facts' own words."""
    back = {mine: theirs for theirs, mine in names.items()}

    def read(value: object, where: str) -> str:
        text = _text(value, where)
        if text not in names:
            raise ProbeError(f"{where} is none of {', '.join(names)}: {text!r}")
        return names[text]

    return Kind(read=read, write=lambda value: back[str(value)])


def _same(value: object) -> object:
    return value


TEXT = Kind(_text, _same)
# IIS prints an unset string property as "" (Get-WebBinding's certificateHash of an http binding).
BLANK_IS_NONE = Kind(_optional_text, lambda value: value or "")
# A registry value that is not there is $null.
NULL_IS_NONE = Kind(_optional_text, _same)
THUMBPRINT = Kind(_thumbprint, _same)
BLANK_THUMBPRINT = Kind(_thumbprint, lambda value: value or "")
TIME = Kind(_time, lambda value: round_trip(value))  # type: ignore[arg-type]
OPTIONAL_TIME = Kind(lambda value, where: None if value is None else _time(value, where), lambda v: v and round_trip(v))
FLAG = Kind(lambda value, where: bool(value), _same)
BASE64 = Kind(_base64, lambda value: base64.b64encode(value).decode("ascii"))  # type: ignore[arg-type]
NAMES = Kind(lambda value, where: tuple(_text(v, where) for v in as_list(value)), lambda value: list(value))
GUID_BYTES = Kind(_guid_bytes, _write_guid_bytes)

# --- the description ------------------------------------------------------------------------------------------

CERTIFICATE = Record(
    StoreCertificate,  # Get-ChildItem Cert:\LocalMachine\My
    (
        Field("thumbprint", "thumbprint", THUMBPRINT, required=True),
        Field("subject", "subject", TEXT),  # X500DistinguishedName: CN=, O=... are not translated
        Field("issuer", "issuer", TEXT),
        Field("dns", "dns_names", NAMES),
        Field("notBefore", "not_before", TIME, required=True),
        Field("notAfter", "not_after", TIME, required=True),
        Field("privateKey", "has_private_key", FLAG),
        Field("friendlyName", "friendly_name", TEXT),
        Field("raw", "der", BASE64, required=True),
    ),
)

SITE_BINDING = Record(
    SiteBinding,  # Get-WebBinding of 'Exchange Back End' and 'Default Web Site'
    (
        Field("site", "site", TEXT, required=True),
        Field("protocol", "protocol", TEXT),
        Field("info", "binding_information", TEXT),
        Field("hash", "certificate_hash", BLANK_THUMBPRINT),
        Field("store", "certificate_store", BLANK_IS_NONE),
    ),
)

# http.sys keeps its SSL bindings under HKLM\SYSTEM\CurrentControlSet\Services\HTTP\Parameters, one subkey each
# in three tables; the table says what kind of endpoint the binding is for (netsh's own words for them).
BINDING_TABLES = {"SslBindingInfo": "ipport", "SslSniBindingInfo": "hostnameport", "SslCcsBindingInfo": "ccs"}

SSL_BINDING = Record(
    SslCertBinding,
    (
        Field("table", "kind", _mapped(BINDING_TABLES), required=True),
        # The subkey's name (IP:port, or the port for CCS), or an SNI binding's HostnamePort value.
        Field("key", "ip_port", TEXT, required=True),
        Field("hash", "certificate_hash", THUMBPRINT),  # SslCertHash, REG_BINARY, as hex
        Field("appId", "application_id", GUID_BYTES),  # AppId, REG_BINARY GUID, as hex
        Field("store", "store_name", NULL_IS_NONE),  # SslCertStoreName, REG_SZ; absent means MY
    ),
)

PROBE = Record(
    ServerProbe,
    (
        Field("computer", "computer_name", TEXT),
        Field("boot", "last_boot", OPTIONAL_TIME),
        Field("certificates", "certificates", _records(CERTIFICATE), required=True),
        Field("bindings", "bindings", _records(SITE_BINDING)),
        Field("http", "ssl_bindings", _records(SSL_BINDING)),
    ),
)


def described_keys(record: Record = PROBE) -> set[str]:
    """Every key the description reads, nested records included."""
    keys = set()
    for field in record.fields:
        keys.add(field.key)
        if field.kind.record is not None:
            keys |= described_keys(field.kind.record)
    return keys
