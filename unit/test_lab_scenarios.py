"""Each rule of the directory-rights and certificate requirements, planted in the lab org and judged end to end.

The scenarios (exchange_compliance/lab/scenarios/*.toml) plant their faults through Samba and through the lab
servers' real certificates and bindings; the suite finds them through LDAP, WinRM and TLS as in production.
"""

from __future__ import annotations

import re

import pytest
from lab_org import lab_up, needs_lab, outcomes, row, run_suite

pytestmark = needs_lab

EXPECTED_FAILURES = {
    "rights-cases": {
        ("ACL-01", "EX02"),
        ("ACL-01", "EX03"),
        ("ACL-01", "EX05"),
        ("ACL-01", "EX09"),
        ("GRP-01", "EX08"),
    },
    "certificate-cases": {
        ("AUTH-02", "EX02"),
        ("AUTH-04", None),
        ("BE-02", "EX04"),
        ("BE-03", "EX04"),
        ("BE-03", "EX06"),
        ("GATE-01", "EX07"),
    },
    "auth-staged": set(),
    "auth-staged-missing": {("AUTH-04", None)},
}


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """Each scenario brought up and judged once for this module."""
    results = {}

    def run(scenario: str) -> dict:
        if scenario not in results:
            lab_up(scenario)
            _status, results[scenario], output = run_suite(tmp_path_factory.mktemp(scenario))
            assert results[scenario], output
        return results[scenario]

    return run


@pytest.mark.parametrize("scenario", sorted(EXPECTED_FAILURES))
def test_scenario_fails_exactly_its_planted_cases(judged, scenario):
    results = judged(scenario)
    assert outcomes(results, "failed") == EXPECTED_FAILURES[scenario]
    assert outcomes(results, "error") == set()


def test_deny_through_four_levels_of_nesting_shows_the_whole_chain(judged):
    message = row(judged("rights-cases"), "ACL-01", "EX03")["message"]
    assert "EX03$ → Tier Level 1 → Tier Level 2 → Tier Level 3 → Tier Level 4" in message


def test_computer_directly_in_organization_management(judged):
    acl01 = row(judged("rights-cases"), "ACL-01", "EX02")
    assert "EX02$ → Organization Management" in acl01["message"]
    assert 'Remove-ADGroupMember -Identity "Organization Management" -Members "EX02$"' in acl01["fix"]


def test_deny_placed_on_one_server_object_fails_that_caller_on_that_object_only(judged):
    acl01 = row(judged("rights-cases"), "ACL-01", "EX05")
    assert "1 of 9" in acl01["message"] and "on EX04 (" in acl01["message"]
    assert 'Remove-ADPermission -Identity "EX04" -User "LAB\\EX05$" -Deny' in acl01["fix"]


def test_deny_set_on_the_administrative_group_is_named_there_and_removable_there(judged):
    acl01 = row(judged("rights-cases"), "ACL-01", "EX09")
    group = "CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,CN=Contoso"
    assert (
        f"inherited from the administrative group Exchange Administrative Group (FYDIBOHF23SPDLT) ({group},"
        in (acl01["message"])
    )
    assert "EX09$ → Admin Group Deny Team" in acl01["message"]
    fix = acl01["fix"].splitlines()
    assert fix[0] == 'Remove-ADGroupMember -Identity "Admin Group Deny Team" -Members "EX09$" -Confirm:$false'
    assert any(line.startswith(f'#   Remove-ADPermission -Identity "{group},') for line in fix)
    assert '-User "LAB\\Admin Group Deny Team" -Deny' in acl01["fix"] and "-InheritanceType All" in acl01["fix"]
    # EX07's DACL is protected: the deny set above does not reach it, and the evidence does not count it.
    assert "8 server object(s)" in acl01["fix"] and "EX07" not in acl01["message"]


def test_inherit_only_deny_does_not_count(judged):
    assert row(judged("rights-cases"), "ACL-01", "EX06")["outcome"] == "passed"


def test_generic_all_to_exchange_servers_grants_the_rights(judged):
    results = judged("rights-cases")
    assert row(results, "ACL-02", "EX07")["outcome"] == "passed"
    assert row(results, "ACL-03", "EX07")["outcome"] == "passed"


def test_group_membership_names_the_missing_group(judged):
    grp01 = row(judged("rights-cases"), "GRP-01", "EX08")
    assert "Exchange Trusted Subsystem" in grp01["message"]
    assert 'Add-ADGroupMember -Identity "Exchange Trusted Subsystem" -Members "EX08$"' in grp01["fix"]


def test_auth_certificate_without_private_key(judged):
    auth02 = row(judged("certificate-cases"), "AUTH-02", "EX02")
    assert "private key" in auth02["message"].lower()


def test_wildcards_and_fqdn_only_certificates_on_444(judged):
    results = judged("certificate-cases")
    assert row(results, "BE-02", "EX03")["outcome"] == "passed"  # *.lab.contoso.test covers ex03.lab.contoso.test
    assert row(results, "BE-02", "EX05")["outcome"] == "passed"  # names the FQDN, not the short name
    assert "*.contoso.test" in row(results, "BE-02", "EX04")["message"]


def test_wire_certificate_differing_from_the_binding_names_both(judged):
    results = judged("certificate-cases")
    be03 = row(results, "BE-03", "EX06")
    assert row(results, "BE-02", "EX06")["outcome"] == "passed"
    thumbprints = {w for w in be03["message"].replace(",", " ").replace(")", " ").split() if len(w) == 40}
    assert len(thumbprints) >= 2, be03["message"]


def test_expired_certificate_bound_on_443_blocks_the_gate(judged):
    gate = row(judged("certificate-cases"), "GATE-01", "EX07")
    assert "443" in gate["message"] and "expired" in gate["message"].lower()


def test_edge_server_rows_are_not_applicable_with_a_reason(judged):
    results = judged("certificate-cases")
    edge = [r for r in results["rows"] if r["server"] == "EDGE01" and r["requirement"] in ("AUTH-02", "GRP-01")]
    assert edge and all(r["outcome"] == "not_applicable" and "Edge" in r["message"] for r in edge)


def test_auth_certificate_expiring_soon_without_a_successor(judged):
    auth04 = row(judged("certificate-cases"), "AUTH-04", None)
    assert row(judged("certificate-cases"), "AUTH-03", None)["outcome"] == "passed"
    # 10 days at `up`; a day boundary between up and the run can make it 9.
    assert re.search(r"\b(9|10) days left\b", auth04["message"]) and "no next certificate" in auth04["message"]


def test_staged_successor_missing_on_one_server_names_it(judged):
    assert "EX02" in row(judged("auth-staged-missing"), "AUTH-04", None)["message"]
