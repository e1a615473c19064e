"""ACL-01, ACL-02/03 and GRP-01 on hand-built Directory facts, descriptors recorded from Samba."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from exchange_compliance.facts import Directory, ExchangeServer, Principal
from exchange_compliance.judge.rights import (
    IMPERSONATION,
    TOKEN_SERIALIZATION,
    exchange_group_membership,
    exchange_servers_hold_right,
    netbios_domain,
    token_serialization_not_denied,
)
from exchange_compliance.judge.verdict import FactUnavailable, Verdict

FIXTURE = json.loads((Path(__file__).parent / "data" / "descriptors.json").read_text())
DOMAIN = FIXTURE["domain_sid"]
TS = FIXTURE["guids"]["TS"]
BASE = "DC=lab,DC=contoso,DC=test"
CONFIG = f"CN=Configuration,{BASE}"
ORG = f"CN=Contoso,CN=Microsoft Exchange,CN=Services,{CONFIG}"
SERVERS = f"CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,{ORG}"
MESG = f"OU=Microsoft Exchange Security Groups,{BASE}"
GROUPS = {  # key -> (DN, RID); the SIDs match the fixture's placeholders
    "ES": (f"CN=Exchange Servers,{MESG}", 1117),
    "ETS": (f"CN=Exchange Trusted Subsystem,{MESG}", 1118),
    "OM": (f"CN=Organization Management,{MESG}", 1104),
    "EWP": (f"CN=Exchange Windows Permissions,{MESG}", 1119),
    "DA": (f"CN=Domain Admins,CN=Users,{BASE}", 512),
    "SOT": (f"CN=Server Operators Team,OU=Teams,{BASE}", 1200),
    "G1": (f"CN=Helpdesk Servers,OU=Teams,{BASE}", 2001),
    "G2": (f"CN=Tier1 Servers,OU=Teams,{BASE}", 2002),
    "G3": (f"CN=All Server Admins,OU=Teams,{BASE}", 2003),
}


def raw(case: str) -> bytes:
    return bytes.fromhex(FIXTURE["cases"][case]["hex"])


def lab(
    descriptors: dict[str, str | bytes | None] | None = None,
    member_of: dict[str, tuple[str, ...]] | None = None,
    nesting: dict[str, tuple[str, ...]] | None = None,
    names: dict[str, str] | None = None,
    primary: dict[str, int] | None = None,
    n: int = 6,
) -> Directory:
    """EX01..EXn (Mailbox + Client Access, in ES and ETS) and EDGE1; `descriptors` maps server -> fixture case."""
    descriptors, member_of, nesting = descriptors or {}, member_of or {}, nesting or {}
    names, primary = names or {}, primary or {}

    def dn(key: str) -> str:
        return GROUPS[key][0]

    groups = {
        dn(key): Principal(
            dn(key),
            f"{DOMAIN}-{rid}",
            names.get(key, dn(key)[3:].split(",")[0]),
            tuple(dn(g) for g in nesting.get(key, ())),
        )
        for key, (_, rid) in GROUPS.items()
    }
    servers, computers = [], {}
    for i in range(1, n + 1):
        name = f"EX{i:02d}"
        sd = descriptors.get(name, "server_default")
        servers.append(
            ExchangeServer(
                name,
                f"CN={name},{SERVERS}",
                f"{name.lower()}.lab.contoso.test",
                6,
                None,
                None,
                raw(sd) if isinstance(sd, str) else sd,
            )
        )
        computers[name] = Principal(
            f"CN={name},CN=Computers,{BASE}",
            f"{DOMAIN}-{1300 + i}",
            name,
            tuple(dn(g) for g in member_of.get(name, ("ES", "ETS"))),
            "computer",
            f"{name.lower()}.lab.contoso.test",
            f"{DOMAIN}-{primary.get(name, 515)}",
        )
    servers.append(
        ExchangeServer("EDGE1", f"CN=EDGE1,{SERVERS}", "edge1.dmz.test", 64, None, None, raw("server_default"))
    )
    return Directory(
        domain_dn=BASE,
        configuration_dn=CONFIG,
        org_name="Contoso",
        org_dn=ORG,
        org_security_descriptor=raw("org_default"),
        well_known_groups={
            "exchange_servers": dn("ES"),
            "exchange_trusted_subsystem": dn("ETS"),
            "organization_management": dn("OM"),
        },
        extended_rights={
            "ms-Exch-EPI-Token-Serialization": TS,
            "ms-Exch-EPI-Impersonation": FIXTURE["guids"]["IMP"],
            "ms-Exch-EPI-May-Impersonate": "bc39105d-9baa-477c-a34a-997cc25e3d60",
        },
        servers=tuple(servers),
        computers=computers,
        groups=groups,
        auth_config=None,
        virtual_directories=(),
        domain_sid=DOMAIN,
    )


def acl01(directory: Directory, name: str) -> Verdict:
    return token_serialization_not_denied(directory, directory.server(name))


# --- ACL-01 -------------------------------------------------------------------------------------------------------


def test_healthy_org_passes() -> None:
    directory = lab()
    for server in directory.servers:
        verdict = token_serialization_not_denied(directory, server)
        assert verdict.met, verdict.evidence
    assert "not denied" in acl01(directory, "EX01").evidence


def test_seed_000_nested_team_in_domain_admins_fails_ex02_only() -> None:
    directory = lab(member_of={"EX02": ("ES", "ETS", "SOT")}, nesting={"SOT": ("DA",)})
    assert acl01(directory, "EX01").met and acl01(directory, "EX03").met
    verdict = acl01(directory, "EX02")
    assert not verdict.met
    assert "EX02$ \u2192 Server Operators Team \u2192 Domain Admins" in verdict.evidence
    assert f"(OD;CIID;CR;{TS};;DA)" in verdict.evidence
    assert f"Domain Admins ({DOMAIN}-512)" in verdict.evidence
    assert f"on EX06 (CN=EX06,{SERVERS}), ACE #3" in verdict.evidence and "EDGE1" in verdict.evidence
    assert len(verdict.details["denied"]) == 7  # every server object, the Edge one included
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
    directory = lab(nesting={"ETS": ("DA",)})
    verdicts = [acl01(directory, f"EX0{i}") for i in range(1, 7)]
    assert not any(v.met for v in verdicts)
    assert "EX01$ \u2192 Exchange Trusted Subsystem \u2192 Domain Admins" in verdicts[0].evidence
    assert 'Remove-ADGroupMember -Identity "Domain Admins" -Members "Exchange Trusted Subsystem"' in verdicts[0].fix


def test_exchange_own_nesting_is_not_the_link_to_remove() -> None:
    # ETS in Exchange Windows Permissions is setup's doing; EWP in Domain Admins is the added link.
    directory = lab(nesting={"ETS": ("EWP",), "EWP": ("DA",)})
    verdict = acl01(directory, "EX01")
    assert (
        "EX01$ \u2192 Exchange Trusted Subsystem \u2192 Exchange Windows Permissions \u2192 Domain Admins"
        in verdict.evidence
    )
    assert verdict.fix.startswith(
        'Remove-ADGroupMember -Identity "Domain Admins" -Members "Exchange Windows Permissions"'
    )


def test_organization_management_several_levels_deep() -> None:
    directory = lab(member_of={"EX03": ("ES", "ETS", "G1")}, nesting={"G1": ("G2",), "G2": ("G3",), "G3": ("OM",)})
    verdict = acl01(directory, "EX03")
    chain = "EX03$ \u2192 Helpdesk Servers \u2192 Tier1 Servers \u2192 All Server Admins \u2192 Organization Management"
    assert not verdict.met and chain in verdict.evidence
    assert verdict.fix.startswith('Remove-ADGroupMember -Identity "Helpdesk Servers" -Members "EX03$"')


def test_every_denied_group_gets_its_fix() -> None:
    directory = lab(member_of={"EX02": ("ES", "ETS", "SOT", "OM")}, nesting={"SOT": ("DA",)})
    fix = acl01(directory, "EX02").fix
    assert '-Identity "Server Operators Team" -Members "EX02$"' in fix
    assert '-Identity "Organization Management" -Members "EX02$"' in fix


def test_deny_on_one_server_object_only() -> None:
    directory = lab(descriptors={"EX04": "server_explicit_deny"}, member_of={"EX02": ("ES", "ETS", "SOT")})
    verdict = acl01(directory, "EX02")
    assert not verdict.met and [d["server"] for d in verdict.details["denied"]] == ["EX04"]
    assert "ACE #0" in verdict.evidence and "EX02$ \u2192 Server Operators Team" in verdict.evidence
    assert acl01(directory, "EX01").met


def test_inherit_only_deny_does_not_count() -> None:
    directory = lab(descriptors={"EX03": "inherit_only_deny"})
    assert acl01(directory, "EX01").met
    assert exchange_servers_hold_right(directory, directory.server("EX03"), TOKEN_SERIALIZATION).met


def test_deny_to_everyone_is_an_ace_to_remove() -> None:
    directory = lab(descriptors={"EX04": "deny_everyone"})
    verdict = acl01(directory, "EX01")
    assert not verdict.met and "every network logon carries Everyone" in verdict.evidence
    assert verdict.fix.startswith(
        'Remove-ADPermission -Identity "EX04" -User "Everyone" -Deny -AccessRights ExtendedRight'
    )
    assert "restart" not in verdict.fix


def test_primary_group_domain_admins() -> None:
    directory = lab(primary={"EX05": 512})
    verdict = acl01(directory, "EX05")
    assert "EX05$ \u2192 Domain Admins" in verdict.evidence
    assert 'Set-ADComputer -Identity "EX05$" -Replace @{primaryGroupID=515}' in verdict.fix


def test_edge_is_not_applicable() -> None:
    directory = lab()
    edge = directory.server("EDGE1")
    for verdict in (
        token_serialization_not_denied(directory, edge),
        exchange_group_membership(directory, edge),
        exchange_servers_hold_right(directory, edge, TOKEN_SERIALIZATION),
    ):
        assert verdict.met and not verdict.applicable


def test_missing_computer_account_of_a_mailbox_server_is_an_error() -> None:
    directory = lab()
    directory.computers.pop("EX06")
    with pytest.raises(FactUnavailable, match="EX06"):
        acl01(directory, "EX06")


def test_malformed_descriptor_on_one_object() -> None:
    directory = lab(
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
    directory = replace(lab(), extended_rights={})
    with pytest.raises(FactUnavailable, match="ms-Exch-EPI-Token-Serialization was not found under CN=Extended-Rights"):
        acl01(directory, "EX01")


# --- ACL-02 / ACL-03 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("right", [TOKEN_SERIALIZATION, IMPERSONATION])
def test_seed_002_protected_dacl_fails(right: str) -> None:
    directory = lab(descriptors={"EX05": "server_protected"})
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
    directory = lab()
    verdict = exchange_servers_hold_right(directory, directory.server("EX01"), TOKEN_SERIALIZATION)
    assert verdict.met and f"ACE #10 (A;CIID;CR;;;{DOMAIN}-1117) (inherited)" in verdict.evidence


def test_generic_all_to_exchange_servers_passes() -> None:
    directory = lab(descriptors={"EX02": "server_es_generic_all"})
    for right in (TOKEN_SERIALIZATION, IMPERSONATION):
        verdict = exchange_servers_hold_right(directory, directory.server("EX02"), right)
        assert verdict.met and f"(A;;GA;;;{DOMAIN}-1117)" in verdict.evidence


def test_explicit_deny_ahead_of_the_allow() -> None:
    directory = lab(descriptors={"EX03": "server_protected_deny"})
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
    directory = lab(nesting={"ES": ("DA",)})
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
    directory = lab(descriptors={"EX06": "allow_other_right_only"})
    verdict = exchange_servers_hold_right(directory, directory.server("EX06"), TOKEN_SERIALIZATION)
    assert not verdict.met and "allow ACEs for the group exist but none covers the right" in verdict.evidence


def test_localised_group_name_and_domain() -> None:
    directory = lab(descriptors={"EX05": "server_protected"}, names={"ES": "Serveurs Exchange"})
    verdict = exchange_servers_hold_right(directory, directory.server("EX05"), IMPERSONATION)
    assert '-User "LAB\\Serveurs Exchange"' in verdict.fix
    assert netbios_domain(directory) == "LAB"


# --- GRP-01 -------------------------------------------------------------------------------------------------------


def test_membership_passes_directly_and_nested() -> None:
    directory = lab(member_of={"EX02": ("ES", "G1")}, nesting={"G1": ("ETS",)})
    assert "directly" in exchange_group_membership(directory, directory.server("EX01")).evidence
    verdict = exchange_group_membership(directory, directory.server("EX02"))
    assert verdict.met and "Exchange Trusted Subsystem (via Helpdesk Servers)" in verdict.evidence


def test_membership_missing_group() -> None:
    directory = lab(member_of={"EX04": ("ES",)})
    verdict = exchange_group_membership(directory, directory.server("EX04"))
    assert not verdict.met and verdict.details["missing"] == [GROUPS["ETS"][0]]
    assert verdict.fix.splitlines()[0] == 'Add-ADGroupMember -Identity "Exchange Trusted Subsystem" -Members "EX04$"'


def test_membership_uses_well_known_dns_not_names() -> None:
    directory = lab(member_of={"EX04": ()}, names={"ES": "Serveurs Exchange", "ETS": "Sous-système approuvé Exchange"})
    verdict = exchange_group_membership(directory, directory.server("EX04"))
    assert '-Identity "Serveurs Exchange" -Members "EX04$"' in verdict.fix
    assert '-Identity "Sous-système approuvé Exchange"' in verdict.fix
    directory = replace(directory, well_known_groups={})
    with pytest.raises(FactUnavailable, match="otherWellKnownObjects"):
        exchange_group_membership(directory, directory.server("EX01"))
