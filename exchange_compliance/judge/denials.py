"""ACL-01's failing row: the denials grouped by the ACE that decided them, then the evidence and the fix.

One deny inherited by every server object (seed 000: Exchange Trusted Subsystem nested into Domain Admins) denies
each of 200 callers on all 200 objects through the same ACE. Grouping by that ACE keeps the work to one SDDL
rendering per ACE and one membership chain per trustee, and the row to a few lines ("inherited from the
organization container: on all 200 Exchange server objects"); an ACE set on a few objects still lists each of
them, since those are the objects to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from ..facts import Directory, ExchangeServer, Principal
from ..names import parent_dn
from .access import (
    ARROW,
    AccessDecision,
    display_name,
    is_primary_group_link,
    membership_chain,
    principal_by_sid,
    qualified_name,
    sid_name,
)
from .powershell import comment, quote
from .security_descriptor import (
    ACE_TYPES,
    CONTAINER_INHERIT_ACE,
    INHERITED_ACE,
    Ace,
    DescriptorError,
    parse_descriptor,
)
from .verdict import Verdict

# `server` is filled in quoted (powershell.quote); the where-filter is the suite's own text.
SEED_000_CHECK = (
    'Get-ADPermission -Identity {server} | where {{($_.ExtendedRights -like "ms-Exch-EPI-Token-Serialization") '
    '-and ($_.Deny -like "True")}} | ft -autosize User,ExtendedRights'
)
# An ACE's objects are listed one per line up to this many; past it the row names the first ones and a count
# (details["denied"] keeps every server).
LISTED_OBJECTS = 10
DOMAIN_COMPUTERS_RID = 515
# ACE type codes that deny (callback ones included): Ace.ace_type builds an object per call, and `add` runs for
# every denied object of every caller.
_DENY_TYPES = frozenset(code for code, kind in ACE_TYPES.items() if kind.kind == "deny")


@dataclass
class Denials:
    """What ACL-01 found for one caller, gathered while checking each object."""

    # the deciding ACE -> the objects it decides, with its index in each DACL
    by_ace: dict[Ace, list[tuple[ExchangeServer, int]]] = field(default_factory=dict)
    # every applicable deny, deciding or not, by (trustee SID, inherited): the first such ACE and the objects
    # carrying it. The fix works on these: one membership cut per SID, one ACE removal per object or origin.
    to_fix: dict[tuple[str, bool], tuple[Ace, list[ExchangeServer]]] = field(default_factory=dict)
    count: int = 0
    first: ExchangeServer | None = None
    _chains: dict[str, list[Principal]] = field(default_factory=dict)

    def add(self, target: ExchangeServer, decision: AccessDecision, applicable: list[tuple[int, Ace]]) -> None:
        assert decision.ace is not None and decision.index is not None  # a "denied" decision names its ACE
        self.by_ace.setdefault(decision.ace, []).append((target, decision.index))
        for _, ace in applicable:
            if ace.type in _DENY_TYPES and ace.sid is not None:
                entry = self.to_fix.setdefault((ace.sid, ace.inherited), (ace, []))
                entry[1].append(target)
        self.count += 1
        self.first = self.first or target

    def chain(self, directory: Directory, account: Principal, sid: str) -> list[Principal]:
        if sid not in self._chains:
            self._chains[sid] = membership_chain(directory, account.dn, sid)
        return self._chains[sid]


def acl01_failure(
    directory: Directory,
    caller: ExchangeServer,
    account: Principal,
    cn: str,
    found: Denials,
    unreadable: list[str],
    notes: list[str],
) -> Verdict:
    who = display_name(account)
    total = len(directory.servers)
    lines = [
        f"{who} is denied {cn} on {found.count} of {total} Exchange server objects, so {caller.name} cannot proxy "
        "requests to them (seed 000):"
    ]
    records = []
    for ace, targets in found.by_ace.items():
        sid = ace.sid or ""
        sddl = ace.to_sddl(directory.domain_sid)
        chain = [display_name(p) for p in found.chain(directory, account, sid)]
        origin = _origin(directory, ace)
        lines.append(f"- deny ACE {sddl} for {sid_name(directory, sid)} ({sid}), {origin}")
        lines.append(f"  membership: {ARROW.join(chain) if chain else _no_chain(directory, account, sid)}")
        lines += _objects(targets, total)
        records.append(
            {
                "ace": sddl,
                "inherited": ace.inherited,
                "origin": origin,
                "trustee": sid_name(directory, sid),
                "trustee_sid": sid,
                "chain": chain,
                "servers": [target.name for target, _ in targets],
                "ace_index": [index for _, index in targets],
            }
        )
    lines += [f"- could not be judged: {u}" for u in unreadable] + [f"- note: {n}" for n in notes]
    fix = _fix(directory, caller, account, cn, found)
    return Verdict.failed("\n".join(lines), fix, account=who, right=cn, denied=records, unreadable=unreadable)


def _no_chain(directory: Directory, account: Principal, sid: str) -> str:
    if sid == account.sid:
        return f"the ACE names {display_name(account)} itself"
    return f"every network logon carries {sid_name(directory, sid)}"


def _org_state(directory: Directory, ace: Ace) -> str:
    """Where the organization container stands on an inherited ACE: "set" (it carries the ACE for its children,
    explicitly), "inherited" (it carries it inherited, so it is set higher up), "absent" (so it is set between the
    organization and the server objects), "unknown" (its descriptor was not collected or does not parse)."""
    if directory.org_security_descriptor is None:
        return "unknown"
    try:
        org = parse_descriptor(directory.org_security_descriptor, what=directory.org_dn)
    except DescriptorError:
        return "unknown"
    wanted = (ace.type, ace.mask, ace.sid, ace.object_type, ace.inherited_object_type)
    for own in org.dacl.aces if org.dacl is not None else ():
        if own.flags & CONTAINER_INHERIT_ACE and (
            (own.type, own.mask, own.sid, own.object_type, own.inherited_object_type) == wanted
        ):
            return "inherited" if own.flags & INHERITED_ACE else "set"
    return "absent"


_ORIGINS = {
    "set": "inherited from the organization container ({org})",
    "inherited": "inherited through the organization container ({org}) from a container above it",
    "absent": "inherited from a container below the organization container ({org}), which does not set it",
    "unknown": "inherited (from where is unknown: the organization container's descriptor was not read)",
}


def _origin(directory: Directory, ace: Ace) -> str:
    if not ace.inherited:
        return "set on the object itself (explicit)"
    return _ORIGINS[_org_state(directory, ace)].format(org=directory.org_dn)


def _objects(targets: list[tuple[ExchangeServer, int]], total: int) -> list[str]:
    indexes = sorted({index for _, index in targets})
    at = f"ACE #{indexes[0]} on each" if len(indexes) == 1 else f"ACE #{', #'.join(map(str, indexes))} by object"
    if len(targets) == total and total > 1:
        return [f"  on all {total} Exchange server objects ({at})"]
    if len(targets) <= LISTED_OBJECTS:
        return [f"  on {target.name} ({target.dn}), ACE #{index}" for target, index in targets]
    names = ", ".join(target.name for target, _ in targets[:LISTED_OBJECTS])
    more = len(targets) - LISTED_OBJECTS
    return [f"  on {len(targets)} of {total} Exchange server objects ({at}): {names} and {more} more"]


# --- the fix -------------------------------------------------------------------------------------------------------


def _fix(directory: Directory, caller: ExchangeServer, account: Principal, cn: str, found: Denials) -> str:
    """Cut each path into a denied group at its first link outside Exchange's own memberships.

    Judgment: the computer's default memberships are Exchange Servers and Exchange Trusted Subsystem, and Exchange
    nests its own groups inside its security-groups container (e.g. Exchange Trusted Subsystem in Exchange Windows
    Permissions). The first link leaving those is the one someone added: for EX02$ -> Server Operators Team ->
    Domain Admins that is EX02$ in Server Operators Team (removing it touches no one else); for seed 000's
    EX02$ -> Exchange Trusted Subsystem -> Domain Admins it is Exchange Trusted Subsystem in Domain Admins (every
    Exchange server was affected). A deny on a SID that is not reached through groups is removed as an ACE."""
    exchange_dns = {
        directory.well_known_groups.get(k, "").lower() for k in ("exchange_servers", "exchange_trusted_subsystem")
    }
    containers = {parent_dn(dn) for dn in exchange_dns if dn}
    commands: list[str] = []
    membership_changed = False
    for (sid, _inherited), (ace, targets) in found.to_fix.items():
        link = _first_foreign_link(found.chain(directory, account, sid), exchange_dns, containers, sid)
        if link is None:
            commands += _remove_ace(directory, ace, targets, cn)
        else:
            membership_changed = True
            commands += _cut(directory, *link)
    lines = list(dict.fromkeys(commands))  # each command once, in order
    if membership_changed:
        lines.append(f"# then restart {comment(caller.name)} so its computer token drops the group, and confirm:")
        lines.append(
            f"gpresult /scope computer /r    # on {comment(caller.name)}: no group named by the deny entries below"
        )
    else:
        lines.append("# then confirm:")
    assert found.first is not None
    lines.append(SEED_000_CHECK.format(server=quote(found.first.name)))
    return "\n".join(lines)


def _first_foreign_link(
    chain: list[Principal], exchange_dns: set[str], containers: set[str], trustee_sid: str
) -> tuple[Principal, Principal] | None:
    for member, group in pairwise(chain):
        dn = group.dn.lower()
        exchange_nesting = parent_dn(member.dn.lower()) in containers and parent_dn(dn) in containers
        if dn in exchange_dns or (exchange_nesting and group.sid != trustee_sid):
            continue
        return member, group
    return None


def _cut(directory: Directory, member: Principal, group: Principal) -> list[str]:
    who = display_name(member)
    if not is_primary_group_link(member, group):
        return [f"Remove-ADGroupMember -Identity {quote(group.name)} -Members {quote(who)} -Confirm:$false"]
    # Remove-ADGroupMember cannot drop a primary group: make Domain Computers primary again, which needs the
    # computer in it first. Its name is localised, so it is found by SID (<domain SID>-515); uncollected, the SID
    # itself names it, which -Identity accepts. A computer's own SID is <domain SID>-<RID>.
    domain_sid = directory.domain_sid or member.sid.rsplit("-", 1)[0]
    computers_sid = f"{domain_sid}-{DOMAIN_COMPUTERS_RID}"
    found = principal_by_sid(directory, computers_sid)
    return [
        f"Add-ADGroupMember -Identity {quote(found.name if found else computers_sid)} -Members {quote(who)}",
        f"Set-ADComputer -Identity {quote(who)} -Replace @{{primaryGroupID={DOMAIN_COMPUTERS_RID}}}",
    ]


def _remove_ace(directory: Directory, ace: Ace, targets: list[ExchangeServer], cn: str) -> list[str]:
    user = qualified_name(directory, ace.sid or "")
    command = f"-User {quote(user)} -Deny -AccessRights ExtendedRight -ExtendedRights {quote(cn)}"
    if not ace.inherited:
        return [f"Remove-ADPermission -Identity {quote(target.name)} {command}" for target in targets]
    # Inherited: it has to go where it is set, once for every object inheriting it.
    sddl = comment(ace.to_sddl(directory.domain_sid))
    if _org_state(directory, ace) == "set":
        return [
            f"# {sddl} is inherited by {len(targets)} server object(s) from the organization container: remove it "
            f"there:\nRemove-ADPermission -Identity {quote(directory.org_dn)} {command} -InheritanceType All"
        ]
    # Which container sets it is not in the facts: say so, rather than print a runnable command aimed at a guess.
    return [
        f"# {sddl} is inherited by {len(targets)} server object(s), e.g. {comment(targets[0].name)}, and the "
        "collected facts do not show which container sets it: it must be found (the object's Advanced Security "
        'Settings name it under "Inherited from"). There, run:\n'
        f"#   Remove-ADPermission -Identity <that container> {comment(command)} -InheritanceType All"
    ]
