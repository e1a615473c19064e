"""A forest of two domains, as evidence files the collector writes (unit/factories.py forest_directory): the
Exchange groups universal in the root domain LAB (where /PrepareAD ran), EX01..EX03's computer accounts there,
EX04..EX06's in the child domain CHILD, and groups of both in the servers' memberships. Samba cannot host a child
domain (its `domain join --subdomain` went in 4.11), so the lab proves the global catalog reads on its own domain
(test_lab_forest.py) and these files prove the rules across domains."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from factories import (
    ADMIN_GROUP,
    CHILD_BASE,
    CHILD_SID,
    DOMAIN_SID,
    FOREST_GROUPS,
    SERVERS,
    forest_directory,
    runnable_text,
)

from exchange_compliance import snapshot
from exchange_compliance.facts import Directory, JudgingSettings, OrgFacts
from exchange_compliance.judge.access import computer_account, principal_token, resource_domain, token_mismatch
from exchange_compliance.judge.rights import (
    TOKEN_SERIALIZATION,
    exchange_group_membership,
    exchange_servers_hold_right,
    token_serialization_not_denied,
)
from exchange_compliance.judge.verdict import FactUnavailable, Verdict

CHILD_DOWN = "no DC of child.lab.contoso.test answered: dc11.child.lab.contoso.test:636: timed out"


def acl01(directory: Directory, name: str) -> Verdict:
    return token_serialization_not_denied(directory, directory.server(name))


def sid(key: str) -> str:
    return FOREST_GROUPS[key][1]


# --- a deny through a group of the other domain ----------------------------------------------------------------


def test_a_deny_through_a_child_domain_group_is_found_and_named_with_its_domain() -> None:
    # CHILD\Server Operators Team (global, child) nested into LAB\Organization Management (universal, denied by setup).
    directory = forest_directory(member_of={"EX05": ("ES", "ETS", "CSOT")}, nesting={"CSOT": ("OM",)})
    verdict = acl01(directory, "EX05")
    assert not verdict.met
    assert "CHILD\\EX05$ \u2192 CHILD\\Server Operators Team \u2192 LAB\\Organization Management" in verdict.evidence
    assert f"for LAB\\Organization Management ({sid('OM')})" in verdict.evidence
    assert verdict.fix.splitlines()[0] == (
        'Remove-ADGroupMember -Identity "Server Operators Team" -Server "child.lab.contoso.test" -Members "EX05$" '
        "-Confirm:$false"
    )
    assert all(acl01(directory, name).met for name in ("EX01", "EX02", "EX03", "EX04", "EX06"))


def test_a_computer_in_a_group_of_the_other_domain_is_cut_with_the_object_from_its_own() -> None:
    # EX05 (child) directly in LAB\Messaging Admins (universal), which is in Organization Management.
    directory = forest_directory(member_of={"EX05": ("ES", "ETS", "MA")}, nesting={"MA": ("OM",)})
    verdict = acl01(directory, "EX05")
    assert "CHILD\\EX05$ \u2192 LAB\\Messaging Admins \u2192 LAB\\Organization Management" in verdict.evidence
    assert verdict.fix.splitlines()[0] == (
        'Remove-ADGroupMember -Identity "Messaging Admins" -Server "lab.contoso.test" '
        '-Members (Get-ADComputer -Identity "EX05$" -Server "child.lab.contoso.test") -Confirm:$false'
    )
    assert "LAB\\Messaging Admins" not in runnable_text(verdict.fix)


def test_a_child_domain_local_group_denies_only_on_the_back_ends_of_the_child() -> None:
    # EX02 (root) is in CHILD\Exchange Deny, a domain-local group of the child, denied on the Servers container: a
    # token carries it only at servers of the child (their DCs add the child's domain-local groups).
    servers = {f"EX0{i}": "child_dl_deny_inherited" for i in range(1, 7)}
    directory = forest_directory(
        member_of={"EX02": ("ES", "ETS", "CDL")}, descriptors=servers, containers={"servers": "sets_child_dl_deny"}
    )
    assert sid("CDL") in principal_token(directory, computer_account(directory, "EX02"), CHILD_BASE)
    assert sid("CDL") not in principal_token(directory, computer_account(directory, "EX02"))  # at its own domain
    verdict = acl01(directory, "EX02")
    [denied] = verdict.details["denied"]
    assert denied["servers"] == ["EX04", "EX05", "EX06"]
    assert denied["trustee"] == "CHILD\\Exchange Deny" and denied["origin_dn"] == [SERVERS]
    assert "LAB\\EX02$ \u2192 CHILD\\Exchange Deny" in verdict.evidence
    assert verdict.fix.splitlines()[0] == (
        'Remove-ADGroupMember -Identity "Exchange Deny" -Server "child.lab.contoso.test" '
        '-Members (Get-ADComputer -Identity "EX02$" -Server "lab.contoso.test") -Confirm:$false'
    )
    assert '-User "CHILD\\Exchange Deny" -Deny' in verdict.fix
    assert acl01(directory, "EX05").met  # no one else is in it


def test_a_distribution_group_brings_no_deny() -> None:
    directory = forest_directory(member_of={"EX01": ("ES", "ETS", "LIST")}, nesting={"LIST": ("OM",)})
    assert acl01(directory, "EX01").met


def test_authenticated_users_in_a_domain_local_group_counts_at_that_domains_servers_only() -> None:
    # CHILD\Readers holds Authenticated Users (the child's foreign security principal S-1-5-11): every caller
    # carries it at the child's servers, none at the root's.
    directory = forest_directory(nesting={"CAU_FSP": ("CAU",)})
    account = computer_account(directory, "EX01")
    assert sid("CAU") in principal_token(directory, account, CHILD_BASE)
    assert sid("CAU") not in principal_token(directory, account)
    assert resource_domain(directory, directory.server("EDGE1")) == directory.domain_dn  # no account: the root's


def test_group_membership_names_the_groups_domain_and_the_add_runs_against_it() -> None:
    directory = forest_directory(member_of={"EX05": ("ES",)})
    verdict = exchange_group_membership(directory, directory.server("EX05"))
    assert "CHILD\\EX05$ is not a member of LAB\\Exchange Trusted Subsystem" in verdict.evidence
    assert "member of LAB\\Exchange Servers (directly)" in verdict.evidence
    assert verdict.fix.splitlines()[0] == (
        'Add-ADGroupMember -Identity "Exchange Trusted Subsystem" -Server "lab.contoso.test" '
        '-Members (Get-ADComputer -Identity "EX05$" -Server "child.lab.contoso.test")'
    )


# --- a domain that cannot be read ------------------------------------------------------------------------------


def test_an_unreachable_domain_makes_the_rows_that_need_it_errors_naming_it() -> None:
    directory = forest_directory(unavailable={"CHILD": CHILD_DOWN})
    # A caller of the child: its own global groups are unknown.
    with pytest.raises(FactUnavailable, match=r"CHILD \(child\.lab\.contoso\.test\) could not be read \(no DC of"):
        acl01(directory, "EX05")
    # A caller of the root: its token at the child's back ends (their domain-local groups) is unknown.
    with pytest.raises(FactUnavailable) as caught:
        acl01(directory, "EX01")
    assert "3 server object(s) (EX04, EX05, EX06): the token LAB\\EX01$ presents there is not known" in str(
        caught.value
    )
    assert "CHILD (child.lab.contoso.test) could not be read" in str(caught.value)
    assert "its domain-local groups" in str(caught.value)
    # Exchange Servers' rights on a child server: its token there is unknown too; on a root server it is not.
    with pytest.raises(FactUnavailable, match="CHILD"):
        exchange_servers_hold_right(directory, directory.server("EX04"), TOKEN_SERIALIZATION)
    assert exchange_servers_hold_right(directory, directory.server("EX01"), TOKEN_SERIALIZATION).met


def test_an_unreachable_domain_does_not_hide_a_deny_found_elsewhere() -> None:
    directory = forest_directory(
        member_of={"EX02": ("ES", "ETS", "MA")}, nesting={"MA": ("OM",)}, unavailable={"CHILD": CHILD_DOWN}
    )
    verdict = acl01(directory, "EX02")
    assert not verdict.met and verdict.details["denied"][0]["servers"] == ["EX01", "EX02", "EX03", "EDGE1"]
    assert "- could not be judged: 3 server object(s) (EX04, EX05, EX06)" in verdict.evidence


def test_a_missing_membership_is_an_error_when_the_own_domain_was_not_read() -> None:
    directory = forest_directory(member_of={"EX05": ("ES",)}, unavailable={"CHILD": CHILD_DOWN})
    with pytest.raises(FactUnavailable, match=r"not found in LAB\\Exchange Trusted Subsystem, but its groups"):
        exchange_group_membership(directory, directory.server("EX05"))


def test_without_the_global_catalog_no_token_of_a_forest_of_two_domains_is_known() -> None:
    directory = forest_directory(global_catalog=None)
    with pytest.raises(FactUnavailable, match=r"the global catalog could not be read .*: the universal groups"):
        acl01(directory, "EX01")


# --- the cross-check against tokenGroups ---------------------------------------------------------------------


def test_token_groups_that_match_the_expansion_are_no_finding() -> None:
    directory = forest_directory(
        member_of={"EX05": ("ES", "ETS", "CSOT")}, token_groups={"EX05": ("ES", "ETS", "CDC", "CSOT")}
    )
    assert token_mismatch(directory, computer_account(directory, "EX05")) is None
    assert acl01(directory, "EX05").met


def test_a_token_groups_mismatch_is_reported_not_passed() -> None:
    # Windows lists Messaging Admins for EX01, which no membership the suite read explains; it misses ETS.
    directory = forest_directory(token_groups={"EX01": ("ES", "DC", "MA")})
    mismatch = token_mismatch(directory, computer_account(directory, "EX01"))
    assert mismatch is not None
    assert mismatch.only_listed == (sid("MA"),) and mismatch.only_expanded == (sid("ETS"),)
    with pytest.raises(FactUnavailable) as caught:
        acl01(directory, "EX01")
    message = str(caught.value)
    assert "differ from its tokenGroups read from dc01.lab.contoso.test:636" in message
    assert f"only in tokenGroups: LAB\\Messaging Admins ({sid('MA')})" in message
    assert f"only in the expansion: LAB\\Exchange Trusted Subsystem ({sid('ETS')})" in message
    with pytest.raises(FactUnavailable, match="only in tokenGroups"):
        exchange_group_membership(directory, directory.server("EX01"))


def test_a_deny_through_a_group_only_token_groups_list_is_found() -> None:
    # tokenGroups list Organization Management for EX03 although no membership read leads there.
    directory = forest_directory(token_groups={"EX03": ("ES", "ETS", "DC", "OM")})
    verdict = acl01(directory, "EX03")
    assert not verdict.met
    assert "the tokenGroups of EX03$ (read from dc01.lab.contoso.test:636) list it" in verdict.evidence
    assert "only in tokenGroups: LAB\\Organization Management" in verdict.evidence
    assert "Remove-ADGroupMember" not in verdict.fix and "Get-ADPrincipalGroupMembership" in verdict.fix


def test_groups_a_logon_adds_through_authenticated_users_are_no_mismatch() -> None:
    directory = forest_directory(nesting={"AU": ("USERS",)}, token_groups={"EX01": ("ES", "ETS", "DC", "USERS")})
    assert token_mismatch(directory, computer_account(directory, "EX01")) is None
    without = forest_directory(nesting={"AU": ("USERS",)}, token_groups={"EX01": ("ES", "ETS", "DC")})
    assert token_mismatch(without, computer_account(without, "EX01")) is None


# --- the evidence file -------------------------------------------------------------------------------------------


def test_a_forest_evidence_file_round_trips() -> None:
    directory = forest_directory(token_groups={"EX05": ("ES", "ETS", "CDC")}, unavailable={"CHILD": CHILD_DOWN})
    facts = OrgFacts("forest", datetime(2025, 6, 1, tzinfo=UTC), directory, ("EX01",), {}, {},
                     JudgingSettings(False, 60))  # fmt: skip
    again = snapshot.loads(snapshot.dumps(facts))
    assert again.directory == directory
    assert again.directory.computers["EX05"].token_groups.token_groups == (sid("ES"), sid("ETS"), f"{CHILD_SID}-515")
    assert [d.netbios_name for d in again.directory.domains] == ["LAB", "CHILD"]
    assert again.directory.container_descriptors[ADMIN_GROUP] == directory.container_descriptors[ADMIN_GROUP]
    assert DOMAIN_SID in again.directory.domains[0].sid  # type: ignore[operator]


def test_token_groups_the_dc_did_not_return_are_said_not_cross_checked() -> None:
    directory = forest_directory(token_groups={"EX01": ("ES", "ETS", "DC")})
    assert "not cross-checked" not in acl01(directory, "EX01").evidence
    verdict = acl01(directory, "EX02")  # no tokenGroups read for EX02
    assert verdict.met
    assert "dc01.lab.contoso.test:636 returned neither tokenGroups nor tokenGroupsGlobalAndUniversal of EX02$" in (
        verdict.evidence
    )
