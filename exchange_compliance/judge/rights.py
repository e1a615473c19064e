"""ACL-01, ACL-02, ACL-03 and GRP-01: who holds Exchange's EPI rights on the server objects, and group membership.

Groups are found only through Directory.well_known_groups (names are localised and can be renamed) and right GUIDs
only through Directory.extended_rights. A descriptor that cannot be read or parsed makes the verdict for that
object an error (FactUnavailable naming the object), never a crash of the judge.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from exchange_compliance.facts import Directory, ExchangeServer, Principal
from exchange_compliance.judge.access import (
    ARROW,
    NETWORK_LOGON_SIDS,
    AccessDecision,
    NoComputerAccount,
    applicable_aces,
    check_right,
    computer_account,
    covers_right,
    decision_key,
    display_name,
    domain_of,
    group_name,
    membership_chain,
    netbios_domain,
    principal_by_dn,
    principal_label,
    principal_token,
    qualified_name,
    resource_domain,
    several_domains,
    sid_label,
    token_gaps,
    token_groups,
    token_mismatch,
    unresolved_groups,
)
from exchange_compliance.judge.denials import Denials, acl01_failure, membership_arguments, remove_membership
from exchange_compliance.judge.memo import IdentityCache
from exchange_compliance.judge.powershell import comment, quote
from exchange_compliance.judge.security_descriptor import (
    CONTAINER_INHERIT_ACE,
    Ace,
    DescriptorError,
    SecurityDescriptor,
    parse_descriptor,
)
from exchange_compliance.judge.verdict import FactUnavailable, Verdict

TOKEN_SERIALIZATION = "ms-Exch-EPI-Token-Serialization"
# servers named in one line of evidence before "and N more"
LISTED = 10
IMPERSONATION = "ms-Exch-EPI-Impersonation"


# --- Lookups shared by the judges --------------------------------------------------------------------------------


def right_guid(directory: Directory, right_cn: str) -> tuple[str, str]:
    """(the right's CN as the org spells it, its rightsGuid); FactUnavailable when the org lacks it."""
    for cn, guid in directory.extended_rights.items():
        if cn.lower() == right_cn.lower():
            return cn, guid.lower()
    raise FactUnavailable(
        f"the extended right {right_cn} was not found under CN=Extended-Rights,{directory.configuration_dn}: "
        "Exchange's /PrepareAD has not run in this forest, or the collector did not read the rights"
    )


def well_known_dn(directory: Directory, role: str) -> str:
    try:
        return directory.well_known_groups[role]
    except KeyError:
        raise FactUnavailable(
            f"otherWellKnownObjects on CN=Microsoft Exchange,CN=Services,{directory.configuration_dn} "
            f"does not name the {role.replace('_', ' ')} group"
        ) from None


def _descriptor(server: ExchangeServer) -> SecurityDescriptor:
    if server.security_descriptor is None:
        raise FactUnavailable(f"the nTSecurityDescriptor of {server.dn} was not collected")
    try:
        return parse_descriptor(server.security_descriptor, what=server.dn)
    except DescriptorError as err:
        raise FactUnavailable(str(err)) from err


def _ace_text(directory: Directory, index: int, ace: Ace) -> str:
    return f"ACE #{index} {ace.to_sddl(directory.domain_sid)}" + (" (inherited)" if ace.inherited else " (explicit)")


def _unevaluated_note(server: ExchangeServer, decision: AccessDecision) -> list[str]:
    if not decision.unevaluated:
        return []
    return [
        f"{server.name}: conditional (callback) ACE(s) #{', #'.join(map(str, decision.unevaluated))} match the "
        "token; their conditions were not evaluated"
    ]


# --- ACL-01 --------------------------------------------------------------------------------------------------------


def token_serialization_not_denied(directory: Directory, caller: ExchangeServer) -> Verdict:
    """ACL-01: no deny in effect keeps the caller's computer account from ms-Exch-EPI-Token-Serialization on any
    Exchange server object (the back end checks its own object against the calling front end's token, which holds
    the domain-local groups of the back end's domain: one token per domain of the targets)."""
    if caller.is_edge:
        return Verdict.not_applicable(f"{caller.name} is an Edge server: no computer account in the domain")
    try:
        account = computer_account(directory, caller.name)
    except NoComputerAccount as err:
        raise FactUnavailable(
            f"{err}{_not_found_why(directory)}: cannot build the token {caller.name} presents to other servers"
        ) from None
    cn, guid = right_guid(directory, TOKEN_SERIALIZATION)
    found = Denials()
    plan = _acl01_targets(directory, guid)
    unreadable = list(plan.unreadable)
    notes: list[str] = []
    unknown_tokens: dict[tuple[str, ...], list[ExchangeServer]] = {}
    # One check per group of objects alike for the right (the decision is the same for every object in it), then
    # the objects in their order: the evidence lists them as checking each in turn did.
    outcomes: list[tuple[tuple[str, ...], frozenset[str], AccessDecision | None, list[tuple[int, Ace]]]] = []
    for resource, descriptor in plan.groups:
        gaps = tuple(token_gaps(directory, account, resource))
        if gaps:
            outcomes.append((gaps, frozenset(), None, []))
            continue
        token = principal_token(directory, account, resource)
        decision = check_right(descriptor, token, guid)
        denied = decision.outcome == "denied"
        outcomes.append((gaps, token, decision, applicable_aces(descriptor, token, guid) if denied else []))
    if any(decision is None or not decision.allowed or decision.unevaluated for _, _, decision, _ in outcomes):
        for target, group in plan.order:
            gaps, token, decision, applicable = outcomes[group]
            if decision is None:
                unknown_tokens.setdefault(gaps, []).append(target)
                continue
            notes += _unevaluated_note(target, decision)
            if decision.outcome == "denied":
                found.add(target, decision, applicable, token)
            elif decision.outcome == "not_granted":
                notes.append(f"{target.name}: not granted either ({decision.reason}; see ACL-02)")
    who = principal_label(directory, account)
    for gaps, targets in unknown_tokens.items():
        names = ", ".join(t.name for t in targets[:LISTED]) + (
            f" and {len(targets) - LISTED} more" if len(targets) > LISTED else ""
        )
        unreadable.append(
            f"{len(targets)} server object(s) ({names}): the token {who} presents there is not known: "
            + "; ".join(gaps)
        )
    unresolved = unresolved_groups(directory, account)
    if unresolved:
        notes.append(
            "groups in the membership that were not collected (a deny through them would be missed): "
            + "; ".join(unresolved)
        )
    mismatch = token_mismatch(directory, account)
    if mismatch is not None:
        unreadable.append(mismatch.describe(directory, who))
    unchecked = _not_cross_checked(directory, account)
    if unchecked:
        notes.append(unchecked)
    if not found.count:
        if unreadable:
            raise FactUnavailable(f"ACL-01 for {who} cannot be judged on: " + "; ".join(unreadable))
        evidence = f"{who} is not denied {cn} on any of the {len(directory.servers)} Exchange server objects."
        return Verdict.passed("\n".join([evidence, *notes]), account=who, right=cn, notes=notes)
    return acl01_failure(directory, caller, account, cn, found, unreadable, notes)


@dataclass(frozen=True)
class _Targets:
    """The server objects ACL-01 checks every caller against, read once per Directory and right: the objects whose
    descriptor cannot be read (why, in server order); the groups of objects alike for the access check (the same
    resource domain and decision_key), each with one descriptor standing for all; each object with its group."""

    unreadable: tuple[str, ...]
    groups: tuple[tuple[str | None, SecurityDescriptor], ...]
    order: tuple[tuple[ExchangeServer, int], ...]


def _group_targets(directory: Directory, guid: str) -> _Targets:
    unreadable: list[str] = []
    groups: dict[tuple[str | None, Hashable], int] = {}
    standing: list[tuple[str | None, SecurityDescriptor]] = []
    order: list[tuple[ExchangeServer, int]] = []
    for target in directory.servers:
        try:
            descriptor = _descriptor(target)
        except FactUnavailable as err:
            unreadable.append(str(err))
            continue
        resource = resource_domain(directory, target)
        key = (resource, decision_key(descriptor, guid))
        if key not in groups:
            groups[key] = len(standing)
            standing.append((resource, descriptor))
        order.append((target, groups[key]))
    return _Targets(tuple(unreadable), tuple(standing), tuple(order))


# Per Directory, by right GUID: every caller of a 1,000-server org is checked against the same objects.
_targets: IdentityCache[Directory, dict[str, _Targets]] = IdentityCache(lambda _directory: {})


def _acl01_targets(directory: Directory, guid: str) -> _Targets:
    by_right = _targets(directory)
    if guid not in by_right:
        by_right[guid] = _group_targets(directory, guid)
    return by_right[guid]


def _not_cross_checked(directory: Directory, account: Principal) -> str | None:
    """Why the expansion of a computer read from its domain's DC was not checked against its tokenGroups."""
    own = domain_of(directory, account.dn)
    if own is None or own.controller is None:
        return None  # evidence of an earlier version, or the domain was not read (an error of its own)
    listed = account.token_groups
    if listed is not None and (listed.token_groups is not None or listed.global_and_universal is not None):
        return None
    return (
        f"{own.controller} returned neither tokenGroups nor tokenGroupsGlobalAndUniversal of "
        f"{display_name(account)}: its groups were not cross-checked (the audit account may not read them, KB 331951)"
    )


def _not_found_why(directory: Directory) -> str:
    """Why a computer account may not have been found: in a forest of several domains, without the global catalog
    only the [directory] domain was searched."""
    if several_domains(directory) and directory.global_catalog is None:
        why = directory.global_catalog_unavailable or "not read"
        return f" (the global catalog could not be read, {why}: only the [directory] domain was searched)"
    return ""


# --- ACL-02 / ACL-03 -------------------------------------------------------------------------------------------


def exchange_servers_hold_right(directory: Directory, server: ExchangeServer, right_cn: str) -> Verdict:
    """ACL-02 (ms-Exch-EPI-Token-Serialization) / ACL-03 (ms-Exch-EPI-Impersonation): the Exchange Servers group
    holds the right on this Mailbox/Client Access server's object ("O365 Hybrid Wizard - Hybrid Agent Fails to
    Validate")."""
    if not (server.is_mailbox or server.is_client_access):
        return Verdict.not_applicable(f"{server.name} has neither the Mailbox nor the Client Access role")
    cn, guid = right_guid(directory, right_cn)
    es_dn = well_known_dn(directory, "exchange_servers")
    group = principal_by_dn(directory, es_dn)
    if group is None:
        raise FactUnavailable(f"the Exchange Servers group {es_dn} was not collected (its SID is needed)")
    resource = resource_domain(directory, server)
    gaps = token_gaps(directory, group, resource)
    if gaps:
        raise FactUnavailable(
            f"the token {group.name} gives its members at {server.name} is not known: " + "; ".join(gaps)
        )
    token = principal_token(directory, group, resource)
    descriptor = _descriptor(server)
    decision = check_right(descriptor, token, guid)
    name = group.name
    notes = _unevaluated_note(server, decision)
    if decision.allowed:
        how = decision.reason if decision.ace is None else _ace_text(directory, decision.index or 0, decision.ace)
        evidence = "\n".join([f"{name} holds {cn} on {server.dn}: {how}.", *notes])
        return Verdict.passed(evidence, object=server.dn, right=cn, ace=how)
    lines = [f"{name} ({group.sid}) does not hold {cn} on {server.dn}:"]
    commands = []
    if decision.outcome == "denied" and decision.ace is not None and decision.index is not None:
        lines.append(
            f"- {_ace_text(directory, decision.index, decision.ace)} denies it to "
            f"{sid_label(directory, decision.ace.sid or '')} ({decision.ace.sid}) ahead of any allow"
        )
        later = [i for i, a in applicable_aces(descriptor, token, guid) if a.ace_type.kind == "allow"]
        lines.append(f"- allowed further down by ACE #{', #'.join(map(str, later))}" if later else "- no ACE allows it")
        commands += _acl02_deny_fix(directory, server, group, decision.ace, cn)
    else:
        lines += _explain_not_granted(directory, descriptor, token, guid, decision)
    lines += notes
    domain = netbios_domain(directory, group.dn)
    user = f"{domain}\\{name}"  # one value: quoting the name alone would leave the domain part open
    commands.append(
        f"Add-ADPermission -Identity {quote(server.name)} -User {quote(user)} "
        f"-AccessRights ExtendedRight -ExtendedRights {quote(cn)}"
    )
    commands.append(f"iisreset    # on {comment(server.name)}, from an elevated prompt")
    details = {"object": server.dn, "right": cn, "outcome": decision.outcome, "protected": descriptor.dacl_protected}
    if decision.ace is not None:
        details["ace"] = decision.ace.to_sddl(directory.domain_sid)
    return Verdict.failed("\n".join(lines), "\n".join(commands), **details)


def _acl02_deny_fix(directory: Directory, server: ExchangeServer, group: Principal, ace: Ace, cn: str) -> list[str]:
    commands = []
    chain = membership_chain(directory, group.dn, ace.sid or "")
    if len(chain) >= 2:
        # Exchange Servers nested into a denied group: undo the nesting (it hurts every object, not only this one).
        commands += remove_membership(directory, group, chain[1])
    if not ace.inherited:
        # An explicit deny precedes an explicit allow in canonical order: the allow below would not win.
        user = qualified_name(directory, ace.sid or "")
        commands.append(
            f"Remove-ADPermission -Identity {quote(server.name)} -User {quote(user)}"
            f" -Deny -AccessRights ExtendedRight -ExtendedRights {quote(cn)}"
        )
    else:
        commands.append("# the deny is inherited: the explicit allow added below is evaluated ahead of it")
    return commands


def _explain_not_granted(
    directory: Directory, descriptor: SecurityDescriptor, token: frozenset[str], guid: str, decision: AccessDecision
) -> list[str]:
    lines = [f"- {decision.reason}"]
    dacl = descriptor.dacl.aces if descriptor.dacl is not None else ()
    # Everyone / Authenticated Users allows (read access on every object) are not "for the group": leave them out.
    own = token - NETWORK_LOGON_SIDS
    near = [(i, a) for i, a in enumerate(dacl) if a.sid in own and a.ace_type.kind == "allow"]
    if near:
        lines.append(
            "- allow ACEs for the group exist but none covers the right on this object: "
            + ", ".join(_ace_text(directory, i, a) + (" inherit-only" if a.inherit_only else "") for i, a in near)
        )
    else:
        lines.append("- no allow ACE for the group at all")
    org_allow = _org_inheritable_allow(directory, token, guid)
    if descriptor.dacl_protected:
        dropped = f"; the organization container grants it inheritably with {org_allow}, and the protection dropped it"
        lines.append(
            "- the DACL is protected (SE_DACL_PROTECTED: inheritance disabled), so nothing is inherited"
            + (dropped if org_allow else "")
        )
    elif org_allow:
        lines.append(
            f"- the DACL inherits and the organization container grants it with {org_allow}, but the "
            "inherited allow is not on this object (a parent container may block it)"
        )
    else:
        lines.append(
            "- the organization container does not grant it inheritably either (setup's default allow is gone)"
        )
    return lines


def _org_inheritable_allow(directory: Directory, token: frozenset[str], guid: str) -> str | None:
    if directory.org_security_descriptor is None:
        return None
    try:
        org = parse_descriptor(directory.org_security_descriptor, what=directory.org_dn)
    except DescriptorError:
        return None
    for ace in org.dacl.aces if org.dacl is not None else ():
        if ace.sid in token and ace.flags & CONTAINER_INHERIT_ACE and covers_right(ace, guid):
            if ace.ace_type.kind == "deny":
                return None
            return ace.to_sddl(directory.domain_sid)
    return None


# --- GRP-01 ----------------------------------------------------------------------------------------------------


def exchange_group_membership(directory: Directory, server: ExchangeServer) -> Verdict:
    """GRP-01: the computer account is in Exchange Servers and Exchange Trusted Subsystem, directly or nested (as its
    token carries them: through security groups, global and universal ones)."""
    if server.is_edge:
        return Verdict.not_applicable(f"{server.name} is an Edge server: no computer account in the domain")
    try:
        account = computer_account(directory, server.name)
    except NoComputerAccount as err:
        raise FactUnavailable(f"{err}{_not_found_why(directory)}") from None
    who = principal_label(directory, account)
    reached = {g.dn.lower(): g for g in token_groups(directory, account)}
    token = principal_token(directory, account)
    found, missing = [], []
    for role in ("exchange_servers", "exchange_trusted_subsystem"):
        dn = well_known_dn(directory, role)
        name = _group_label(directory, dn)
        if dn.lower() in reached:
            chain = membership_chain(directory, account.dn, reached[dn.lower()].sid, token)
            via = ARROW.join(principal_label(directory, p) for p in chain[1:-1])
            found.append(f"{name} ({'directly' if len(chain) == 2 else 'via ' + via})")
        else:
            missing.append((name, dn))
    mismatch = token_mismatch(directory, account)
    if not missing:
        if mismatch is not None:
            raise FactUnavailable(mismatch.describe(directory, who))
        return Verdict.passed(f"{who} is a member of " + " and ".join(found) + ".", account=who)
    gaps = token_gaps(directory, account, None)
    if gaps:
        missed = " and ".join(name for name, _ in missing)
        raise FactUnavailable(f"{who} was not found in {missed}, but its groups are not all known: " + "; ".join(gaps))
    lines = [f"{who} is not a member of {name} ({dn})" for name, dn in missing]
    if found:
        lines.append("member of " + ", ".join(found))
    unresolved = unresolved_groups(directory, account)
    if unresolved:
        lines.append("not collected, so not followed: " + "; ".join(unresolved))
    if mismatch is not None:
        lines.append("note: " + mismatch.describe(directory, who))
    fix = [
        f"Add-ADGroupMember {membership_arguments(directory, dn, group_name(directory, dn), account)}"
        for _, dn in missing
    ]
    fix.append(f"# then restart {comment(server.name)} so its computer token carries the group")
    return Verdict.failed("\n".join(lines), "\n".join(fix), account=who, missing=[dn for _, dn in missing])


def _group_label(directory: Directory, dn: str) -> str:
    """The group's name as evidence shows it: with its domain in a forest of several domains."""
    group = principal_by_dn(directory, dn)
    if group is not None:
        return principal_label(directory, group)
    domain = domain_of(directory, dn)
    name = group_name(directory, dn)
    return (
        f"{domain.netbios_name or domain.dns_name}\\{name}"
        if domain is not None and several_domains(directory)
        else name
    )
