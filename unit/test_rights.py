"""ACL-01, ACL-02/03 and GRP-01 on hand-built Directory facts, descriptors recorded from Samba."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from factories import (
    BASE,
    DOMAIN_SID,
    GROUPS,
    HOSTILE,
    ORG,
    SERVERS,
    TS,
    acl_directory,
    raw,
    renamed,
    runnable_text,
    with_ace_flags,
)

from exchange_compliance.facts import Directory, Principal
from exchange_compliance.judge import denials
from exchange_compliance.judge.powershell import literal
from exchange_compliance.judge.rights import (
    IMPERSONATION,
    TOKEN_SERIALIZATION,
    exchange_group_membership,
    exchange_servers_hold_right,
    netbios_domain,
    token_serialization_not_denied,
)
from exchange_compliance.judge.verdict import FactUnavailable, Verdict


def acl01(directory: Directory, name: str) -> Verdict:
    return token_serialization_not_denied(directory, directory.server(name))


# --- ACL-01 -------------------------------------------------------------------------------------------------------


def test_healthy_org_passes() -> None:
    directory = acl_directory()
    for server in directory.servers:
        verdict = token_serialization_not_denied(directory, server)
        assert verdict.met, verdict.evidence
    assert "not denied" in acl01(directory, "EX01").evidence


def test_seed_000_nested_team_in_domain_admins_fails_ex02_only() -> None:
    directory = acl_directory(member_of={"EX02": ("ES", "ETS", "SOT")}, nesting={"SOT": ("DA",)})
    assert acl01(directory, "EX01").met and acl01(directory, "EX03").met
    verdict = acl01(directory, "EX02")
    assert not verdict.met
    assert "EX02$ \u2192 Server Operators Team \u2192 Domain Admins" in verdict.evidence
    assert f"(OD;CIID;CR;{TS};;DA)" in verdict.evidence
    assert f"Domain Admins ({DOMAIN_SID}-512)" in verdict.evidence
    # One deny every object inherits: summarised, not listed 7 times; the data keeps every object.
    assert f"inherited from the organization container ({ORG})" in verdict.evidence
    assert "on all 7 Exchange server objects (ACE #3 on each)" in verdict.evidence
    [denied] = verdict.details["denied"]
    assert denied["servers"] == [*(f"EX0{i}" for i in range(1, 7)), "EDGE1"]  # the Edge one included
    assert denied["ace_index"] == [3] * 7 and denied["inherited"] is True
    assert denied["chain"] == ["EX02$", "Server Operators Team", "Domain Admins"]
    assert denied["trustee"] == "Domain Admins" and denied["trustee_sid"] == f"{DOMAIN_SID}-512"
    assert (
        verdict.fix.splitlines()[0]
        == 'Remove-ADGroupMember -Identity "Server Operators Team" -Members "EX02$" -Confirm:$false'
    )
    assert "restart EX02" in verdict.fix and "gpresult /scope computer /r" in verdict.fix
    assert (
        'Get-ADPermission -Identity "EX01" | where {($_.ExtendedRights -like "ms-Exch-EPI-Token-Serialization") '
        '-and ($_.Deny -like "True")} | ft -autosize User,ExtendedRights'
    ) in verdict.fix


def test_seed_000_trusted_subsystem_in_domain_admins_removes_that_link() -> None:
    directory = acl_directory(nesting={"ETS": ("DA",)})
    verdicts = [acl01(directory, f"EX0{i}") for i in range(1, 7)]
    assert not any(v.met for v in verdicts)
    assert "EX01$ \u2192 Exchange Trusted Subsystem \u2192 Domain Admins" in verdicts[0].evidence
    assert 'Remove-ADGroupMember -Identity "Domain Admins" -Members "Exchange Trusted Subsystem"' in verdicts[0].fix


def test_exchange_own_nesting_is_not_the_link_to_remove() -> None:
    # ETS in Exchange Windows Permissions is setup's doing; EWP in Domain Admins is the added link.
    directory = acl_directory(nesting={"ETS": ("EWP",), "EWP": ("DA",)})
    verdict = acl01(directory, "EX01")
    assert (
        "EX01$ \u2192 Exchange Trusted Subsystem \u2192 Exchange Windows Permissions \u2192 Domain Admins"
        in verdict.evidence
    )
    assert verdict.fix.startswith(
        'Remove-ADGroupMember -Identity "Domain Admins" -Members "Exchange Windows Permissions"'
    )


def test_organization_management_several_levels_deep() -> None:
    directory = acl_directory(
        member_of={"EX03": ("ES", "ETS", "G1")}, nesting={"G1": ("G2",), "G2": ("G3",), "G3": ("OM",)}
    )
    verdict = acl01(directory, "EX03")
    chain = "EX03$ \u2192 Helpdesk Servers \u2192 Tier1 Servers \u2192 All Server Admins \u2192 Organization Management"
    assert not verdict.met and chain in verdict.evidence
    assert verdict.fix.startswith('Remove-ADGroupMember -Identity "Helpdesk Servers" -Members "EX03$"')


def test_every_denied_group_gets_its_fix() -> None:
    directory = acl_directory(member_of={"EX02": ("ES", "ETS", "SOT", "OM")}, nesting={"SOT": ("DA",)})
    fix = acl01(directory, "EX02").fix
    assert '-Identity "Server Operators Team" -Members "EX02$"' in fix
    assert '-Identity "Organization Management" -Members "EX02$"' in fix


def test_deny_on_one_server_object_only() -> None:
    directory = acl_directory(descriptors={"EX04": "server_explicit_deny"}, member_of={"EX02": ("ES", "ETS", "SOT")})
    verdict = acl01(directory, "EX02")
    assert not verdict.met and [d["servers"] for d in verdict.details["denied"]] == [["EX04"]]
    explicit = "set on the object itself (explicit)\n  membership: EX02$ \u2192 Server Operators Team\n  on EX04 ("
    assert f"{explicit}CN=EX04,{SERVERS}), ACE #0" in verdict.evidence
    assert acl01(directory, "EX01").met


def test_inherit_only_deny_does_not_count() -> None:
    directory = acl_directory(descriptors={"EX03": "inherit_only_deny"})
    assert acl01(directory, "EX01").met
    assert exchange_servers_hold_right(directory, directory.server("EX03"), TOKEN_SERIALIZATION).met


def test_deny_to_everyone_is_an_ace_to_remove() -> None:
    directory = acl_directory(descriptors={"EX04": "deny_everyone"})
    verdict = acl01(directory, "EX01")
    assert not verdict.met and "every network logon carries Everyone" in verdict.evidence
    assert verdict.fix.startswith(
        'Remove-ADPermission -Identity "EX04" -User "Everyone" -Deny -AccessRights ExtendedRight'
    )
    assert "restart" not in verdict.fix


def test_primary_group_domain_admins() -> None:
    directory = acl_directory(primary={"EX05": 512})
    verdict = acl01(directory, "EX05")
    assert "EX05$ \u2192 Domain Admins" in verdict.evidence
    # Domain Computers was not collected: its SID names it, which -Identity accepts (its name is localised).
    assert verdict.fix.splitlines()[:2] == [
        f'Add-ADGroupMember -Identity "{DOMAIN_SID}-515" -Members "EX05$"',
        'Set-ADComputer -Identity "EX05$" -Replace @{primaryGroupID=515}',
    ]


def test_primary_group_fix_names_domain_computers_as_collected() -> None:
    directory = acl_directory(primary={"EX05": 512})
    computers = Principal(f"CN=Ordinateurs du domaine,CN=Users,{BASE}", f"{DOMAIN_SID}-515", "Ordinateurs du domaine")
    directory = replace(directory, groups={**directory.groups, computers.dn: computers})
    fix = acl01(directory, "EX05").fix
    assert fix.splitlines()[0] == 'Add-ADGroupMember -Identity "Ordinateurs du domaine" -Members "EX05$"'
    assert "Domain Computers" not in fix


def test_deny_set_on_some_objects_and_inherited_on_others_is_grouped_by_ace() -> None:
    directory = acl_directory(
        descriptors={"EX04": "server_explicit_deny"}, member_of={"EX02": ("ES", "ETS", "SOT")}, nesting={"SOT": ("DA",)}
    )
    verdict = acl01(directory, "EX02")
    inherited, explicit = verdict.details["denied"]  # in the order the objects were checked
    assert (explicit["servers"], explicit["ace_index"]) == (["EX04"], [0])
    assert inherited["servers"] == ["EX01", "EX02", "EX03", "EX05", "EX06", "EDGE1"]
    assert f"  on EX04 (CN=EX04,{SERVERS}), ACE #0" in verdict.evidence
    assert f"  on EX05 (CN=EX05,{SERVERS}), ACE #3" in verdict.evidence  # not all objects: each is listed
    # Both denies are reached through the same link: one command cuts it.
    assert verdict.fix.count("Remove-ADGroupMember") == 1


def test_many_objects_denied_by_one_ace_are_summarised() -> None:
    directory = acl_directory(n=14, descriptors={"EX14": "server_protected"}, nesting={"ETS": ("DA",)})
    verdict = acl01(directory, "EX01")
    names = ", ".join(f"EX{i:02d}" for i in range(1, 11))
    assert f"  on 14 of 15 Exchange server objects (ACE #3 on each): {names} and 4 more" in verdict.evidence
    assert "(CN=EX12," not in verdict.evidence
    assert verdict.details["denied"][0]["servers"][-1] == "EDGE1"


def test_failure_work_is_per_ace_and_trustee_not_per_object(monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 objects all denied through one inherited ACE: one chain search, a few lines of evidence and of fix.
    directory = acl_directory(n=40, nesting={"ETS": ("DA",)})
    searched: list[str] = []
    real = denials.membership_chain
    monkeypatch.setattr(
        denials, "membership_chain", lambda d, dn, sid, within: searched.append(sid) or real(d, dn, sid, within)
    )
    verdict = acl01(directory, "EX07")
    assert searched == [f"{DOMAIN_SID}-512"]
    # The cut, restart, gpresult, the confirmation; and the other way out in two comment lines.
    assert len(verdict.evidence.splitlines()) == 4 and len(verdict.fix.splitlines()) == 6


INHERITED_EVERYONE = with_ace_flags("deny_everyone", 0x12)  # (OD;CIID;CR;TS;;WD), inherited
ORG_SETS_EVERYONE = with_ace_flags("deny_everyone", 0x02)  # (OD;CI;CR;TS;;WD): the organization sets it


def test_inherited_deny_outside_any_group_is_removed_where_it_is_set() -> None:
    passed_on = {"org": ORG_SETS_EVERYONE, "groups": INHERITED_EVERYONE, "admin_group": INHERITED_EVERYONE}
    directory = acl_directory(
        descriptors={f"EX0{i}": INHERITED_EVERYONE for i in range(1, 7)},
        containers={**passed_on, "servers": INHERITED_EVERYONE},
    )
    verdict = acl01(directory, "EX01")
    assert f"for Everyone (S-1-1-0), inherited from the organization container ({ORG}), where it is set" in (
        verdict.evidence
    )
    assert "every network logon carries Everyone" in verdict.evidence
    removals = [line for line in verdict.fix.splitlines() if line.startswith("Remove-ADPermission")]
    assert removals == [
        f'Remove-ADPermission -Identity "{ORG}" -User "Everyone" -Deny -AccessRights ExtendedRight '
        f'-ExtendedRights "{TOKEN_SERIALIZATION}" -InheritanceType All'
    ]
    # What else it covers: every server object that carries it, and the containers that pass it on.
    assert "to every caller (Everyone) on 6 server object(s) (EX01, EX02, EX03, EX04, EX05, EX06)" in verdict.fix
    assert "passed on through the Administrative Groups container, the administrative group Exchange" in verdict.fix
    assert "restart" not in verdict.fix


def test_inherited_deny_in_earlier_evidence_is_placed_by_the_organization_container_alone() -> None:
    # An evidence file of an earlier version holds only the organization container's descriptor.
    directory = replace(
        acl_directory(descriptors={f"EX0{i}": INHERITED_EVERYONE for i in range(1, 7)}, earlier_evidence=True),
        org_security_descriptor=ORG_SETS_EVERYONE,
    )
    verdict = acl01(directory, "EX01")
    assert f"inherited from the organization container ({ORG}), where it is set" in verdict.evidence
    assert f'Remove-ADPermission -Identity "{ORG}" -User "Everyone" -Deny' in verdict.fix
    below = acl01(acl_directory(descriptors={"EX03": INHERITED_EVERYONE}, earlier_evidence=True), "EX01")
    assert "from where is unknown: a container below the organization container, which does not set it" in (
        below.evidence
    )


def test_inherited_deny_from_an_unknown_container_is_not_given_a_guessed_command() -> None:
    # EX03's object carries an inherited deny that its Servers container does not pass on.
    directory = acl_directory(descriptors={"EX03": INHERITED_EVERYONE})
    verdict = acl01(directory, "EX01")
    assert f"from where is unknown: {SERVERS} does not pass it on (no copy of it with container inheritance)" in (
        verdict.evidence
    )
    assert "do not show where" in verdict.fix and "<that container>" in verdict.fix
    runnable = runnable_text(verdict.fix)
    assert "Remove-ADPermission" not in runnable and "<" not in runnable  # no placeholder that looks runnable
    assert 'Get-ADPermission -Identity "EX03"' in runnable  # the confirmation still runs


def test_edge_is_not_applicable() -> None:
    directory = acl_directory()
    edge = directory.server("EDGE1")
    for verdict in (
        token_serialization_not_denied(directory, edge),
        exchange_group_membership(directory, edge),
        exchange_servers_hold_right(directory, edge, TOKEN_SERIALIZATION),
    ):
        assert verdict.met and not verdict.applicable


def test_missing_computer_account_of_a_mailbox_server_is_an_error() -> None:
    directory = acl_directory()
    directory.computers.pop("EX06")
    with pytest.raises(FactUnavailable, match="EX06"):
        acl01(directory, "EX06")


def test_malformed_descriptor_on_one_object() -> None:
    directory = acl_directory(
        descriptors={"EX03": raw("server_default")[:70]},
        member_of={"EX02": ("ES", "ETS", "SOT")},
        nesting={"SOT": ("DA",)},
    )
    failing = acl01(directory, "EX02")  # still judged on the other objects
    assert not failing.met and f"could not be judged: CN=EX03,{SERVERS}: malformed" in failing.evidence
    with pytest.raises(FactUnavailable, match=re.escape(f"CN=EX03,{SERVERS}: malformed security descriptor")):
        acl01(directory, "EX01")
    with pytest.raises(FactUnavailable, match="CN=EX03"):
        exchange_servers_hold_right(directory, directory.server("EX03"), TOKEN_SERIALIZATION)
    assert exchange_servers_hold_right(directory, directory.server("EX01"), TOKEN_SERIALIZATION).met


def test_missing_extended_right_is_a_clear_error() -> None:
    directory = replace(acl_directory(), extended_rights={})
    with pytest.raises(FactUnavailable, match="ms-Exch-EPI-Token-Serialization was not found under CN=Extended-Rights"):
        acl01(directory, "EX01")


# --- ACL-02 / ACL-03 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("right", [TOKEN_SERIALIZATION, IMPERSONATION])
def test_seed_002_protected_dacl_fails(right: str) -> None:
    directory = acl_directory(descriptors={"EX05": "server_protected"})
    assert exchange_servers_hold_right(directory, directory.server("EX01"), right).met
    verdict = exchange_servers_hold_right(directory, directory.server("EX05"), right)
    assert not verdict.met and verdict.details["protected"] is True
    assert "the DACL is protected" in verdict.evidence and "(A;CI;CR;;;" in verdict.evidence
    assert "no allow ACE for the group at all" in verdict.evidence
    assert verdict.fix.splitlines() == [
        f'Add-ADPermission -Identity "EX05" -User "LAB\\Exchange Servers" -AccessRights ExtendedRight '
        f'-ExtendedRights "{right}"',
        "iisreset    # on EX05, from an elevated prompt",
    ]


def test_passing_names_the_granting_ace() -> None:
    directory = acl_directory()
    verdict = exchange_servers_hold_right(directory, directory.server("EX01"), TOKEN_SERIALIZATION)
    assert verdict.met and f"ACE #10 (A;CIID;CR;;;{DOMAIN_SID}-1117) (inherited)" in verdict.evidence


def test_generic_all_to_exchange_servers_passes() -> None:
    directory = acl_directory(descriptors={"EX02": "server_es_generic_all"})
    for right in (TOKEN_SERIALIZATION, IMPERSONATION):
        verdict = exchange_servers_hold_right(directory, directory.server("EX02"), right)
        assert verdict.met and f"(A;;GA;;;{DOMAIN_SID}-1117)" in verdict.evidence


def test_explicit_deny_ahead_of_the_allow() -> None:
    directory = acl_directory(descriptors={"EX03": "server_protected_deny"})
    verdict = exchange_servers_hold_right(directory, directory.server("EX03"), TOKEN_SERIALIZATION)
    assert (
        not verdict.met
        and "ACE #0 (OD;;CR;" in verdict.evidence
        and "allowed further down by ACE #1" in verdict.evidence
    )
    assert verdict.fix.splitlines()[0] == (
        f'Remove-ADPermission -Identity "EX03" -User "LAB\\Exchange Servers" -Deny '
        f'-AccessRights ExtendedRight -ExtendedRights "{TOKEN_SERIALIZATION}"'
    )
    assert exchange_servers_hold_right(directory, directory.server("EX03"), IMPERSONATION).met


def test_exchange_servers_nested_into_domain_admins() -> None:
    directory = acl_directory(nesting={"ES": ("DA",)})
    verdict = exchange_servers_hold_right(directory, directory.server("EX01"), IMPERSONATION)
    assert (
        not verdict.met
        and "ACE #7 (OD;CIID;CR;" in verdict.evidence
        and "allowed further down by ACE #10" in verdict.evidence
    )
    fix = verdict.fix.splitlines()
    assert fix[0] == 'Remove-ADGroupMember -Identity "Domain Admins" -Members "Exchange Servers" -Confirm:$false'
    assert fix[1].startswith("# the deny is inherited") and fix[2].startswith('Add-ADPermission -Identity "EX01"')


def test_allow_for_another_right_only() -> None:
    directory = acl_directory(descriptors={"EX06": "allow_other_right_only"})
    verdict = exchange_servers_hold_right(directory, directory.server("EX06"), TOKEN_SERIALIZATION)
    assert not verdict.met and "allow ACEs for the group exist but none covers the right" in verdict.evidence


def test_localised_group_name_and_domain() -> None:
    directory = acl_directory(descriptors={"EX05": "server_protected"}, names={"ES": "Serveurs Exchange"})
    verdict = exchange_servers_hold_right(directory, directory.server("EX05"), IMPERSONATION)
    assert '-User "LAB\\Serveurs Exchange"' in verdict.fix
    assert netbios_domain(directory) == "LAB"


# --- GRP-01 -------------------------------------------------------------------------------------------------------


def test_membership_passes_directly_and_nested() -> None:
    directory = acl_directory(member_of={"EX02": ("ES", "G1")}, nesting={"G1": ("ETS",)})
    assert "directly" in exchange_group_membership(directory, directory.server("EX01")).evidence
    verdict = exchange_group_membership(directory, directory.server("EX02"))
    assert verdict.met and "Exchange Trusted Subsystem (via Helpdesk Servers)" in verdict.evidence


def test_membership_missing_group() -> None:
    directory = acl_directory(member_of={"EX04": ("ES",)})
    verdict = exchange_group_membership(directory, directory.server("EX04"))
    assert not verdict.met and verdict.details["missing"] == [GROUPS["ETS"][0]]
    assert verdict.fix.splitlines()[0] == 'Add-ADGroupMember -Identity "Exchange Trusted Subsystem" -Members "EX04$"'


def test_membership_uses_well_known_dns_not_names() -> None:
    directory = acl_directory(
        member_of={"EX04": ()}, names={"ES": "Serveurs Exchange", "ETS": "Sous-système approuvé Exchange"}
    )
    verdict = exchange_group_membership(directory, directory.server("EX04"))
    assert '-Identity "Serveurs Exchange" -Members "EX04$"' in verdict.fix
    assert '-Identity "Sous-système approuvé Exchange"' in verdict.fix
    directory = replace(directory, well_known_groups={})
    with pytest.raises(FactUnavailable, match="otherWellKnownObjects"):
        exchange_group_membership(directory, directory.server("EX01"))


# --- hostile names in fixes -----------------------------------------------------------------------------------


def test_acl01_fix_keeps_hostile_names_inert() -> None:
    # A group and server objects named by someone who wants the admin to run code: every name reaches the fix.
    caller = "EX02\nRemove-Item C:\\ -Recurse"
    directory = acl_directory(
        member_of={"EX02": ("ES", "ETS", "SOT")}, nesting={"SOT": ("DA",)}, names={"SOT": HOSTILE}
    )
    directory = renamed(renamed(directory, "EX01", f"EX01 {HOSTILE}"), "EX02", caller)
    fix = acl01(directory, caller).fix
    assert fix.splitlines()[0] == f'Remove-ADGroupMember -Identity {literal(HOSTILE)} -Members "EX02$" -Confirm:$false'
    assert f"Get-ADPermission -Identity {literal(f'EX01 {HOSTILE}')} | where" in fix
    assert "# then restart EX02<U+000A>Remove-Item C:\\ -Recurse so its computer token" in fix
    assert HOSTILE not in runnable_text(fix) and "Remove-Item" not in runnable_text(fix)
    assert not any(line.startswith("Remove-Item") for line in fix.splitlines())


def test_acl01_deny_ace_fix_quotes_the_server_and_the_trustee() -> None:
    directory = renamed(acl_directory(descriptors={"EX04": "deny_everyone"}), "EX04", HOSTILE)
    fix = acl01(directory, "EX01").fix
    assert fix.startswith(f'Remove-ADPermission -Identity {literal(HOSTILE)} -User "Everyone" -Deny')
    assert HOSTILE not in runnable_text(fix)


def test_acl02_fix_quotes_domain_and_name_as_one_value() -> None:
    directory = acl_directory(descriptors={"EX05": "server_protected"}, names={"ES": HOSTILE})
    directory = replace(directory, netbios_domain="LAB$(calc)")
    directory = renamed(directory, "EX05", f"EX05\n{HOSTILE}")
    fix = exchange_servers_hold_right(directory, directory.server(f"EX05\n{HOSTILE}"), TOKEN_SERIALIZATION).fix
    user = literal(f"LAB$(calc)\\{HOSTILE}")  # the whole DOMAIN\name, not the name alone
    assert fix.splitlines()[0] == (
        f"Add-ADPermission -Identity ('EX05' + [char]0x000A + {literal(HOSTILE)}) -User {user} "
        f'-AccessRights ExtendedRight -ExtendedRights "{TOKEN_SERIALIZATION}"'
    )
    assert fix.splitlines()[1] == f"iisreset    # on EX05<U+000A>{HOSTILE}, from an elevated prompt"
    assert HOSTILE not in runnable_text(fix) and "$(calc)" not in runnable_text(fix)


def test_acl02_nesting_fix_quotes_the_denied_group() -> None:
    directory = acl_directory(nesting={"ES": ("DA",)}, names={"DA": HOSTILE})
    fix = exchange_servers_hold_right(directory, directory.server("EX01"), IMPERSONATION).fix
    assert fix.splitlines()[0] == (
        f'Remove-ADGroupMember -Identity {literal(HOSTILE)} -Members "Exchange Servers" -Confirm:$false'
    )
    assert HOSTILE not in runnable_text(fix)


def test_grp01_fix_quotes_the_group() -> None:
    directory = acl_directory(member_of={"EX04": ("ES",)}, names={"ETS": HOSTILE})
    fix = exchange_group_membership(directory, directory.server("EX04")).fix
    assert fix.splitlines()[0] == f'Add-ADGroupMember -Identity {literal(HOSTILE)} -Members "EX04$"'
    assert HOSTILE not in runnable_text(fix)
