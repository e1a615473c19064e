"""The access check for a directory extended right, the tokens it runs against, and membership chains.

Windows' rules (EXCHANGE_FACTS.md §2, MS-DTYP 2.5.3.2 with an object type list of one right): walk the DACL in
order, skip INHERIT_ONLY ACEs, and let the first ACE whose SID is in the token and whose rights cover the extended
right decide. Rights cover it with CONTROL_ACCESS (0x100) or GENERIC_ALL (which the DS generic mapping turns into
every DS right); an object ACE covers it only when its object type is the right's GUID or it has none.

Speed: ACL-01 judges every server's token on every server object (40,000 pairs for 200 servers). Each descriptor
is parsed once (security_descriptor caches by bytes), compiled once per right into the few ACEs that can matter,
and each check is then a scan of those with set lookups; objects whose compiled ACEs are alike share one
decision_key, and ACL-01 checks each token once per key (rights.py). Tokens and group closures are memoised per
Directory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Literal

from exchange_compliance.facts import NETWORK_LOGON_SIDS, Directory, Domain, ExchangeServer, Principal
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


def decision_key(descriptor: SecurityDescriptor, right_guid: str) -> Hashable:
    """What check_right and applicable_aces read of the descriptor for the right: two descriptors with equal keys
    give every token equal answers (each entry's ACE is compared whole, not only its SID and index). Server objects
    mostly differ in nothing this reads (the owner, ACEs for other rights), so ACL-01 checks each caller once per
    key instead of once per object."""
    if descriptor.dacl is None or not descriptor.dacl.aces:
        return descriptor.dacl is None
    aces = descriptor.dacl.aces
    return tuple((sid, code, index, aces[index]) for sid, code, index, _ in _compiled(descriptor, right_guid))


def applicable_aces(descriptor: SecurityDescriptor, token: frozenset[str], right_guid: str) -> list[tuple[int, Ace]]:
    """Every ACE (not only the first) that applies to the token and the right: to fix all causes at once."""
    if descriptor.dacl is None:
        return []
    aces = descriptor.dacl.aces
    return [(index, aces[index]) for sid, _, index, _ in _compiled(descriptor, right_guid) if sid in token]


# --- Tokens and membership -------------------------------------------------------------------------------------
#
# The token a server's computer account presents to another server (EXCHANGE_FACTS §2; MS-PAC, MS-KILE): its SID
# and sIDHistory; the global groups of its own domain and the universal groups of the forest, nested through
# global and universal groups only (what its DC puts in its Kerberos ticket: tokenGroupsGlobalAndUniversal); the
# domain-local groups of the *called* server's domain, nested through domain-local groups of that domain (that
# domain's KDC adds them to the service ticket, its DC with NTLM), which may hold the account, any of those groups,
# or a foreign security principal of a SID every network logon carries (Authenticated Users...); the network-logon
# SIDs. The Exchange back end checks token serialization on its own server object, so the domain-local groups that
# count for a server object are those of the domain of that back end's computer account. Builtin aliases
# (BUILTIN\Administrators...) are domain-local groups of their domain here; a back end that is a member server
# takes them from its own local SAM instead, whose defaults mirror the domain's (Domain Admins in Administrators,
# Authenticated Users in Users) but which LDAP cannot read. Distribution groups are in no token.
#
# Evidence files of earlier versions have no domains and no group types: every group counts everywhere, as then.


class NoComputerAccount(LookupError):
    """The server has no computer account in Directory.computers (an Edge server, or one not found)."""


@dataclass
class _Index:
    by_dn: dict[str, Principal]
    by_sid: dict[str, Principal]
    computers: dict[str, Principal]
    domains: tuple[Domain, ...]
    closures: dict[str, tuple[tuple[Principal, ...], tuple[str, ...]]] = field(default_factory=dict)
    expansions: dict[tuple[str, str | None, bool], tuple[Principal, ...]] = field(default_factory=dict)
    tokens: dict[tuple[str, str | None], frozenset[str]] = field(default_factory=dict)
    domain_by_dn: dict[str, Domain | None] = field(default_factory=dict)

    def parents(self, principal: Principal) -> list[Principal]:
        """The groups the principal is directly in, the primary group included (memberOf leaves it out)."""
        found = [self.by_dn[dn.lower()] for dn in principal.member_of if dn.lower() in self.by_dn]
        primary = self.by_sid.get(principal.primary_group_sid or "")
        if primary is not None and primary not in found:
            found.append(primary)
        return found

    def domain_of(self, dn: str) -> Domain | None:
        key = dn.lower()
        if key not in self.domain_by_dn:
            holding = [d for d in self.domains if key == d.dn.lower() or key.endswith("," + d.dn.lower())]
            self.domain_by_dn[key] = max(holding, key=lambda d: len(d.dn), default=None)
        return self.domain_by_dn[key]

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

    def expansion(self, principal: Principal, resource: str | None, foreign: bool = True) -> tuple[Principal, ...]:
        """The groups in the principal's token at a server of the `resource` domain (its NC DN; None: evidence
        without domains, every group reachable). `foreign`: with the domain-local groups that hold a network-logon
        SID's foreign security principal (tokenGroups leaves those out, a logon does not)."""
        key = (principal.dn.lower(), resource.lower() if resource else None, foreign)
        if key not in self.expansions:
            if resource is None or not self.domains:
                groups = [g for g in self.closure(principal)[0] if g.kind != "foreign" and g.scope != "distribution"]
            else:
                account_side = self._walk([principal], lambda g: g.scope in ("global", "universal", None))
                starts = [principal, *account_side]
                if foreign:
                    starts += [
                        p
                        for p in self.by_sid_all(NETWORK_LOGON_SIDS)
                        if p.kind == "foreign" and self._in_domain(p, resource)
                    ]
                local = self._walk(starts, lambda g: g.scope == "domain_local" and self._in_domain(g, resource))
                groups = [*account_side, *(g for g in local if g not in account_side)]
            self.expansions[key] = tuple(groups)
        return self.expansions[key]

    def by_sid_all(self, sids: frozenset[str]) -> list[Principal]:
        return [p for p in self.by_dn.values() if p.sid in sids]

    def _in_domain(self, principal: Principal, resource: str) -> bool:
        domain = self.domain_of(principal.dn)
        return domain is not None and domain.dn.lower() == resource.lower()

    def _walk(self, starts: list[Principal], allowed: Callable[[Principal], bool]) -> list[Principal]:
        seen: dict[str, Principal] = {}
        queue = deque(starts)
        while queue:
            current = queue.popleft()
            for parent in self.parents(current):
                key = parent.dn.lower()
                if key not in seen and parent.kind == "group" and allowed(parent):
                    seen[key] = parent
                    queue.append(parent)
        return [g for g in seen.values() if g not in starts]


def _build_index(directory: Directory) -> _Index:
    principals = [*directory.groups.values(), *directory.computers.values()]
    by_sid: dict[str, Principal] = {}
    for principal in principals:  # a group before a foreign security principal of the same SID
        if principal.kind != "foreign" or principal.sid not in by_sid:
            by_sid[principal.sid] = principal
    return _Index(
        by_dn={p.dn.lower(): p for p in principals},
        by_sid=by_sid,
        computers={name.lower(): p for name, p in directory.computers.items()},
        domains=directory.domains,
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


# --- domains -------------------------------------------------------------------------------------------------------


def several_domains(directory: Directory) -> bool:
    return len(directory.domains) > 1


def domain_of(directory: Directory, dn: str) -> Domain | None:
    """The domain whose naming context holds `dn` (None: evidence without domains, or a DN in none of them)."""
    return _index(directory).domain_of(dn)


def domain_label(domain: Domain) -> str:
    """CHILD (child.contoso.com)."""
    return f"{domain.netbios_name} ({domain.dns_name})" if domain.netbios_name else domain.dns_name


def resource_domain(directory: Directory, server: ExchangeServer) -> str | None:
    """The NC DN of the domain whose domain-local groups count for a caller's access to `server`'s object: the
    domain of `server`'s computer account. A server without one (an Edge server, which no front end proxies to)
    counts as in the [directory] domain. None for evidence without domains."""
    if not directory.domains:
        return None
    account = _index(directory).computers.get(server.name.lower())
    domain = domain_of(directory, account.dn if account is not None else directory.domain_dn)
    return domain.dn if domain is not None else None


def token_gaps(directory: Directory, principal: Principal, resource: str | None) -> list[str]:
    """What keeps the principal's token at a server of `resource` from being known: a domain whose DC could not be
    read (its global groups, if the principal's own; its domain-local groups, if the resource's) and, in a forest of
    several domains, a global catalog that could not be read (the universal groups of the other domains)."""
    if not directory.domains:
        return []
    gaps = []
    own = domain_of(directory, principal.dn)
    if own is not None and own.unavailable:
        gaps.append(f"{domain_label(own)} could not be read ({own.unavailable}): its groups hold {principal.name}")
    if several_domains(directory) and directory.global_catalog is None:
        why = directory.global_catalog_unavailable or "not read"
        gaps.append(f"the global catalog could not be read ({why}): the universal groups of the other domains")
    there = domain_of(directory, resource) if resource else None
    if there is not None and there is not own and there.unavailable:
        gaps.append(f"{domain_label(there)} could not be read ({there.unavailable}): its domain-local groups")
    return gaps


def token_groups(directory: Directory, principal: Principal, resource: str | None = None) -> tuple[Principal, ...]:
    """The groups in the principal's token at a server of `resource` (default: its own domain)."""
    return _index(directory).expansion(principal, _default_resource(directory, principal, resource))


def _default_resource(directory: Directory, principal: Principal, resource: str | None) -> str | None:
    if resource is not None or not directory.domains:
        return resource
    domain = domain_of(directory, principal.dn) or domain_of(directory, directory.domain_dn)
    return domain.dn if domain is not None else None


def principal_token(directory: Directory, principal: Principal, resource: str | None = None) -> frozenset[str]:
    """The SIDs of the principal's token at a server of `resource` (default: its own domain): its SID and
    sIDHistory, its primary group, its groups there (token_groups) and theirs, the network-logon SIDs; and for a
    computer, the SIDs Windows itself listed for it (tokenGroups at its own domain, tokenGroupsGlobalAndUniversal
    anywhere), so that a deny through a group the expansion missed is still found."""
    index = _index(directory)
    resource = _default_resource(directory, principal, resource)
    key = (principal.dn.lower(), resource.lower() if resource else None)
    if key not in index.tokens:
        groups = index.expansion(principal, resource)
        sids = {principal.sid, *principal.sid_history, *NETWORK_LOGON_SIDS}
        for group in groups:
            sids.add(group.sid)
            sids.update(group.sid_history)
        if principal.primary_group_sid:
            sids.add(principal.primary_group_sid)
        listed = principal.token_groups
        if listed is not None:
            own = domain_of(directory, principal.dn)
            at_home = own is None or resource is None or own.dn.lower() == resource.lower()
            sids.update((listed.token_groups if at_home else None) or listed.global_and_universal or ())
        index.tokens[key] = frozenset(sids)
    return index.tokens[key]


@dataclass(frozen=True)
class TokenMismatch:
    """Where a computer's tokenGroups (read from a DC of its domain) and the suite's expansion disagree."""

    controller: str
    only_listed: tuple[str, ...]  # SIDs Windows lists that the expansion did not find
    only_expanded: tuple[str, ...]  # SIDs the expansion found that Windows does not list

    def describe(self, directory: Directory, who: str) -> str:
        parts = []
        if self.only_listed:
            parts.append("only in tokenGroups: " + ", ".join(_sid_and_name(directory, s) for s in self.only_listed))
        if self.only_expanded:
            parts.append("only in the expansion: " + ", ".join(_sid_and_name(directory, s) for s in self.only_expanded))
        return (
            f"the groups of {who} as the suite expanded them differ from its tokenGroups read from "
            f"{self.controller}: {'; '.join(parts)} (a group the audit account cannot read, or a domain not read)"
        )


def _sid_and_name(directory: Directory, sid: str) -> str:
    name = sid_label(directory, sid)
    return sid if name == sid else f"{name} ({sid})"


def token_mismatch(directory: Directory, computer: Principal) -> TokenMismatch | None:
    """tokenGroups against the expansion at the computer's own domain, and tokenGroupsGlobalAndUniversal against
    its global and universal part. Windows computes both by the rules the expansion follows, so a difference means
    the suite's picture of the token is wrong somewhere. SIDs reached only through a network-logon SID's foreign
    security principal, and sIDHistory SIDs, may or may not be listed: they are no difference."""
    listed = computer.token_groups
    own = domain_of(directory, computer.dn)
    if listed is None or own is None:
        return None
    index = _index(directory)
    primary = {computer.primary_group_sid} if computer.primary_group_sid else set()
    full = {g.sid for g in index.expansion(computer, own.dn, foreign=False)} | primary
    tolerated = {g.sid for g in index.expansion(computer, own.dn, foreign=True)} - full
    tolerated |= {sid for g in index.expansion(computer, own.dn, foreign=True) for sid in g.sid_history}
    account_side = {g.sid for g in index.expansion(computer, own.dn, foreign=False) if g.scope != "domain_local"}
    account_side |= primary
    only_listed: set[str] = set()
    only_expanded: set[str] = set()
    for got, expected in ((listed.token_groups, full), (listed.global_and_universal, account_side)):
        if got is not None:
            only_listed |= set(got) - expected - tolerated
            only_expanded |= expected - set(got)
    if not only_listed and not only_expanded:
        return None
    return TokenMismatch(listed.controller, tuple(sorted(only_listed)), tuple(sorted(only_expanded)))


def membership_chain(
    directory: Directory, from_dn: str, to_sid: str, within: frozenset[str] | None = None
) -> list[Principal]:
    """The shortest chain from the principal at `from_dn` to the one with `to_sid`, both ends included (e.g.
    EX02$, Server Operators Team, Domain Admins); [] when the SID is not reached through groups (Everyone...).
    `within`: only through groups whose SID is in it (the token the chain explains)."""
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
            if parent.dn.lower() not in previous and (within is None or parent.sid in within):
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
    if principal.kind == "foreign":
        return WELL_KNOWN_NAMES.get(principal.sid, principal.sid)
    return principal.name


def principal_label(directory: Directory, principal: Principal) -> str:
    """The name evidence shows: in a forest of several domains with its domain (`CHILD\\Server Operators Team`),
    else as display_name."""
    name = display_name(principal)
    if not several_domains(directory) or principal.kind == "foreign" or principal.sid.startswith("S-1-5-32-"):
        return name
    domain = domain_of(directory, principal.dn)
    return f"{domain.netbios_name or domain.dns_name}\\{name}" if domain is not None else name


def _domain_by_sid(directory: Directory, sid: str) -> Domain | None:
    return next((d for d in directory.domains if d.sid and sid.startswith(d.sid + "-")), None)


def sid_name(directory: Directory, sid: str) -> str:
    principal = principal_by_sid(directory, sid)
    if principal is not None:
        return display_name(principal)
    if sid in WELL_KNOWN_NAMES:
        return WELL_KNOWN_NAMES[sid]
    domain_sids = [directory.domain_sid, *(d.sid for d in directory.domains)]
    for domain_sid in filter(None, domain_sids):
        if sid.startswith(domain_sid + "-"):
            rid = sid.rsplit("-", 1)[1]
            if rid.isdigit() and int(rid) in DOMAIN_RID_NAMES:
                return DOMAIN_RID_NAMES[int(rid)]
    return sid


def sid_label(directory: Directory, sid: str) -> str:
    """sid_name, with the domain in a forest of several domains (`ROOT\\Domain Admins`)."""
    principal = principal_by_sid(directory, sid)
    if principal is not None:
        return principal_label(directory, principal)
    name = sid_name(directory, sid)
    domain = _domain_by_sid(directory, sid) if several_domains(directory) and name != sid else None
    return f"{domain.netbios_name or domain.dns_name}\\{name}" if domain is not None else name


def group_name(directory: Directory, dn: str) -> str:
    """The collected group's name, else the value of its first RDN (CN=Exchange Servers,OU=... -> Exchange Servers)."""
    principal = principal_by_dn(directory, dn)
    return principal.name if principal is not None else rdn_value(dn)


def netbios_domain(directory: Directory, dn: str | None = None) -> str:
    """The NetBIOS name of the domain holding `dn` (default: the [directory] domain), for DOMAIN\\name in fixes:
    nETBIOSName as read from CN=Partitions, else (old evidence files) the first DC= label upper-cased, which is the
    default but not guaranteed."""
    domain = domain_of(directory, dn) if dn else None
    if domain is not None and domain.netbios_name:
        return domain.netbios_name
    if directory.netbios_domain and (domain is None or domain.dn.lower() == directory.domain_dn.lower()):
        return directory.netbios_domain
    source = domain.dn if domain is not None else directory.domain_dn
    return dns_domain_of(source).partition(".")[0].upper() or source


def ad_server(directory: Directory, dn: str) -> str | None:
    """The domain to run an AD cmdlet against for the object at `dn` (-Server), in a forest of several domains: its
    DNS name, from which the cmdlet finds a DC of that domain. None in one domain, where the default is right."""
    if not several_domains(directory):
        return None
    domain = domain_of(directory, dn)
    return domain.dns_name if domain is not None else None


def qualified_name(directory: Directory, sid: str) -> str:
    """The -User value for *-ADPermission: DOMAIN\\name for domain principals (the domain that holds them),
    BUILTIN\\name for builtin aliases, the plain name for other well-known SIDs (Everyone, SYSTEM...)."""
    name = sid_name(directory, sid)
    if sid.startswith("S-1-5-32-"):
        return "BUILTIN\\" + name.rsplit("\\", 1)[-1]
    principal = principal_by_sid(directory, sid)
    if principal is not None and principal.kind != "foreign":
        return f"{netbios_domain(directory, principal.dn)}\\{name}"
    domain = _domain_by_sid(directory, sid)
    if domain is not None:
        return f"{domain.netbios_name or netbios_domain(directory, domain.dn)}\\{name}"
    in_domain = bool(directory.domain_sid) and sid.startswith(f"{directory.domain_sid}-")
    return f"{netbios_domain(directory)}\\{name}" if in_domain else name
