"""The access check for a directory extended right, the tokens it runs against, and membership chains.

Windows' rules (EXCHANGE_FACTS.md §2, MS-DTYP 2.5.3.2 with an object type list of one right): walk the DACL in
order, skip INHERIT_ONLY ACEs, and let the first ACE whose SID is in the token and whose rights cover the extended
right decide. Rights cover it with CONTROL_ACCESS (0x100) or GENERIC_ALL (which the DS generic mapping turns into
every DS right); an object ACE covers it only when its object type is the right's GUID or it has none.

Speed: ACL-01 checks every server's token against every server object (40,000 checks for 200 servers). Each
descriptor is parsed once (security_descriptor caches by bytes), compiled once per right into the few ACEs that can
matter, and each check is then a scan of those with set lookups. Tokens and group closures are memoised per
Directory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

from exchange_compliance.facts import Directory, Principal
from exchange_compliance.judge.memo import IdentityCache
from exchange_compliance.judge.security_descriptor import (
    ADS_RIGHT_DS_CONTROL_ACCESS,
    GENERIC_ALL,
    Ace,
    SecurityDescriptor,
)
from exchange_compliance.names import dns_domain_of, rdn_value

# How evidence draws a membership chain: EX02$ → Server Operators Team → Domain Admins.
ARROW = " \u2192 "
# What every network logon adds to a token: Everyone, Authenticated Users, NETWORK, This Organization.
NETWORK_LOGON_SIDS = frozenset({"S-1-1-0", "S-1-5-11", "S-1-5-2", "S-1-5-15"})

WELL_KNOWN_NAMES = {
    "S-1-1-0": "Everyone",
    "S-1-3-0": "CREATOR OWNER",
    "S-1-5-2": "NETWORK",
    "S-1-5-7": "ANONYMOUS LOGON",
    "S-1-5-9": "ENTERPRISE DOMAIN CONTROLLERS",
    "S-1-5-10": "SELF",
    "S-1-5-11": "Authenticated Users",
    "S-1-5-15": "This Organization",
    "S-1-5-18": "SYSTEM",
    "S-1-5-32-544": "BUILTIN\\Administrators",
    "S-1-5-32-545": "BUILTIN\\Users",
    "S-1-5-32-548": "BUILTIN\\Account Operators",
    "S-1-5-32-549": "BUILTIN\\Server Operators",
    "S-1-5-32-554": "BUILTIN\\Pre-Windows 2000 Compatible Access",
}
# Only used to name a SID the collector did not bring back as a group (names are localised: best effort).
DOMAIN_RID_NAMES = {
    512: "Domain Admins",
    513: "Domain Users",
    515: "Domain Computers",
    518: "Schema Admins",
    519: "Enterprise Admins",
}

AccessOutcome = Literal["allowed", "denied", "not_granted"]


@dataclass(frozen=True)
class AccessDecision:
    outcome: AccessOutcome
    reason: str
    ace: Ace | None = None  # the deciding ACE
    index: int | None = None  # its position in the DACL
    # Callback (conditional) ACEs that matched the token and the right ahead of the decision: their conditions
    # are not evaluated here (AD does not use them on configuration objects), so they are reported, not applied.
    unevaluated: tuple[int, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"


def normalize_guid(guid: str) -> str:
    return guid.strip().strip("{}").lower()


def covers_right(ace: Ace, right_guid: str) -> bool:
    """Whether the ACE's rights and object type cover the extended right (SID and INHERIT_ONLY aside)."""
    kind = ace.ace_type.kind
    if kind not in ("allow", "deny") or ace.mask is None:
        return False
    if not ace.mask & (ADS_RIGHT_DS_CONTROL_ACCESS | GENERIC_ALL):
        return False
    return not ace.is_object or ace.object_type is None or ace.object_type == normalize_guid(right_guid)


_NOT_GRANTED = AccessDecision("not_granted", "no ACE in the DACL grants it to the token")
_Compiled = tuple[tuple[str, str, int, AccessDecision | None], ...]


def _compile(descriptor: SecurityDescriptor, right_guid: str) -> _Compiled:
    """(SID, "A"/"D"/"X", index, the decision it makes) for the DACL entries that can matter for the right, in
    order. Decisions are built once here: constructing a frozen dataclass per check was half the cost of a check."""
    right = normalize_guid(right_guid)
    aces = descriptor.dacl.aces if descriptor.dacl is not None else ()
    entries: list[tuple[str, str, int, AccessDecision | None]] = []
    for index, ace in enumerate(aces):
        if ace.inherit_only or ace.sid is None or not covers_right(ace, right):
            continue
        if ace.is_callback:
            entries.append((ace.sid, "X", index, None))
        elif ace.ace_type.kind == "allow":
            entries.append((ace.sid, "A", index, AccessDecision("allowed", f"ACE #{index} grants it", ace, index)))
        else:
            entries.append((ace.sid, "D", index, AccessDecision("denied", f"ACE #{index} denies it", ace, index)))
    return tuple(entries)


def _compiled(descriptor: SecurityDescriptor, right_guid: str) -> _Compiled:
    """The compiled entries for the right, kept on the descriptor under the GUID as given (normalising on every
    call costs more than the scan). Not a cache keyed by the descriptor: looking one up on each of ACL-01's 40,000
    checks for 200 servers made them a third slower than this attribute (unit/bench_acl.py)."""
    compiled = descriptor.compiled.get(right_guid)
    if compiled is None:
        compiled = descriptor.compiled[right_guid] = _compile(descriptor, right_guid)
    return compiled


def check_right(descriptor: SecurityDescriptor, token: frozenset[str], right_guid: str) -> AccessDecision:
    """Does a token hold the extended right `right_guid` on the object with this descriptor?"""
    if descriptor.dacl is None:
        return AccessDecision("allowed", "the object has no DACL (a NULL DACL grants everything)")
    if not descriptor.dacl.aces:
        return AccessDecision("not_granted", "the DACL is empty, which grants nothing")
    unevaluated: list[int] = []
    for sid, _code, index, decision in _compiled(descriptor, right_guid):
        if sid in token:
            if decision is None:  # a callback ACE: reported, not applied
                unevaluated.append(index)
            elif unevaluated:
                return replace(decision, unevaluated=tuple(unevaluated))
            else:
                return decision
    return replace(_NOT_GRANTED, unevaluated=tuple(unevaluated)) if unevaluated else _NOT_GRANTED


def applicable_aces(descriptor: SecurityDescriptor, token: frozenset[str], right_guid: str) -> list[tuple[int, Ace]]:
    """Every ACE (not only the first) that applies to the token and the right: to fix all causes at once."""
    if descriptor.dacl is None:
        return []
    aces = descriptor.dacl.aces
    return [(index, aces[index]) for sid, _, index, _ in _compiled(descriptor, right_guid) if sid in token]


# --- Tokens and membership -------------------------------------------------------------------------------------


class NoComputerAccount(LookupError):
    """The server has no computer account in Directory.computers (an Edge server, or one not found)."""


@dataclass
class _Index:
    by_dn: dict[str, Principal]
    by_sid: dict[str, Principal]
    computers: dict[str, Principal]
    closures: dict[str, tuple[tuple[Principal, ...], tuple[str, ...]]] = field(default_factory=dict)
    tokens: dict[str, frozenset[str]] = field(default_factory=dict)

    def parents(self, principal: Principal) -> list[Principal]:
        """The groups the principal is directly in, the primary group included (memberOf leaves it out)."""
        found = [self.by_dn[dn.lower()] for dn in principal.member_of if dn.lower() in self.by_dn]
        primary = self.by_sid.get(principal.primary_group_sid or "")
        if primary is not None and primary not in found:
            found.append(primary)
        return found

    def closure(self, principal: Principal) -> tuple[tuple[Principal, ...], tuple[str, ...]]:
        """Every group reachable from the principal (cycles are safe), and member_of DNs nobody collected."""
        key = principal.dn.lower()
        if key not in self.closures:
            seen: dict[str, Principal] = {}
            unresolved: list[str] = []
            queue = deque([principal])
            while queue:
                current = queue.popleft()
                unresolved += [dn for dn in current.member_of if dn.lower() not in self.by_dn]
                for parent in self.parents(current):
                    if parent.dn.lower() not in seen and parent.dn.lower() != key:
                        seen[parent.dn.lower()] = parent
                        queue.append(parent)
            self.closures[key] = (tuple(seen.values()), tuple(dict.fromkeys(unresolved)))
        return self.closures[key]


def _build_index(directory: Directory) -> _Index:
    principals = [*directory.groups.values(), *directory.computers.values()]
    return _Index(
        by_dn={p.dn.lower(): p for p in principals},
        by_sid={p.sid: p for p in principals},
        computers={name.lower(): p for name, p in directory.computers.items()},
    )


_index: IdentityCache[Directory, _Index] = IdentityCache(_build_index)


def computer_account(directory: Directory, server_name: str) -> Principal:
    try:
        return _index(directory).computers[server_name.lower()]
    except KeyError:
        raise NoComputerAccount(f"no computer account was found for {server_name}") from None


def principal_by_dn(directory: Directory, dn: str) -> Principal | None:
    return _index(directory).by_dn.get(dn.lower())


def principal_by_sid(directory: Directory, sid: str) -> Principal | None:
    return _index(directory).by_sid.get(sid)


def transitive_groups(directory: Directory, principal: Principal) -> tuple[Principal, ...]:
    return _index(directory).closure(principal)[0]


def unresolved_groups(directory: Directory, principal: Principal) -> tuple[str, ...]:
    """member_of DNs (at any depth) missing from Directory.groups: a token built without them may miss a deny."""
    return _index(directory).closure(principal)[1]


def principal_token(directory: Directory, principal: Principal) -> frozenset[str]:
    """The principal's SID, its primary group, every group it is transitively in, and the network-logon SIDs."""
    index = _index(directory)
    key = principal.dn.lower()
    if key not in index.tokens:
        groups, _ = index.closure(principal)
        sids = {principal.sid, *(g.sid for g in groups), *NETWORK_LOGON_SIDS}
        if principal.primary_group_sid:
            sids.add(principal.primary_group_sid)
        index.tokens[key] = frozenset(sids)
    return index.tokens[key]


def membership_chain(directory: Directory, from_dn: str, to_sid: str) -> list[Principal]:
    """The shortest chain from the principal at `from_dn` to the one with `to_sid`, both ends included (e.g.
    EX02$, Server Operators Team, Domain Admins); [] when the SID is not reached through groups (Everyone...)."""
    index = _index(directory)
    start = index.by_dn.get(from_dn.lower())
    if start is None:
        return []
    previous: dict[str, Principal | None] = {start.dn.lower(): None}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if current.sid == to_sid:
            chain = [current]
            while (parent := previous[chain[-1].dn.lower()]) is not None:
                chain.append(parent)
            return chain[::-1]
        for parent in index.parents(current):
            if parent.dn.lower() not in previous:
                previous[parent.dn.lower()] = current
                queue.append(parent)
    return []


def is_primary_group_link(member: Principal, group: Principal) -> bool:
    """The link exists only through primaryGroupID (Remove-ADGroupMember cannot undo it)."""
    return member.primary_group_sid == group.sid and group.dn.lower() not in {dn.lower() for dn in member.member_of}


def display_name(principal: Principal) -> str:
    """Computers as their sAMAccountName (`EX02$`), groups by name."""
    if principal.kind == "computer" and not principal.name.endswith("$"):
        return principal.name + "$"
    return principal.name


def sid_name(directory: Directory, sid: str) -> str:
    principal = principal_by_sid(directory, sid)
    if principal is not None:
        return display_name(principal)
    if sid in WELL_KNOWN_NAMES:
        return WELL_KNOWN_NAMES[sid]
    if directory.domain_sid and sid.startswith(directory.domain_sid + "-"):
        rid = sid.rsplit("-", 1)[1]
        if rid.isdigit() and int(rid) in DOMAIN_RID_NAMES:
            return DOMAIN_RID_NAMES[int(rid)]
    return sid


def group_name(directory: Directory, dn: str) -> str:
    """The collected group's name, else the value of its first RDN (CN=Exchange Servers,OU=... -> Exchange Servers)."""
    principal = principal_by_dn(directory, dn)
    return principal.name if principal is not None else rdn_value(dn)


def netbios_domain(directory: Directory) -> str:
    """The NetBIOS domain name for DOMAIN\\name in fixes: nETBIOSName as read from CN=Partitions, else (old
    evidence files) the first DC= label upper-cased, which is the default but not guaranteed."""
    if directory.netbios_domain:
        return directory.netbios_domain
    return dns_domain_of(directory.domain_dn).partition(".")[0].upper() or directory.domain_dn


def qualified_name(directory: Directory, sid: str) -> str:
    """The -User value for *-ADPermission: DOMAIN\\name for domain principals, BUILTIN\\name for builtin aliases,
    the plain name for other well-known SIDs (Everyone, SYSTEM...)."""
    name = sid_name(directory, sid)
    if sid.startswith("S-1-5-32-"):
        return "BUILTIN\\" + name.rsplit("\\", 1)[-1]
    in_domain = bool(directory.domain_sid) and sid.startswith(f"{directory.domain_sid}-")
    return f"{netbios_domain(directory)}\\{name}" if in_domain or principal_by_sid(directory, sid) else name
