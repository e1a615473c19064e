"""The access check (on Samba-built descriptors), tokens and membership chains."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_compliance.facts import Directory, Principal
from exchange_compliance.judge.access import (
    NETWORK_LOGON_SIDS,
    NoComputerAccount,
    applicable_aces,
    check_right,
    computer_account,
    covers_right,
    decision_key,
    group_name,
    membership_chain,
    netbios_domain,
    principal_by_dn,
    principal_token,
    sid_name,
    transitive_groups,
    unresolved_groups,
)
from exchange_compliance.judge.security_descriptor import (
    SE_DACL_PRESENT,
    SE_SELF_RELATIVE,
    Ace,
    Acl,
    SecurityDescriptor,
    parse_descriptor,
)
from exchange_compliance.names import dns_domain_of, parent_dn, split_dn

FIXTURE = json.loads((Path(__file__).parent / "data" / "descriptors.json").read_text())
DOMAIN = FIXTURE["domain_sid"]
ES, OM, SOT = FIXTURE["sids"]["ES"], FIXTURE["sids"]["OM"], FIXTURE["sids"]["SOT"]
TS, IMP = FIXTURE["guids"]["TS"], FIXTURE["guids"]["IMP"]
DA, EA, EVERYONE, SYSTEM = f"{DOMAIN}-512", f"{DOMAIN}-519", "S-1-1-0", "S-1-5-18"
ES_TOKEN = frozenset({ES, *NETWORK_LOGON_SIDS})


def sd(name: str) -> SecurityDescriptor:
    return parse_descriptor(bytes.fromhex(FIXTURE["cases"][name]["hex"]), what=name)


# (case, token, right, outcome, deciding ACE index)
CASES = [
    ("deny_before_allow", ES_TOKEN, TS, "denied", 0),
    ("deny_before_allow", ES_TOKEN, IMP, "allowed", 1),
    ("allow_before_deny", ES_TOKEN, TS, "allowed", 0),
    ("inherit_only_deny", ES_TOKEN, TS, "allowed", 1),
    ("deny_other_right", ES_TOKEN, TS, "allowed", 1),
    ("deny_other_right", ES_TOKEN, IMP, "denied", 0),
    ("deny_all_extended", ES_TOKEN, TS, "denied", 0),
    ("deny_all_extended_object", ES_TOKEN, IMP, "denied", 0),
    ("deny_write_property_only", ES_TOKEN, TS, "allowed", 1),
    ("generic_all", ES_TOKEN, TS, "allowed", 0),
    ("generic_all_deny", ES_TOKEN, TS, "denied", 0),
    ("full_control_mapped", ES_TOKEN, IMP, "allowed", 0),
    ("deny_everyone", ES_TOKEN, TS, "denied", 0),
    ("deny_everyone", frozenset({ES}), TS, "allowed", 1),  # a token without Everyone skips the deny
    ("allow_other_right_only", ES_TOKEN, TS, "not_granted", None),
    ("allow_other_right_only", ES_TOKEN, IMP, "allowed", 0),
    ("inherited_object_type", ES_TOKEN, TS, "allowed", 1),
    ("audit_aces", ES_TOKEN, TS, "allowed", 2),  # audit ACEs in a DACL grant and deny nothing
    ("unknown_type", ES_TOKEN, TS, "allowed", 1),
    ("null_dacl", frozenset(), TS, "allowed", None),
    ("null_dacl_present", frozenset(), TS, "allowed", None),
    ("empty_dacl", ES_TOKEN, TS, "not_granted", None),
    ("empty_dacl_protected", ES_TOKEN, TS, "not_granted", None),
    ("deny_before_allow", frozenset({OM}), TS, "not_granted", None),
    ("server_default", ES_TOKEN, TS, "allowed", 10),
    ("server_default", ES_TOKEN, IMP, "allowed", 10),
    ("server_default", frozenset({SYSTEM}), TS, "allowed", 11),
    ("server_default", frozenset({ES, DA}), TS, "denied", 3),  # the inherited deny precedes the inherited allow
    ("server_default", frozenset({ES, OM}), IMP, "denied", 9),
    ("server_default", frozenset({ES, EA}), TS, "denied", 2),
    ("server_es_generic_all", frozenset({ES, DA}), TS, "allowed", 0),  # explicit allow ahead of inherited denies
    ("server_explicit_deny", frozenset({ES, SOT}), TS, "denied", 0),
    ("server_explicit_deny", frozenset({ES, SOT}), IMP, "allowed", 11),
    ("server_protected", ES_TOKEN, TS, "not_granted", None),
    ("server_protected", frozenset({DA}), TS, "not_granted", None),  # DA has full control minus CR
    ("server_protected_deny", ES_TOKEN, TS, "denied", 0),
]


@pytest.mark.parametrize(("case", "token", "right", "outcome", "index"), CASES)
def test_check_right(case: str, token: frozenset[str], right: str, outcome: str, index: int | None) -> None:
    descriptor = sd(case)
    decision = check_right(descriptor, token, right)
    assert (decision.outcome, decision.index) == (outcome, index), decision.reason
    if index is not None:
        assert decision.ace is descriptor.dacl.aces[index]


def test_right_guid_case_and_braces_do_not_matter() -> None:
    assert check_right(sd("deny_before_allow"), ES_TOKEN, "{" + TS.upper() + "}").outcome == "denied"


def test_callback_aces_are_reported_not_applied() -> None:
    decision = check_right(sd("callbacks"), ES_TOKEN, TS)
    assert (decision.outcome, decision.index, decision.unevaluated) == ("allowed", 5, (0, 1, 2, 3))


def test_applicable_aces_lists_every_match() -> None:
    found = applicable_aces(sd("server_default"), frozenset({ES, DA, OM}), TS)
    assert [i for i, _ in found] == [3, 5, 10]


def test_reasons_for_null_and_empty() -> None:
    assert "NULL DACL" in check_right(sd("null_dacl"), frozenset(), TS).reason
    assert "empty" in check_right(sd("empty_dacl"), ES_TOKEN, TS).reason


# --- A reference implementation, written straight from the rules, agrees on random DACLs --------------------


def reference(descriptor: SecurityDescriptor, token: frozenset[str], right: str) -> tuple[str, int | None]:
    if descriptor.dacl is None:
        return "allowed", None
    for index, ace in enumerate(descriptor.dacl.aces):
        if ace.flags & 0x08 or ace.sid not in token or ace.type not in (0, 1, 5, 6):
            continue
        if not ace.mask & 0x100 and not ace.mask & 0x10000000:
            continue
        if ace.type in (5, 6) and ace.object_type not in (None, right):
            continue
        return ("denied" if ace.type in (1, 6) else "allowed"), index
    return "not_granted", None


SID_POOL = [ES, OM, DA, EVERYONE, SYSTEM]
random_aces = st.builds(
    Ace,
    type=st.sampled_from([0, 1, 2, 5, 6, 7, 9, 10, 11, 12]),
    flags=st.sampled_from([0, 0x02, 0x08, 0x0A, 0x10, 0x12]),
    mask=st.sampled_from([0x100, 0x10000000, 0x10, 0x20, 0xF01FF, 0x130]),
    sid=st.sampled_from(SID_POOL),
    object_type=st.sampled_from([None, TS, IMP]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(random_aces, max_size=8), st.frozensets(st.sampled_from(SID_POOL)), st.sampled_from([TS, IMP]))
def test_matches_reference(aces: list[Ace], token: frozenset[str], right: str) -> None:
    descriptor = SecurityDescriptor(1, SE_SELF_RELATIVE | SE_DACL_PRESENT, None, None, Acl(4, tuple(aces)), None)
    decision = check_right(descriptor, token, right)
    assert (decision.outcome, decision.index) == reference(descriptor, token, right)
    assert all(aces[i].is_callback and aces[i].sid in token for i in decision.unevaluated)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(random_aces, max_size=6),
    st.lists(random_aces, max_size=3),
    st.frozensets(st.sampled_from(SID_POOL)),
    st.sampled_from([TS, IMP]),
)
def test_descriptors_of_one_decision_key_answer_every_token_alike(
    aces: list[Ace], more: list[Ace], token: frozenset[str], right: str
) -> None:
    # ACL-01 checks a caller once per key: another owner, or ACEs after these that do not cover the right, must not
    # change the key's answer; anything that changes an answer must change the key.
    one = SecurityDescriptor(1, SE_SELF_RELATIVE | SE_DACL_PRESENT, SYSTEM, None, Acl(4, tuple(aces)), None)
    other = SecurityDescriptor(1, SE_SELF_RELATIVE | SE_DACL_PRESENT, DA, None, Acl(4, (*aces, *more)), None)
    alike = check_right(one, token, right) == check_right(other, token, right) and applicable_aces(
        one, token, right
    ) == applicable_aces(other, token, right)
    assert alike or decision_key(one, right) != decision_key(other, right)
    if not any(ace.sid is not None and covers_right(ace, right) and not ace.inherit_only for ace in more) and aces:
        assert decision_key(one, right) == decision_key(other, right)


# --- Tokens and chains ------------------------------------------------------------------------------------------

BASE = "DC=lab,DC=contoso,DC=test"


def group(name: str, rid: int, *member_of: str) -> Principal:
    return Principal(
        f"CN={name},OU=Groups,{BASE}", f"{DOMAIN}-{rid}", name, tuple(f"CN={g},OU=Groups,{BASE}" for g in member_of)
    )


def computer(name: str, rid: int, *member_of: str, primary: int = 515) -> Principal:
    return Principal(
        f"CN={name},CN=Computers,{BASE}",
        f"{DOMAIN}-{rid}",
        name,
        tuple(f"CN={g},OU=Groups,{BASE}" for g in member_of),
        "computer",
        f"{name}.lab.contoso.test",
        f"{DOMAIN}-{primary}",
    )


def directory(computers: list[Principal], groups: list[Principal]) -> Directory:
    return Directory(
        domain_dn=BASE,
        configuration_dn=f"CN=Configuration,{BASE}",
        org_name="Contoso",
        org_dn="CN=Contoso",
        org_security_descriptor=None,
        well_known_groups={},
        extended_rights={},
        servers=(),
        computers={c.name: c for c in computers},
        groups={g.dn: g for g in groups},
        auth_config=None,
        virtual_directories=(),
        domain_sid=DOMAIN,
    )


@pytest.fixture
def nested() -> Directory:
    administrators = Principal(f"CN=Administrators,CN=Builtin,{BASE}", "S-1-5-32-544", "Administrators")
    domain_admins = Principal(f"CN=Domain Admins,OU=Groups,{BASE}", DA, "Domain Admins", (administrators.dn,))
    groups = [
        group("Exchange Servers", 1117),
        group("Level1", 2001, "Level2"),
        group("Level2", 2002, "Level3", "Loop"),
        group("Level3", 2003, "Organization Management"),
        group("Loop", 2004, "Level2"),  # a cycle Level2 <-> Loop
        group("Organization Management", 1104),
        domain_admins,
        administrators,
    ]
    return directory(
        [
            computer("EX01", 1301, "Exchange Servers"),
            computer("EX03", 1303, "Exchange Servers", "Level1", "Ghost Group"),
            computer("EX09", 1309, primary=512),  # primary group set to Domain Admins
        ],
        groups,
    )


def network_token(directory: Directory, server_name: str) -> frozenset[str]:
    """The token a server's computer account presents when it calls another server, as ACL-01 builds it."""
    return principal_token(directory, computer_account(directory, server_name))


def test_network_token(nested: Directory) -> None:
    token = network_token(nested, "ex03")  # server names are matched case-insensitively
    rids = {f"{DOMAIN}-{r}" for r in (1303, 515, 1117, 2001, 2002, 2003, 2004, 1104)}
    assert token == frozenset(rids | NETWORK_LOGON_SIDS)


def test_primary_group_memberships_are_followed(nested: Directory) -> None:
    token = network_token(nested, "EX09")
    assert {DA, "S-1-5-32-544"} <= token
    names = [p.name for p in membership_chain(nested, nested.computers["EX09"].dn, "S-1-5-32-544")]
    assert names == ["EX09", "Domain Admins", "Administrators"]


def test_chain_several_levels_deep(nested: Directory) -> None:
    chain = membership_chain(nested, nested.computers["EX03"].dn, OM)
    assert [p.name for p in chain] == ["EX03", "Level1", "Level2", "Level3", "Organization Management"]
    assert membership_chain(nested, nested.computers["EX03"].dn, EVERYONE) == []
    assert [p.name for p in membership_chain(nested, nested.computers["EX03"].dn.upper(), f"{DOMAIN}-1303")] == ["EX03"]


def test_unresolved_groups_are_reported(nested: Directory) -> None:
    assert unresolved_groups(nested, nested.computers["EX03"]) == (f"CN=Ghost Group,OU=Groups,{BASE}",)
    assert {g.name for g in transitive_groups(nested, nested.computers["EX01"])} == {"Exchange Servers"}


def test_group_token_and_names(nested: Directory) -> None:
    # ACL-02/03 evaluate the part of a member's token that comes from the group: the group's own token.
    group = principal_by_dn(nested, f"cn=exchange servers,ou=groups,{BASE}")  # DNs match case-insensitively
    assert group is not None and principal_token(nested, group) == frozenset({ES, *NETWORK_LOGON_SIDS})
    assert sid_name(nested, f"{DOMAIN}-1303") == "EX03$"
    assert sid_name(nested, EVERYONE) == "Everyone" and sid_name(nested, f"{DOMAIN}-519") == "Enterprise Admins"
    assert principal_by_dn(nested, f"CN=Nobody,{BASE}") is None


def test_group_name_falls_back_to_the_first_rdn_with_escapes(nested: Directory) -> None:
    assert group_name(nested, f"CN=Exchange Servers,OU=Groups,{BASE}") == "Exchange Servers"  # collected
    assert group_name(nested, f"CN=Smith\\, Ops\\\\,OU=Groups,{BASE}") == "Smith, Ops\\"  # not collected


def test_dn_helpers_split_only_at_unescaped_commas() -> None:
    # The judges' one way to cut a DN (names.py): ACL-01 compares parents to tell Exchange's own nesting.
    assert split_dn("CN=Ops\\, EU,OU=Teams, DC=x") == ["CN=Ops\\, EU", "OU=Teams", "DC=x"]
    assert parent_dn("CN=Ops\\, EU,OU=Teams,DC=x") == "OU=Teams,DC=x"
    assert parent_dn("CN=Ops\\\\,OU=Teams,DC=x") == "OU=Teams,DC=x"  # an escaped backslash, then a separator
    assert parent_dn("CN=Ops\\2C EU,OU=Teams,DC=x") == "OU=Teams,DC=x" and parent_dn("DC=x") == ""
    assert dns_domain_of("CN=Ops\\, DC=y,OU=Teams,DC=lab,DC=contoso,DC=test") == "lab.contoso.test"


def test_netbios_domain_falls_back_to_the_first_dc_label(nested: Directory) -> None:
    assert netbios_domain(nested) == "LAB"  # nETBIOSName not read (old evidence files)
    assert netbios_domain(replace(nested, netbios_domain="CONTOSO")) == "CONTOSO"


def test_no_computer_account(nested: Directory) -> None:
    with pytest.raises(NoComputerAccount):
        network_token(nested, "EDGE1")


def test_deep_chain_decides_the_check(nested: Directory) -> None:
    decision = check_right(sd("server_default"), network_token(nested, "EX03"), TS)
    assert decision.outcome == "denied" and decision.ace.sid == OM
