"""Where an inherited deny is set (judge/inheritance.py), on descriptors recorded from Samba: ACL-01 names the
container, and its fix offers both ways out, saying what else the deny covers."""

from __future__ import annotations

from dataclasses import replace

import pytest
from factories import ADMIN_GROUP, EXCHANGE, ORG, SERVERS, TS, acl_directory, runnable_text

from exchange_compliance.facts import Directory
from exchange_compliance.judge.inheritance import ace_origin, inheritance_type
from exchange_compliance.judge.rights import TOKEN_SERIALIZATION, token_serialization_not_denied
from exchange_compliance.judge.security_descriptor import Ace, parse_descriptor
from exchange_compliance.judge.verdict import Verdict

SOT_DENY = (
    f'-User "LAB\\Server Operators Team" -Deny -AccessRights ExtendedRight -ExtendedRights "{TOKEN_SERIALIZATION}"'
)
ALL_INHERIT = {f"EX0{i}": "sot_deny_inherited" for i in range(1, 7)}


def team_in(directory_cases: dict[str, str], containers: dict[str, str]) -> Directory:
    """EX02's computer in Server Operators Team (which nothing else nests); the deny for the team where given."""
    return acl_directory(descriptors=directory_cases, containers=containers, member_of={"EX02": ("ES", "ETS", "SOT")})


def acl01(directory: Directory, name: str = "EX02") -> Verdict:
    return token_serialization_not_denied(directory, directory.server(name))


def the_deny(directory: Directory, server: str = "EX01") -> Ace:
    descriptor = parse_descriptor(directory.server(server).security_descriptor or b"")
    return next(a for a in descriptor.dacl.aces if a.sid and a.sid.endswith("-1200"))  # type: ignore[union-attr]


def test_a_deny_set_on_the_administrative_group_is_named_there() -> None:
    directory = team_in(ALL_INHERIT, {"admin_group": "sets_sot_deny", "servers": "sot_deny_inherited"})
    verdict = acl01(directory)
    role = "the administrative group Exchange Administrative Group (FYDIBOHF23SPDLT)"
    assert f"inherited from {role} ({ADMIN_GROUP}), where it is set" in verdict.evidence
    assert verdict.details["denied"][0]["origin_dn"] == [ADMIN_GROUP]
    fix = verdict.fix.splitlines()
    # First way out: the membership (runnable); the other: the ACE where it is set (a comment), and what it covers.
    assert fix[0] == 'Remove-ADGroupMember -Identity "Server Operators Team" -Members "EX02$" -Confirm:$false'
    assert f'#   Remove-ADPermission -Identity "{ADMIN_GROUP}" {SOT_DENY} -InheritanceType All' in fix
    other = next(line for line in fix if line.startswith("# Or, instead of the membership:"))
    assert f"is set on {role} ({ADMIN_GROUP})" in other
    assert (
        "to every member of Server Operators Team on 6 server object(s) (EX01, EX02, EX03, EX04, EX05, EX06)" in other
    )
    assert "passed on through the Servers container of Exchange Administrative Group (FYDIBOHF23SPDLT)" in other
    assert "Remove-ADPermission" not in runnable_text(verdict.fix)  # the other way is not run with the first


def test_a_deny_set_on_the_servers_container_is_named_there() -> None:
    directory = team_in(ALL_INHERIT, {"servers": "sets_sot_deny"})
    verdict = acl01(directory)
    assert f"inherited from the Servers container of Exchange Administrative Group (FYDIBOHF23SPDLT) ({SERVERS})" in (
        verdict.evidence
    )
    assert f'#   Remove-ADPermission -Identity "{SERVERS}" {SOT_DENY} -InheritanceType All' in verdict.fix.splitlines()
    assert "passed on through" not in verdict.fix  # nothing between the Servers container and the servers


def test_no_propagate_deny_is_set_on_the_parent_and_removed_with_its_inheritance_type() -> None:
    # Set on the Servers container with NP: the servers carry it without CI, and it goes no further.
    directory = team_in({f"EX0{i}": "sot_deny_inherited_np" for i in range(1, 7)}, {"servers": "sets_sot_deny_np"})
    verdict = acl01(directory)
    assert f"({SERVERS}), where it is set" in verdict.evidence
    assert f'-Identity "{SERVERS}" {SOT_DENY} -InheritanceType SelfAndChildren' in verdict.fix


def test_no_propagate_one_level_up_does_not_reach_the_servers() -> None:
    # The administrative group sets it with NP: the Servers container carries it without CI, so a server object
    # that claims it inherited cannot have it from there; the suite says so rather than guess.
    directory = team_in(
        {"EX04": "sot_deny_inherited"}, {"admin_group": "sets_sot_deny_np", "servers": "sot_deny_inherited_np"}
    )
    verdict = acl01(directory)
    assert f"from where is unknown: {SERVERS} does not pass it on" in verdict.evidence
    assert "Remove-ADPermission" not in runnable_text(verdict.fix)


def test_a_protected_container_is_where_its_deny_is_set() -> None:
    # The Servers container's DACL is protected and holds the deny explicitly; the administrative group above it
    # sets the same deny, which the protection keeps out: the Servers container is where it is set.
    directory = team_in(ALL_INHERIT, {"admin_group": "sets_sot_deny", "servers": "protected_sets_sot_deny"})
    assert acl01(directory).details["denied"][0]["origin_dn"] == [SERVERS]


def test_an_object_specific_deny_is_removed_with_its_inherited_object_type() -> None:
    # Set on the administrative group for msExchExchangeServer objects only: the Servers container passes it on
    # inherit-only, the server objects apply it.
    servers = {f"EX0{i}": "sot_deny_inherited_typed" for i in range(1, 7)}
    directory = team_in(servers, {"admin_group": "sets_sot_deny_typed", "servers": "sot_deny_passed_typed"})
    verdict = acl01(directory)
    assert f"({ADMIN_GROUP}), where it is set" in verdict.evidence
    assert (
        f'-Identity "{ADMIN_GROUP}" {SOT_DENY} -InheritanceType All -InheritedObjectType msExchExchangeServer'
    ) in verdict.fix


def test_a_deny_inherited_from_above_the_exchange_container_says_so() -> None:
    every = {key: "sot_deny_inherited" for key in ("exchange", "org", "groups", "admin_group", "servers")}
    directory = team_in(ALL_INHERIT, every)
    verdict = acl01(directory)
    assert f"it is set above {EXCHANGE} (CN=Services or higher), whose descriptors are not read" in verdict.evidence
    assert "<that container>" in verdict.fix and "Remove-ADPermission" not in runnable_text(verdict.fix)


def test_a_container_whose_descriptor_was_not_read_is_named() -> None:
    directory = team_in(ALL_INHERIT, {"servers": "sot_deny_inherited"})
    containers = {dn: data for dn, data in directory.container_descriptors.items() if dn != ADMIN_GROUP}
    origin = ace_origin(
        replace(directory, container_descriptors=containers), directory.server("EX01"), the_deny(directory)
    )
    assert origin.dn is None and origin.why == f"the descriptor of {ADMIN_GROUP} was not read"


def test_setup_default_deny_is_not_recommended_for_removal() -> None:
    # Exchange Trusted Subsystem in Domain Admins: the deny is setup's own, on the organization container.
    directory = acl_directory(nesting={"ETS": ("DA",)})
    verdict = acl01(directory, "EX01")
    assert f"inherited from the organization container ({ORG}), where it is set" in verdict.evidence
    lines = verdict.fix.splitlines()
    assert (
        lines[0]
        == 'Remove-ADGroupMember -Identity "Domain Admins" -Members "Exchange Trusted Subsystem" -Confirm:$false'
    )
    advice = next(line for line in lines if line.startswith("# Not recommended:"))
    assert "Exchange setup writes it, so that no member of Domain Admins can serialize tokens" in advice
    assert "Take the membership out instead" in advice
    assert lines[-1].startswith(f'#   Remove-ADPermission -Identity "{ORG}" -User "LAB\\Domain Admins" -Deny')


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(0x02, "All"), (0x0A, "Descendents"), (0x06, "SelfAndChildren"), (0x0E, "Children"), (0x00, None), (0x12, "All")],
)
def test_inheritance_types_as_remove_adpermission_names_them(flags: int, expected: str | None) -> None:
    assert inheritance_type(Ace(6, flags, 0x100, "S-1-1-0", TS)) == expected


def test_the_confirmation_reads_a_mailbox_server_object_never_an_edge_one() -> None:
    # Sorted by name as the collector sorts them, EDGE1 comes first; a Client Access-only server before the Mailbox.
    directory = acl_directory(nesting={"ETS": ("DA",)})
    edge = directory.server("EDGE1")
    cas = replace(directory.server("EX01"), name="CAS01", roles=4)
    others = [s for s in directory.servers if s.name not in ("EDGE1", "EX01")]
    directory = replace(directory, servers=(edge, cas, *others))
    check = next(line for line in acl01(directory, "EX02").fix.splitlines() if line.startswith("Get-ADPermission"))
    assert check.startswith('Get-ADPermission -Identity "EX02"')
    only_edge = acl_directory(
        descriptors={f"EX0{i}": "server_protected" for i in range(1, 7)}, nesting={"ETS": ("DA",)}
    )
    fix = acl01(only_edge, "EX02").fix
    assert "Get-ADPermission" not in fix and "only Edge server objects deny it" in fix  # EDGE1 still inherits it
