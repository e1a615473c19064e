"""Self-relative security descriptors (MS-DTYP 2.4.6) as Active Directory returns nTSecurityDescriptor.

`parse_descriptor` turns the bytes into frozen dataclasses; `SecurityDescriptor.to_sddl` / `Ace.to_sddl` render
them for evidence. Nothing here talks to a directory. Malformed input raises `DescriptorError` naming the object,
never an IndexError or struct.error: one bad descriptor must not take a whole judge down.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from .memo import by_value

# Control flags (MS-DTYP 2.4.6).
SE_OWNER_DEFAULTED = 0x0001
SE_GROUP_DEFAULTED = 0x0002
SE_DACL_PRESENT = 0x0004
SE_DACL_DEFAULTED = 0x0008
SE_SACL_PRESENT = 0x0010
SE_SACL_DEFAULTED = 0x0020
SE_DACL_TRUSTED = 0x0040
SE_SERVER_SECURITY = 0x0080
SE_DACL_AUTO_INHERIT_REQ = 0x0100
SE_SACL_AUTO_INHERIT_REQ = 0x0200
SE_DACL_AUTO_INHERITED = 0x0400
SE_SACL_AUTO_INHERITED = 0x0800
SE_DACL_PROTECTED = 0x1000
SE_SACL_PROTECTED = 0x2000
SE_RM_CONTROL_VALID = 0x4000
SE_SELF_RELATIVE = 0x8000
CONTROL_NAMES = {value: name for name, value in globals().items() if name.startswith("SE_") and isinstance(value, int)}

# ACE flags (MS-DTYP 2.4.4.1), with their SDDL spelling.
OBJECT_INHERIT_ACE = 0x01
CONTAINER_INHERIT_ACE = 0x02
NO_PROPAGATE_INHERIT_ACE = 0x04
INHERIT_ONLY_ACE = 0x08
INHERITED_ACE = 0x10
SUCCESSFUL_ACCESS_ACE_FLAG = 0x40
FAILED_ACCESS_ACE_FLAG = 0x80
ACE_FLAG_SDDL = (("OI", 0x01), ("CI", 0x02), ("NP", 0x04), ("IO", 0x08), ("ID", 0x10), ("SA", 0x40), ("FA", 0x80))

# Access mask bits for directory objects (MS-ADTS 5.1.3.2), in the order Windows and Samba write them in SDDL
# (the familiar "RPWPCRCCDCLCLORCWOWDSDDTSW").
ADS_RIGHT_DS_CONTROL_ACCESS = 0x100
GENERIC_ALL = 0x10000000
RIGHT_SDDL = (
    ("RP", 0x10), ("WP", 0x20), ("CR", 0x100), ("CC", 0x1), ("DC", 0x2), ("LC", 0x4), ("LO", 0x80),
    ("RC", 0x20000), ("WO", 0x80000), ("WD", 0x40000), ("SD", 0x10000), ("DT", 0x40), ("SW", 0x8),
    ("GA", 0x10000000), ("GR", 0x80000000), ("GW", 0x40000000), ("GX", 0x20000000),
)  # fmt: skip

# Object ACE flags: which GUIDs follow the mask.
ACE_OBJECT_TYPE_PRESENT = 0x1
ACE_INHERITED_OBJECT_TYPE_PRESENT = 0x2


@dataclass(frozen=True)
class AceType:
    code: int
    name: str
    sddl: str | None  # None: SDDL has no alias; rendered as the hex type
    layout: str  # "basic" (mask, SID), "object" (mask, flags, GUIDs, SID), "unknown" (kept as raw bytes)
    kind: str  # "allow", "deny", "audit", "alarm", "label", "other"
    callback: bool = False


ACE_TYPES = {
    t.code: t
    for t in (
        AceType(0, "ACCESS_ALLOWED", "A", "basic", "allow"),
        AceType(1, "ACCESS_DENIED", "D", "basic", "deny"),
        AceType(2, "SYSTEM_AUDIT", "AU", "basic", "audit"),
        AceType(3, "SYSTEM_ALARM", "AL", "basic", "alarm"),
        AceType(5, "ACCESS_ALLOWED_OBJECT", "OA", "object", "allow"),
        AceType(6, "ACCESS_DENIED_OBJECT", "OD", "object", "deny"),
        AceType(7, "SYSTEM_AUDIT_OBJECT", "OU", "object", "audit"),
        AceType(8, "SYSTEM_ALARM_OBJECT", "OL", "object", "alarm"),
        AceType(9, "ACCESS_ALLOWED_CALLBACK", "XA", "basic", "allow", True),
        AceType(10, "ACCESS_DENIED_CALLBACK", "XD", "basic", "deny", True),
        AceType(11, "ACCESS_ALLOWED_CALLBACK_OBJECT", "ZA", "object", "allow", True),
        AceType(12, "ACCESS_DENIED_CALLBACK_OBJECT", None, "object", "deny", True),
        AceType(13, "SYSTEM_AUDIT_CALLBACK", "XU", "basic", "audit", True),
        AceType(14, "SYSTEM_ALARM_CALLBACK", None, "basic", "alarm", True),
        AceType(15, "SYSTEM_AUDIT_CALLBACK_OBJECT", None, "object", "audit", True),
        AceType(16, "SYSTEM_ALARM_CALLBACK_OBJECT", None, "object", "alarm", True),
        AceType(17, "SYSTEM_MANDATORY_LABEL", "ML", "basic", "label"),
        AceType(18, "SYSTEM_RESOURCE_ATTRIBUTE", "RA", "basic", "other"),
        AceType(19, "SYSTEM_SCOPED_POLICY_ID", "SP", "basic", "other"),
    )
}

# SDDL aliases Windows (and Samba) use. Domain-relative ones need the domain SID; EA/SA/RO/EK belong to the forest
# root domain, which is the domain itself in a single-domain forest (Samba resolves them the same way).
SID_ALIASES = {
    "S-1-1-0": "WD", "S-1-3-0": "CO", "S-1-3-1": "CG", "S-1-3-4": "OW", "S-1-5-2": "NU", "S-1-5-4": "IU",
    "S-1-5-6": "SU", "S-1-5-7": "AN", "S-1-5-9": "ED", "S-1-5-10": "PS", "S-1-5-11": "AU", "S-1-5-12": "RC",
    "S-1-5-18": "SY", "S-1-5-19": "LS", "S-1-5-20": "NS", "S-1-5-32-544": "BA", "S-1-5-32-545": "BU",
    "S-1-5-32-546": "BG", "S-1-5-32-547": "PU", "S-1-5-32-548": "AO", "S-1-5-32-549": "SO", "S-1-5-32-550": "PO",
    "S-1-5-32-551": "BO", "S-1-5-32-552": "RE", "S-1-5-32-554": "RU", "S-1-5-32-555": "RD", "S-1-5-32-556": "NO",
    "S-1-5-32-558": "MU", "S-1-5-32-559": "LU", "S-1-5-32-568": "IS", "S-1-5-32-569": "CY", "S-1-5-32-573": "ER",
    "S-1-5-32-575": "RA", "S-1-5-32-576": "ES", "S-1-5-32-578": "HA", "S-1-5-32-579": "AA", "S-1-5-32-580": "RM",
    "S-1-16-4096": "LW", "S-1-16-8192": "ME", "S-1-16-12288": "HI", "S-1-16-16384": "SI",
}  # fmt: skip
DOMAIN_RID_ALIASES = {
    498: "RO", 512: "DA", 513: "DU", 514: "DG", 515: "DC", 516: "DD", 517: "CA", 518: "SA", 519: "EA", 520: "PA",
    522: "CN", 525: "AP", 526: "KA", 527: "EK",
}  # fmt: skip


class DescriptorError(ValueError):
    """Bytes that are not a valid self-relative security descriptor; the message names the object."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what}: malformed security descriptor: {problem}")
        self.what = what
        self.problem = problem


class _Malformed(Exception):
    """Raised inside the parser; parse_descriptor adds the object's name (kept out of the parse cache key)."""


@dataclass(frozen=True)
class Ace:
    type: int
    flags: int
    mask: int | None  # None only for ACE types whose layout is unknown
    sid: str | None
    object_type: str | None = None  # lower-case dashed GUID
    inherited_object_type: str | None = None
    application_data: bytes = b""  # callback/resource data after the SID, or the whole body of an unknown type

    @property
    def ace_type(self) -> AceType:
        return ACE_TYPES.get(self.type) or AceType(self.type, f"UNKNOWN_{self.type}", None, "unknown", "other")

    @property
    def is_object(self) -> bool:
        return self.ace_type.layout == "object"

    @property
    def is_callback(self) -> bool:
        return self.ace_type.callback

    @property
    def inherit_only(self) -> bool:
        return bool(self.flags & INHERIT_ONLY_ACE)

    @property
    def inherited(self) -> bool:
        return bool(self.flags & INHERITED_ACE)

    def to_sddl(self, domain_sid: str | None = None) -> str:
        """One ACE string. Callback application data is shown as `[hex]` (conditional expressions are not
        decoded), and types SDDL has no alias for as their hex code: both are for reading, not for re-parsing."""
        kind = self.ace_type.sddl or f"0x{self.type:02x}"
        flags = "".join(name for name, bit in ACE_FLAG_SDDL if self.flags & bit)
        unknown_flags = self.flags & ~sum(bit for _, bit in ACE_FLAG_SDDL)
        if unknown_flags:
            flags += f"0x{unknown_flags:02x}"
        if self.ace_type.layout == "unknown":
            return f"({kind};{flags};;;;;[{self.application_data.hex()}])"
        fields = [kind, flags, rights_sddl(self.mask or 0), self.object_type or "", self.inherited_object_type or ""]
        fields.append(sid_sddl(self.sid or "", domain_sid))
        if self.application_data:
            fields.append(f"[{self.application_data.hex()}]")
        return "(" + ";".join(fields) + ")"


@dataclass(frozen=True)
class Acl:
    revision: int
    aces: tuple[Ace, ...]


@dataclass(frozen=True)
class SecurityDescriptor:
    revision: int
    control: int
    owner: str | None
    group: str | None
    dacl: Acl | None  # None: no DACL (absent or NULL), which grants everything
    sacl: Acl | None
    # The access check's entries for each right (access._compiled), by right GUID: they go when the descriptor goes.
    compiled: dict[str, tuple] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def dacl_protected(self) -> bool:
        return bool(self.control & SE_DACL_PROTECTED)

    @property
    def control_names(self) -> tuple[str, ...]:
        return tuple(name for bit, name in sorted(CONTROL_NAMES.items()) if self.control & bit)

    def to_sddl(self, domain_sid: str | None = None) -> str:
        parts = []
        if self.owner:
            parts.append("O:" + sid_sddl(self.owner, domain_sid))
        if self.group:
            parts.append("G:" + sid_sddl(self.group, domain_sid))
        if self.control & SE_DACL_PRESENT:
            flags = _acl_flags(self.control, SE_DACL_PROTECTED, SE_DACL_AUTO_INHERITED, SE_DACL_AUTO_INHERIT_REQ)
            body = "NO_ACCESS_CONTROL" if self.dacl is None else "".join(a.to_sddl(domain_sid) for a in self.dacl.aces)
            parts.append("D:" + flags + body)
        if self.control & SE_SACL_PRESENT:
            flags = _acl_flags(self.control, SE_SACL_PROTECTED, SE_SACL_AUTO_INHERITED, SE_SACL_AUTO_INHERIT_REQ)
            body = "NO_ACCESS_CONTROL" if self.sacl is None else "".join(a.to_sddl(domain_sid) for a in self.sacl.aces)
            parts.append("S:" + flags + body)
        return "".join(parts)


def _acl_flags(control: int, protected: int, auto_inherited: int, auto_inherit_req: int) -> str:
    return (
        ("P" if control & protected else "")
        + ("AI" if control & auto_inherited else "")
        + ("AR" if control & auto_inherit_req else "")
    )


def rights_sddl(mask: int) -> str:
    """Aliases when every bit has one (Windows' rule), else the whole mask in hex."""
    if mask == 0:
        return "0x0"
    if mask & ~sum(bit for _, bit in RIGHT_SDDL):
        return f"0x{mask:x}"
    return "".join(name for name, bit in RIGHT_SDDL if mask & bit)


def sid_sddl(sid: str, domain_sid: str | None = None) -> str:
    if sid in SID_ALIASES:
        return SID_ALIASES[sid]
    if domain_sid and sid.startswith(domain_sid + "-"):
        rid = sid[len(domain_sid) + 1 :]
        if rid.isdigit() and int(rid) in DOMAIN_RID_ALIASES:
            return DOMAIN_RID_ALIASES[int(rid)]
    return sid


def parse_descriptor(data: bytes, what: str = "security descriptor") -> SecurityDescriptor:
    """Parse self-relative bytes; `what` (e.g. the object's DN) names the object in a DescriptorError.

    Results are cached by content: server objects mostly carry the same inherited DACL, and ACL-01 looks at each
    object once per calling server."""
    try:
        return _parse_cached(bytes(data))
    except _Malformed as err:
        raise DescriptorError(what, str(err)) from None


@by_value(limit=4096)
def _parse_cached(data: bytes) -> SecurityDescriptor:
    if len(data) < 20:
        raise _Malformed(f"{len(data)} bytes, shorter than the 20-byte header")
    revision, _sbz1, control, off_owner, off_group, off_sacl, off_dacl = struct.unpack_from("<BBHIIII", data)
    if revision != 1:
        raise _Malformed(f"revision {revision}, expected 1")
    if not control & SE_SELF_RELATIVE:
        raise _Malformed("SE_SELF_RELATIVE is not set (absolute-format descriptors never come from a directory)")
    for name, offset in (("owner", off_owner), ("group", off_group), ("SACL", off_sacl), ("DACL", off_dacl)):
        if 0 < offset < 20:
            raise _Malformed(f"{name} offset {offset} points into the 20-byte header")
    owner = _sid_at(data, off_owner, "owner") if off_owner else None
    group = _sid_at(data, off_group, "group") if off_group else None
    # A DACL offset of 0 with SE_DACL_PRESENT is a NULL DACL; without SE_DACL_PRESENT there is no DACL. Both
    # grant everything, which is why the distinction only survives in to_sddl ("D:NO_ACCESS_CONTROL").
    dacl = _acl_at(data, off_dacl, "DACL") if control & SE_DACL_PRESENT and off_dacl else None
    sacl = _acl_at(data, off_sacl, "SACL") if control & SE_SACL_PRESENT and off_sacl else None
    return SecurityDescriptor(revision, control, owner, group, dacl, sacl)


def _check_offset(data: bytes, offset: int, need: int, what: str) -> None:
    if offset < 20 or offset + need > len(data):
        raise _Malformed(f"{what} at offset {offset} (+{need} bytes) lies outside the {len(data)}-byte descriptor")


def _sid_at(data: bytes, offset: int, what: str, end: int | None = None) -> str:
    """A SID at `offset`; `end` bounds it (inside an ACE), else the descriptor's end does."""
    limit = len(data) if end is None else end
    if offset + 8 > limit:
        raise _Malformed(f"{what} SID at offset {offset} is truncated")
    revision, count = data[offset], data[offset + 1]
    if revision != 1:
        raise _Malformed(f"{what} SID at offset {offset} has revision {revision}, expected 1")
    if count > 15:
        raise _Malformed(f"{what} SID at offset {offset} claims {count} sub-authorities (at most 15)")
    if offset + 8 + 4 * count > limit:
        raise _Malformed(f"{what} SID at offset {offset} is truncated ({count} sub-authorities do not fit)")
    authority = int.from_bytes(data[offset + 2 : offset + 8], "big")
    subs = struct.unpack_from(f"<{count}I", data, offset + 8)
    # MS-DTYP 2.4.2.1: authorities of 2**32 and above are written in hex.
    auth = str(authority) if authority < 2**32 else f"0x{authority:012X}"
    return "-".join(["S-1", auth, *map(str, subs)])


def _sid_length(data: bytes, offset: int) -> int:
    return 8 + 4 * data[offset + 1]


def _acl_at(data: bytes, offset: int, what: str) -> Acl:
    _check_offset(data, offset, 8, what)
    revision, _sbz1, size, count, _sbz2 = struct.unpack_from("<BBHHH", data, offset)
    if revision not in (2, 4):  # ACL_REVISION, ACL_REVISION_DS
        raise _Malformed(f"{what} at offset {offset} has revision {revision}, expected 2 or 4")
    if size < 8 or offset + size > len(data):
        raise _Malformed(f"{what} at offset {offset} claims {size} bytes; the descriptor has {len(data)}")
    end = offset + size
    aces = []
    pos = offset + 8
    for index in range(count):
        if pos + 4 > end:
            raise _Malformed(f"{what} claims {count} ACEs but ACE #{index} starts past the ACL's end")
        ace_type, flags, ace_size = struct.unpack_from("<BBH", data, pos)
        if ace_size < 4 or pos + ace_size > end:
            raise _Malformed(f"{what} ACE #{index} claims {ace_size} bytes, outside the ACL")
        try:
            aces.append(_ace(data, pos, ace_type, flags, pos + ace_size))
        except _Malformed as err:
            raise _Malformed(f"{what} ACE #{index}: {err}") from None
        pos += ace_size
    return Acl(revision, tuple(aces))


def _ace(data: bytes, pos: int, ace_type: int, flags: int, end: int) -> Ace:
    layout = ACE_TYPES[ace_type].layout if ace_type in ACE_TYPES else "unknown"
    if layout == "unknown":
        return Ace(ace_type, flags, None, None, application_data=data[pos + 4 : end])
    body = pos + 4
    if body + 4 > end:
        raise _Malformed("truncated before the access mask")
    (mask,) = struct.unpack_from("<I", data, body)
    body += 4
    object_type = inherited_object_type = None
    if layout == "object":
        if body + 4 > end:
            raise _Malformed("truncated before the object flags")
        (object_flags,) = struct.unpack_from("<I", data, body)
        body += 4
        if object_flags & ACE_OBJECT_TYPE_PRESENT:
            object_type, body = _guid(data, body, end), body + 16
        if object_flags & ACE_INHERITED_OBJECT_TYPE_PRESENT:
            inherited_object_type, body = _guid(data, body, end), body + 16
    sid = _sid_at(data, body, "trustee", end)
    return Ace(
        ace_type, flags, mask, sid, object_type, inherited_object_type, data[body + _sid_length(data, body) : end]
    )


def _guid(data: bytes, pos: int, end: int) -> str:
    if pos + 16 > end:
        raise _Malformed("truncated inside an object type GUID")
    # GUIDs are stored mixed-endian: the first three fields little-endian, the last eight bytes as they are.
    return str(uuid.UUID(bytes_le=data[pos : pos + 16]))
