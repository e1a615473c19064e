"""Where an inherited ACE on a server object is set, and what else that ACE covers.

Active Directory stores an inherited ACE on every object below the one it is set on (flagged INHERITED_ACE,
"ID"), copied down one level at a time from the parent's inheritable ACEs (MS-DTYP 2.5.3.4, MS-ADTS 5.1.3.2):

- an ACE passes to the children only with CONTAINER_INHERIT (CI); in AD every object is a container for this, and
  OBJECT_INHERIT has no effect;
- with NO_PROPAGATE_INHERIT (NP) the children get it without CI, so it goes no further;
- INHERIT_ONLY (IO): it does not apply to the object that carries it, only below;
- with an inherited object type it applies only to objects of that class; the others below carry it inherit-only,
  to pass it on;
- a protected DACL (SE_DACL_PROTECTED) takes nothing from its parent: whatever it carries is its own.

So an inherited ACE on a server object is set on the nearest ancestor that carries it with CI and not inherited
(or whose DACL is protected); every ancestor in between carries it inherited, with CI. The walk stops at CN=Microsoft
Exchange,CN=Services, the highest object whose descriptor the collector reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..facts import Directory, ExchangeServer
from ..names import parent_dn, rdn_value
from .memo import IdentityCache, by_value
from .security_descriptor import (
    ADS_RIGHT_DS_CONTROL_ACCESS,
    CONTAINER_INHERIT_ACE,
    GENERIC_ALL,
    INHERIT_ONLY_ACE,
    NO_PROPAGATE_INHERIT_ACE,
    Ace,
    DescriptorError,
    SecurityDescriptor,
    parse_descriptor,
)

# The DS generic mapping (MS-ADTS 5.1.3.2.1): AD may store an inherited copy with the generic bits mapped.
_GENERIC_MAPPING = {0x80000000: 0x20094, 0x40000000: 0x20028, 0x20000000: 0x20004, GENERIC_ALL: 0xF01FF}
# Exchange's own classes that an inheritable ACE names as inherited object type (schemaIDGUID -> lDAPDisplayName),
# for Remove-ADPermission -InheritedObjectType.
KNOWN_CLASSES = {"01a9aa9c-a981-11d2-a9ff-00c04f8eedd8": "msExchExchangeServer"}


def exchange_dn(directory: Directory) -> str:
    return f"CN=Microsoft Exchange,CN=Services,{directory.configuration_dn}"


@dataclass(frozen=True)
class Origin:
    """Where an inherited ACE is set: `dn` and the ACE as set there (`ace`), or why that is not known (`why`)."""

    dn: str | None
    ace: Ace | None
    why: str = ""


def _descriptors(directory: Directory) -> dict[str, bytes]:
    found = {dn.lower(): data for dn, data in directory.container_descriptors.items()}
    if directory.org_security_descriptor is not None:  # evidence files of earlier versions read only this one
        found.setdefault(directory.org_dn.lower(), directory.org_security_descriptor)
    return found


_by_dn: IdentityCache[Directory, dict[str, bytes]] = IdentityCache(_descriptors)


def descriptor_of(directory: Directory, dn: str) -> SecurityDescriptor | None:
    """The container's descriptor as collected, or None (not read, or not parseable)."""
    data = _by_dn(directory).get(dn.lower())
    if data is None:
        return None
    try:
        return parse_descriptor(data, what=dn)
    except DescriptorError:
        return None


def _mask(mask: int | None) -> int:
    mask = mask or 0
    for generic, specific in _GENERIC_MAPPING.items():
        if mask & generic:
            mask = (mask & ~generic) | specific
    return mask


def same_ace(one: Ace, other: Ace) -> bool:
    """The same access rule, whatever its inheritance flags (a copy differs from its original in ID, IO, CI)."""
    return (
        one.type == other.type
        and one.sid == other.sid
        and one.object_type == other.object_type
        and one.inherited_object_type == other.inherited_object_type
        and _mask(one.mask) == _mask(other.mask)
    )


def _passed_on(descriptor: SecurityDescriptor, ace: Ace) -> Ace | None:
    """The DACL entry of `descriptor` that passes `ace` on to the children (the same rule, with CI)."""
    for own in descriptor.dacl.aces if descriptor.dacl is not None else ():
        if own.flags & CONTAINER_INHERIT_ACE and same_ace(own, ace):
            return own
    return None


# Per Directory: (ACE, parent DN) -> Origin, and (origin DN, ACE) -> Coverage. Every caller ACL-01 judges meets the
# same inherited ACEs on the same objects; walking and scanning 200 server objects again for each of 200 callers
# made the failure path five times slower.
_memo: IdentityCache[Directory, dict[tuple[object, ...], object]] = IdentityCache(lambda _directory: {})


@by_value(limit=8192)
def container_of(dn: str) -> str:
    """A server object's parent container, lower-cased: parsed once per server, not once per caller."""
    return parent_dn(dn).lower()


def ace_origin(directory: Directory, server: ExchangeServer, ace: Ace) -> Origin:
    """Where the ACE that `server`'s object carries inherited is set, walking up its ancestors (once per ACE and
    parent container)."""
    memo = _memo(directory)
    key = ("origin", ace, container_of(server.dn))
    if key not in memo:
        memo[key] = _walk(directory, server, ace)
    return memo[key]  # type: ignore[return-value]


def _walk(directory: Directory, server: ExchangeServer, ace: Ace) -> Origin:
    if not directory.container_descriptors:
        return _org_only(directory, ace)
    top = exchange_dn(directory).lower()
    dn = parent_dn(server.dn)
    while dn:
        descriptor = descriptor_of(directory, dn)
        if descriptor is None:
            return Origin(None, None, f"the descriptor of {dn} was not read")
        copy = _passed_on(descriptor, ace)
        if copy is None:
            return Origin(
                None,
                None,
                f"{dn} does not pass it on (no copy of it with container inheritance): it changed since the ACE was "
                "propagated to the server object",
            )
        if not copy.inherited or descriptor.dacl_protected:
            return Origin(dn, copy)
        if dn.lower() == top:
            return Origin(None, None, f"it is set above {dn} (CN=Services or higher), whose descriptors are not read")
        dn = parent_dn(dn)
    return Origin(None, None, f"{server.dn} is not below {exchange_dn(directory)}")


def container_role(directory: Directory, dn: str) -> str:
    """What an ancestor of a server object is, for evidence: "the organization container", "the Servers container
    of Exchange Administrative Group (FYDIBOHF23SPDLT)"..."""
    lowered = dn.lower()
    groups = f"CN=Administrative Groups,{directory.org_dn}".lower()
    if lowered == directory.org_dn.lower():
        return "the organization container"
    if lowered == exchange_dn(directory).lower():
        return "CN=Microsoft Exchange"
    if lowered == groups:
        return "the Administrative Groups container"
    if parent_dn(lowered) == groups:
        return f"the administrative group {rdn_value(dn)}"
    if parent_dn(parent_dn(lowered)) == groups and rdn_value(dn).lower() == "servers":
        return f"the Servers container of {rdn_value(parent_dn(dn))}"
    return dn


@dataclass(frozen=True)
class Coverage:
    """What else an ACE set on a container covers: the server objects and containers below it that carry it."""

    servers: tuple[ExchangeServer, ...]
    containers: tuple[str, ...]


def coverage(directory: Directory, origin: str, ace: Ace) -> Coverage:
    memo = _memo(directory)
    key = ("coverage", origin.lower(), ace)
    if key not in memo:
        memo[key] = _coverage(directory, origin, ace)
    return memo[key]  # type: ignore[return-value]


def _coverage(directory: Directory, origin: str, ace: Ace) -> Coverage:
    below = "," + origin.lower()
    servers = []
    for server in directory.servers:
        if server.dn.lower().endswith(below) and server.security_descriptor is not None:
            try:
                descriptor = parse_descriptor(server.security_descriptor, what=server.dn)
            except DescriptorError:
                continue
            aces = descriptor.dacl.aces if descriptor.dacl is not None else ()
            if any(own.inherited and same_ace(own, ace) for own in aces):
                servers.append(server)
    containers = []
    for dn in directory.container_descriptors:
        descriptor = descriptor_of(directory, dn) if dn.lower().endswith(below) else None
        aces = descriptor.dacl.aces if descriptor is not None and descriptor.dacl is not None else ()
        if any(own.inherited and same_ace(own, ace) for own in aces):
            containers.append(dn)
    return Coverage(tuple(servers), tuple(sorted(containers, key=len)))


def inheritance_type(ace: Ace) -> str | None:
    """Remove-ADPermission -InheritanceType for an ACE as set (ActiveDirectorySecurityInheritance); None when the
    ACE is not inheritable."""
    if not ace.flags & CONTAINER_INHERIT_ACE:
        return None
    only = bool(ace.flags & INHERIT_ONLY_ACE)
    if ace.flags & NO_PROPAGATE_INHERIT_ACE:
        return "Children" if only else "SelfAndChildren"
    return "Descendents" if only else "All"


def access_rights(ace: Ace) -> str | None:
    """Remove-ADPermission -AccessRights for the ACE's mask, when it is one the suite can name exactly."""
    if ace.mask == GENERIC_ALL:
        return "GenericAll"
    if ace.mask == ADS_RIGHT_DS_CONTROL_ACCESS:
        return "ExtendedRight"
    return None


def _org_only(directory: Directory, ace: Ace) -> Origin:
    """Evidence files of earlier versions read only the organization container's descriptor: it tells whether the
    organization sets the ACE, passes it on from above, or neither (then a container below it sets it)."""
    descriptor = descriptor_of(directory, directory.org_dn)
    earlier = "the evidence file holds only the organization container's descriptor"
    if descriptor is None:
        return Origin(None, None, "the organization container's descriptor was not read")
    copy = _passed_on(descriptor, ace)
    if copy is None:
        return Origin(None, None, f"a container below the organization container, which does not set it ({earlier})")
    if copy.inherited and not descriptor.dacl_protected:
        return Origin(None, None, f"it is set above the organization container ({earlier})")
    return Origin(directory.org_dn, copy)
