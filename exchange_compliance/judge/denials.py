"""ACL-01's failing row: the denials grouped by the ACE that decided them, then the evidence and the fix.

One deny inherited by every server object (KB 2898571's example: Exchange Trusted Subsystem nested into Domain
Admins) denies each of 200 callers on all 200 objects through the same ACE. Grouping by that ACE keeps the work to
one SDDL rendering per ACE, one membership chain per trustee and one walk up the ancestors per ACE and container,
and the row to a few lines ("inherited from the organization container: on all 200 Exchange server objects"); an
ACE set on a few objects still lists each of them, since those are the objects to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from ..facts import NETWORK_LOGON_SIDS, Directory, ExchangeServer, Principal
from ..names import parent_dn
from .access import (
    ARROW,
    AccessDecision,
    ad_server,
    display_name,
    is_primary_group_link,
    membership_chain,
    principal_by_sid,
    principal_label,
    qualified_name,
    sid_label,
)
from .inheritance import (
    KNOWN_CLASSES,
    Origin,
    access_rights,
    ace_origin,
    container_of,
    container_role,
    coverage,
    inheritance_type,
)
from .powershell import comment, quote
from .security_descriptor import ACE_TYPES, Ace
from .verdict import Verdict

# `server` is filled in quoted (powershell.quote); the where-filter is the suite's own text.
KB_2898571_CHECK = (
    'Get-ADPermission -Identity {server} | where {{($_.ExtendedRights -like "ms-Exch-EPI-Token-Serialization") '
    '-and ($_.Deny -like "True")}} | ft -autosize User,ExtendedRights'
)
# An ACE's objects are listed one per line up to this many; past it the row names the first ones and a count
# (details["denied"] keeps every server).
LISTED_OBJECTS = 10
DOMAIN_COMPUTERS_RID = 515
# The trustees of the denies Exchange setup writes on the organization container (EXCHANGE_FACTS §2): Enterprise
# Admins, Domain Admins, Schema Admins (by RID, in any domain of the forest), and Organization Management.
SETUP_DENIED_RIDS = (519, 512, 518)
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
    # the token each trustee SID was first found in (a chain explains that token's membership)
    tokens: dict[str, frozenset[str]] = field(default_factory=dict)
    _chains: dict[str, list[Principal]] = field(default_factory=dict)

    def add(
        self,
        target: ExchangeServer,
        decision: AccessDecision,
        applicable: list[tuple[int, Ace]],
        token: frozenset[str] | None = None,
    ) -> None:
        assert decision.ace is not None and decision.index is not None  # a "denied" decision names its ACE
        self.by_ace.setdefault(decision.ace, []).append((target, decision.index))
        for _, ace in applicable:
            if ace.type in _DENY_TYPES and ace.sid is not None:
                entry = self.to_fix.setdefault((ace.sid, ace.inherited), (ace, []))
                entry[1].append(target)
                if token is not None:
                    self.tokens.setdefault(ace.sid, token)
        self.count += 1

    @property
    def first(self) -> ExchangeServer | None:
        """The server object the confirmation reads: a Mailbox server's (the back end checks its own object, and an
        Edge server's object is no back end's), else any denied one but an Edge's."""
        targets = [target for pairs in self.by_ace.values() for target, _ in pairs]
        return next((t for t in targets if t.is_mailbox), None) or next((t for t in targets if not t.is_edge), None)

    def chain(self, directory: Directory, account: Principal, sid: str) -> list[Principal]:
        if sid not in self._chains:
            self._chains[sid] = membership_chain(directory, account.dn, sid, self.tokens.get(sid))
        return self._chains[sid]

    def origins(
        self, directory: Directory, ace: Ace, targets: list[ExchangeServer]
    ) -> dict[Origin, list[ExchangeServer]]:
        """Where an inherited ACE on each target is set, the targets grouped by it: one walk per parent container
        (servers share a few), not one per target."""
        by_container: dict[str, list[ExchangeServer]] = {}
        for target in targets:
            by_container.setdefault(container_of(target.dn), []).append(target)
        grouped: dict[Origin, list[ExchangeServer]] = {}
        for servers in by_container.values():
            grouped.setdefault(ace_origin(directory, servers[0], ace), []).extend(servers)
        return grouped


def acl01_failure(
    directory: Directory,
    caller: ExchangeServer,
    account: Principal,
    cn: str,
    found: Denials,
    unreadable: list[str],
    notes: list[str],
) -> Verdict:
    who = principal_label(directory, account)
    total = len(directory.servers)
    lines = [
        f"{who} is denied {cn} on {found.count} of {total} Exchange server objects, so {caller.name} cannot proxy "
        "requests to them (KB 2898571):"
    ]
    records = []
    for ace, targets in found.by_ace.items():
        sid = ace.sid or ""
        sddl = ace.to_sddl(directory.domain_sid)
        chain = [principal_label(directory, p) for p in found.chain(directory, account, sid)]
        origins = _origins(directory, found, ace, [target for target, _ in targets])
        origin = origins[0][0] if len(origins) == 1 else f"inherited, set on {len(origins)} containers"
        lines.append(f"- deny ACE {sddl} for {sid_label(directory, sid)} ({sid}), {origin}")
        lines.append(f"  membership: {ARROW.join(chain) if chain else _no_chain(directory, account, sid)}")
        if len(origins) > 1:
            lines += [f"  {text}: {', '.join(t.name for t in servers)}" for text, servers, _ in origins]
        lines += _objects(targets, total)
        records.append(
            {
                "ace": sddl,
                "inherited": ace.inherited,
                "origin": origin,
                "origin_dn": [dn for _, _, dn in origins],
                "trustee": sid_label(directory, sid),
                "trustee_sid": sid,
                "chain": chain,
                "servers": [target.name for target, _ in targets],
                "ace_index": [index for _, index in targets],
            }
        )
    lines += [f"- could not be judged: {u}" for u in unreadable] + [f"- note: {n}" for n in notes]
    fix = _fix(directory, caller, account, cn, found)
    return Verdict.failed("\n".join(lines), fix, account=who, right=cn, denied=records, unreadable=unreadable)


def _origins(
    directory: Directory, found: Denials, ace: Ace, targets: list[ExchangeServer]
) -> list[tuple[str, list[ExchangeServer], str | None]]:
    """(what the evidence says of where the ACE is set, the targets it says it of, the DN it is set on), one per
    distinct origin."""
    if not ace.inherited:
        return [("set on the object itself (explicit)", targets, None)]
    grouped: dict[str, tuple[list[ExchangeServer], str | None]] = {}
    for origin, servers in found.origins(directory, ace, targets).items():
        if origin.dn is None:
            text, dn = f"inherited (from where is unknown: {origin.why})", None
        else:
            role = container_role(directory, origin.dn)
            text, dn = f"inherited from {role} ({origin.dn}), where it is set", origin.dn
        grouped.setdefault(text, ([], dn))[0].extend(servers)
    return [(text, servers, dn) for text, (servers, dn) in grouped.items()]


def _no_chain(directory: Directory, account: Principal, sid: str) -> str:
    if sid == account.sid:
        return f"the ACE names {display_name(account)} itself"
    if sid in NETWORK_LOGON_SIDS:
        return f"every network logon carries {sid_label(directory, sid)}"
    if sid in account.sid_history:
        return f"{sid} is in the sIDHistory of {display_name(account)}"
    listed = account.token_groups
    source = f" (read from {listed.controller})" if listed is not None else ""
    return f"the tokenGroups of {display_name(account)}{source} list it, but the groups read show no path to it"


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
    """Cut each path into a denied group at its first link outside Exchange's own memberships; offer the removal of
    the deny where it is set as the other way out, saying what else it covers.

    Judgment: the computer's default memberships are Exchange Servers and Exchange Trusted Subsystem, and Exchange
    nests its own groups inside its security-groups container (e.g. Exchange Trusted Subsystem in Exchange Windows
    Permissions). The first link leaving those is the one someone added: for EX02$ -> Server Operators Team ->
    Domain Admins that is EX02$ in Server Operators Team (removing it touches no one else); for KB 2898571's
    EX02$ -> Exchange Trusted Subsystem -> Domain Admins it is Exchange Trusted Subsystem in Domain Admins (every
    Exchange server was affected). A deny on a SID every logon carries, or on the account itself, can only be
    removed as an ACE: that is then the fix, not the other way out."""
    exchange_dns = {
        directory.well_known_groups.get(k, "").lower() for k in ("exchange_servers", "exchange_trusted_subsystem")
    }
    containers = {parent_dn(dn) for dn in exchange_dns if dn}
    commands: list[str] = []
    alternatives: list[str] = []
    membership_changed = False
    for (sid, _inherited), (ace, targets) in found.to_fix.items():
        chain = found.chain(directory, account, sid)
        link = _first_foreign_link(chain, exchange_dns, containers, sid)
        if link is not None:
            membership_changed = True
            commands += remove_membership(directory, *link)
            alternatives += _remove_ace(directory, found, ace, targets, cn, runnable=False)
        elif sid in NETWORK_LOGON_SIDS or sid == account.sid or sid in account.sid_history:
            commands += _remove_ace(directory, found, ace, targets, cn, runnable=True)
        else:  # reached through tokenGroups alone: the path must be found before it can be cut
            commands.append(
                f"# {comment(sid_label(directory, sid))} is in {comment(display_name(account))}'s token (tokenGroups) "
                "through memberships the audit account could not read: find them (Get-ADPrincipalGroupMembership) "
                "and take the computer out"
            )
            alternatives += _remove_ace(directory, found, ace, targets, cn, runnable=False)
    lines = list(dict.fromkeys(commands))  # each command once, in order
    if membership_changed:
        lines.append(f"# then restart {comment(caller.name)} so its computer token drops the group, and confirm:")
        lines.append(
            f"gpresult /scope computer /r    # on {comment(caller.name)}: no group named by the deny entries below"
        )
    else:
        lines.append("# then confirm:")
    check = found.first
    if check is not None:
        lines.append(KB_2898571_CHECK.format(server=quote(check.name)))
    else:
        lines.append("# (only Edge server objects deny it: no back end checks them; nothing to confirm there)")
    return "\n".join([*lines, *dict.fromkeys(alternatives)])


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


def membership_arguments(directory: Directory, group_dn: str, group: str, member: Principal) -> str:
    """`-Identity <group> [-Server <its domain>] -Members <member>` for Add-/Remove-ADGroupMember. In a forest of
    several domains the cmdlet runs against the group's domain, and a member of another domain is given as the
    object read from its own (the cmdlet resolves names in the domain it runs against)."""
    server = ad_server(directory, group_dn)
    members = quote(display_name(member))
    member_server = ad_server(directory, member.dn)
    if member_server is not None and member_server != server:
        cmdlet = "Get-ADComputer" if member.kind == "computer" else "Get-ADGroup"
        members = f"({cmdlet} -Identity {members} -Server {quote(member_server)})"
    return f"-Identity {quote(group)}" + (f" -Server {quote(server)}" if server else "") + f" -Members {members}"


def remove_membership(directory: Directory, member: Principal, group: Principal) -> list[str]:
    """The commands that take `member` out of `group` (a primary group included)."""
    who = display_name(member)
    if not is_primary_group_link(member, group):
        return [f"Remove-ADGroupMember {membership_arguments(directory, group.dn, group.name, member)} -Confirm:$false"]
    # Remove-ADGroupMember cannot drop a primary group: make Domain Computers primary again, which needs the
    # computer in it first. Its name is localised, so it is found by SID (<domain SID>-515); uncollected, the SID
    # itself names it, which -Identity accepts. A computer's own SID is <domain SID>-<RID>.
    domain_sid = member.sid.rsplit("-", 1)[0]
    computers_sid = f"{domain_sid}-{DOMAIN_COMPUTERS_RID}"
    found = principal_by_sid(directory, computers_sid)
    server = ad_server(directory, member.dn)
    on = f" -Server {quote(server)}" if server else ""
    return [
        f"Add-ADGroupMember -Identity {quote(found.name if found else computers_sid)}{on} -Members {quote(who)}",
        f"Set-ADComputer -Identity {quote(who)}{on} -Replace @{{primaryGroupID={DOMAIN_COMPUTERS_RID}}}",
    ]


def _setup_default(directory: Directory, origin: str, ace: Ace) -> bool:
    """One of the denies Exchange setup writes on the organization container."""
    if origin.lower() != directory.org_dn.lower() or ace.type not in _DENY_TYPES or ace.sid is None:
        return False
    management = directory.well_known_groups.get("organization_management")
    group = principal_by_sid(directory, ace.sid)
    if group is not None and management and group.dn.lower() == management.lower():
        return True
    rid = ace.sid.rsplit("-", 1)[-1]
    return ace.sid.startswith("S-1-5-21-") and rid.isdigit() and int(rid) in SETUP_DENIED_RIDS


def _remove_ace(
    directory: Directory, found: Denials, ace: Ace, targets: list[ExchangeServer], cn: str, *, runnable: bool
) -> list[str]:
    """Removing the deny where it is set: each object that carries it explicitly, or the container an inherited one
    comes from, saying what else it covers there. `runnable` False: the other way out, written as comments."""
    user = qualified_name(directory, ace.sid or "")
    trustee = sid_label(directory, ace.sid or "")
    command = f"-User {quote(user)} -Deny -AccessRights ExtendedRight -ExtendedRights {quote(cn)}"
    if not ace.inherited:
        removals = [f"Remove-ADPermission -Identity {quote(target.name)} {command}" for target in targets]
        if runnable:
            return removals
        where = ", ".join(target.name for target in targets[:LISTED_OBJECTS])
        return [
            f"# Or, instead of the membership: remove the deny set on the server object(s) {comment(where)}, which "
            f"denies {comment(cn)} to {comment(_whom(directory, ace.sid or ''))} there:",
            *(f"#   {comment(removal)}" for removal in removals),
        ]
    origins = found.origins(directory, ace, targets)
    lines: list[str] = []
    sddl = comment(ace.to_sddl(directory.domain_sid))
    for origin in origins:
        if origin.dn is None or origin.ace is None:
            # Which container sets it is not in the facts: say so, rather than print a runnable command at a guess.
            lines.append(
                f"# {'Or: remove' if not runnable else 'Remove'} {sddl} where it is set; the collected facts do not "
                f"show where ({comment(origin.why)}): the object's Advanced Security Settings name it under "
                f'"Inherited from". There, run:\n'
                f"#   Remove-ADPermission -Identity <that container> {comment(command)} -InheritanceType All"
            )
            continue
        lines += _remove_at_origin(directory, origin, ace, trustee, user, cn, runnable)
    return lines


def _remove_at_origin(
    directory: Directory, origin: Origin, ace: Ace, trustee: str, user: str, cn: str, runnable: bool
) -> list[str]:
    assert origin.dn is not None and origin.ace is not None
    set_ace = origin.ace
    covered = coverage(directory, origin.dn, ace)
    servers = ", ".join(s.name for s in covered.servers[:LISTED_OBJECTS])
    more = f" and {len(covered.servers) - LISTED_OBJECTS} more" if len(covered.servers) > LISTED_OBJECTS else ""
    what = f"{len(covered.servers)} server object(s) ({servers}{more})" if covered.servers else "no server object"
    through = ", ".join(container_role(directory, dn) for dn in covered.containers)
    role = container_role(directory, origin.dn)
    summary = (
        f"{comment(set_ace.to_sddl(directory.domain_sid))} is set on {comment(role)} ({comment(origin.dn)}): it "
        f"denies {comment(cn)} to {comment(_whom(directory, ace.sid or ''))} on {comment(what)}"
        + (f", passed on through {comment(through)}" if through else "")
    )
    arguments = _permission_arguments(set_ace, user, cn)
    removal = f"Remove-ADPermission -Identity {quote(origin.dn)} {arguments}" if arguments else None
    if _setup_default(directory, origin.dn, set_ace):
        # Exchange setup's own deny: removing it would let every member of that group serialize tokens.
        head = (
            f"# Not recommended: {summary}. Exchange setup writes it, so that no member of {comment(trustee)} can "
            "serialize tokens (act towards Exchange's back ends as any user); removing it would let them all. Take "
            "the membership out instead. Only if the deny itself must go:"
        )
        return [
            head,
            f"#   {comment(removal)}" if removal else "#   (the ACE's rights have no Remove-ADPermission form)",
        ]
    if removal is None:
        return [
            f"# {summary}; its rights or inheritance have no exact Remove-ADPermission form: remove it in ADSI Edit"
        ]
    if runnable:
        return [f"# {summary}: remove it there:", removal]
    return [f"# Or, instead of the membership: {summary}. To remove it there:", f"#   {comment(removal)}"]


def _whom(directory: Directory, sid: str) -> str:
    """Whom a deny for `sid` denies: every member of a group, or the one principal, or every caller."""
    name = sid_label(directory, sid)
    if sid in NETWORK_LOGON_SIDS:
        return f"every caller ({name})"
    principal = principal_by_sid(directory, sid)
    return name if principal is not None and principal.kind == "computer" else f"every member of {name}"


def _permission_arguments(ace: Ace, user: str, cn: str) -> str | None:
    """-User ... -Deny -AccessRights ... for Remove-ADPermission, matching the ACE as set; None when it cannot be
    named exactly (the cmdlet removes only an exact match)."""
    rights = access_rights(ace)
    inheritance = inheritance_type(ace)
    if rights is None:
        return None
    parts = [f"-User {quote(user)}", "-Deny", f"-AccessRights {rights}"]
    if rights == "ExtendedRight" and ace.object_type is not None:
        parts.append(f"-ExtendedRights {quote(cn)}")
    if inheritance is not None:
        parts.append(f"-InheritanceType {inheritance}")
    if ace.inherited_object_type is not None:
        name = KNOWN_CLASSES.get(ace.inherited_object_type)
        if name is None:
            return None
        parts.append(f"-InheritedObjectType {name}")
    return " ".join(parts)
