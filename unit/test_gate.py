"""The CU gate: --gate --target-version BUILD|"2016 CU23", GATE-02 only then, and one GO / NO-GO line."""

from __future__ import annotations

import json

import pytest

from conftest import build_org
from exchange_compliance.builds import CU_BUILDS, UPDATE_BUILDS, release_name
from exchange_compliance.facts import Version
from exchange_compliance.judge.cu_gate import EXCHANGE_2016_CU6, EXCHANGE_2016_CU7
from exchange_compliance.plugin import run_verdict
from exchange_compliance.plugin.gate import TargetError, parse_target, target_from_options
from exchange_compliance.plugin.results import Row


@pytest.mark.parametrize(
    ("text", "version", "label"),
    [
        ("15.1.2507.6", Version(15, 1, 2507, 6), "Exchange 2016 CU23 (15.1.2507.6)"),
        ("15.1.2507.39", Version(15, 1, 2507, 39), "Exchange 2016 CU23 (15.1.2507.39)"),  # CU23 plus an SU
        ("15.2.1544", Version(15, 2, 1544), "Exchange 2019 CU14 (15.2.1544)"),
        ("15.0.9999.1", Version(15, 0, 9999, 1), "Exchange 2013 (15.0.9999.1)"),
        ("2016 CU23", Version(15, 1, 2507, 6), "Exchange 2016 CU23 (15.1.2507.6)"),
        ("Exchange 2019 cu14", Version(15, 2, 1544, 4), "Exchange 2019 CU14 (15.2.1544.4)"),
        ("2016CU6", Version(15, 1, 1034, 26), "Exchange 2016 CU6 (15.1.1034.26)"),
        (" 2013 SP1 ", Version(15, 0, 847, 32), "Exchange 2013 SP1 (15.0.847.32)"),
        # Exchange SE shares 15.2 with Exchange 2019: the name comes from the build.
        ("SE RTM", Version(15, 2, 2562, 17), "Exchange SE RTM (15.2.2562.17)"),
        ("Exchange SE RTM", Version(15, 2, 2562, 17), "Exchange SE RTM (15.2.2562.17)"),
        ("exchange se rtm", Version(15, 2, 2562, 17), "Exchange SE RTM (15.2.2562.17)"),
        ("15.2.2562.17", Version(15, 2, 2562, 17), "Exchange SE RTM (15.2.2562.17)"),
        ("SE RTM Feb26SU", Version(15, 2, 2562, 37), "Exchange SE RTM Feb26SU (15.2.2562.37)"),
        ("15.2.2562.27", Version(15, 2, 2562, 27), "Exchange SE RTM Sep25HU (15.2.2562.27)"),
        ("15.2.2562.43", Version(15, 2, 2562, 43), "Exchange SE RTM (15.2.2562.43)"),  # an update the table lacks
        ("2019 CU15 Feb26SU", Version(15, 2, 1748, 43), "Exchange 2019 CU15 Feb26SU (15.2.1748.43)"),
        ("15.2.1748.10", Version(15, 2, 1748, 10), "Exchange 2019 CU15 (15.2.1748.10)"),
        # Newer than the table: shown by its number, never refused.
        ("15.2.2999.1", Version(15, 2, 2999, 1), "Exchange SE (15.2.2999.1)"),
        ("15.3.100.1", Version(15, 3, 100, 1), "Exchange 15.3 (15.3.100.1)"),
    ],
)
def test_target_from_build_or_name(text, version, label):
    target = parse_target(text)
    assert (target.version, target.label) == (version, label)


def test_the_table_agrees_with_the_judge():
    for name, judge_version in (("2016 CU6", EXCHANGE_2016_CU6), ("2016 CU7", EXCHANGE_2016_CU7)):
        found = parse_target(name).version
        assert (found.major, found.minor, found.build) == (
            judge_version.major,
            judge_version.minor,
            judge_version.build,
        )
    for product, builds in CU_BUILDS.items():
        numbers = [parse_target(build).version.build for build in builds.values()]
        assert numbers == sorted(numbers), product  # each table in release order: a typo shows up here
    for (product, cu), updates in UPDATE_BUILDS.items():
        versions = [parse_target(build).version for build in updates.values()]
        assert versions == sorted(versions), (product, cu)
        base = parse_target(CU_BUILDS[product][cu]).version
        assert all(v.build == base.build and v.revision > base.revision for v in versions), (product, cu)


def test_the_product_comes_from_the_build():
    assert Version(15, 2, 2562, 17).product == "Exchange SE"
    assert Version(15, 2, 2999).product == "Exchange SE"
    assert Version(15, 2, 1748, 43).product == "Exchange 2019"
    assert release_name(Version(15, 2, 2562, 20)) == "Exchange SE RTM Aug25SU"
    assert release_name(Version(15, 2, 2562)) == "Exchange SE RTM"  # versionNumber has no revision
    assert release_name(Version(15, 2, 2600, 5)) == "Exchange SE"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2016 CU99", "Exchange 2016 has no CU99; known: RTM, CU1"),
        ("SE CU1", "Exchange SE has no CU1; known: RTM (for one the suite's table lacks, give its build number)"),
        ("SE RTM Jan99SU", "Exchange SE RTM has no update Jan99SU; known: Aug25SU, Sep25HU"),
        ("2010 SP3", "give a build (15.1.2507.6) or a release name"),
        ("14.3.123.4", "not an Exchange 2013 or later build"),
        ("latest", "give a build"),
    ],
)
def test_unknown_target_is_a_clear_error(text, message):
    with pytest.raises(TargetError) as caught:
        parse_target(text)
    assert message in str(caught.value)


def test_gate_and_target_go_together():
    assert target_from_options(False, None) is None
    with pytest.raises(TargetError, match="--gate needs --target-version"):
        target_from_options(True, None)
    with pytest.raises(TargetError, match="--target-version is for the CU gate: add --gate"):
        target_from_options(False, "2016 CU23")


def row(requirement: str, outcome: str, severity: str, server: str | None = "EX01", **details: object) -> Row:
    return Row.from_dict(
        {"requirement": requirement, "server": server, "outcome": outcome, "severity": severity, "details": details}
    )


def test_what_blocks():
    assert run_verdict.blocks(row("BE-02", "failed", "critical"), "high", gate=False)
    assert run_verdict.blocks(row("BE-01", "error", "high"), "high", gate=False)  # not checked is not known to be met
    assert not run_verdict.blocks(row("EWS-01", "failed", "medium"), "high", gate=False)
    assert run_verdict.blocks(row("EWS-01", "failed", "medium"), "medium", gate=False)
    assert not run_verdict.blocks(row("BE-02", "waived", "critical"), "low", gate=False)
    assert not run_verdict.blocks(row("GATE-02", "failed", "high"), "critical", gate=False)
    gate_requirement = row("GATE-02", "failed", "high")
    assert run_verdict.blocks(gate_requirement, "critical", gate=True)  # a gate requirement always blocks


def test_verdict_lines():
    rows = [row("EWS-01", "failed", "medium"), row("GATE-02", "passed", "high", warning=True)]
    passed = run_verdict.judge_rows(rows, "high", False, [], None)
    assert not passed.failed
    assert passed.line() == "PASS: nothing fails at or above high; 1 below it; warning: GATE-02 on EX01"
    target = parse_target("2016 CU6")
    failing = run_verdict.judge_rows([*rows, row("AUTH-03", "failed", "critical", None)], "high", True, [], None)
    assert failing.line(target) == (
        "NO-GO Exchange 2016 CU6 (15.1.1034.26): 1 blocking at or above high: AUTH-03 (org) (critical, failed)"
    )
    broken = run_verdict.judge_rows([], "high", False, ["tests_env/test_x.py::test_y"], None)
    assert broken.failed and "tests_env/test_x.py::test_y (a check broke outside any requirement)" in broken.line()
    assert run_verdict.judge_rows([], "high", True, [], "ldap down").line(target).startswith("NO-GO Exchange 2016 CU6")


# --- in a run ----------------------------------------------------------------------------------------------------


def gate_rows(run) -> dict:
    rows = json.loads((run.reports / "latest.json").read_text())["rows"]
    return {r["server"]: r for r in rows if r["requirement"] == "GATE-02"}


def test_gate_02_is_collected_only_in_a_gate_run(suite):
    run = suite(build_org(2))
    assert run.ret == 0 and gate_rows(run) == {}
    assert "GATE-02" not in (run.reports / "latest.html").read_text().split("results-table")[0]


def test_cu6_with_a_server_missing_the_auth_certificate_is_no_go(suite):
    run = suite(build_org(3, ("no-auth-cert:EX02",)), "--gate", "--target-version", "2016 CU6")
    assert run.ret == 1
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("exchange-compliance: contoso-unit: NO-GO Exchange 2016 CU6 (15.1.1034.26): ")
    assert "GATE-02 on EX02 (high, failed)" in last and "AUTH-02 on EX02 (critical, failed)" in last
    found = gate_rows(run)
    assert found["EX02"]["outcome"] == "failed" and "CU7" in found["EX02"]["fix"]
    assert found["EX01"]["outcome"] == "passed" and found["EX01"]["details"]["warning"] is True
    document = json.loads((run.reports / "latest.json").read_text())
    assert document["gate"] == {"target": "15.1.1034.26", "label": "Exchange 2016 CU6 (15.1.1034.26)"}
    assert document["verdict"]["status"] == "fail"


def test_healthy_org_is_go_and_names_its_warnings(suite):
    run = suite(build_org(2), "--gate", "--target-version", "15.1.1034.26")
    assert run.ret == 0, run.stdout
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("exchange-compliance: contoso-unit: GO Exchange 2016 CU6 (15.1.1034.26): nothing fails")
    assert "warning: " in last and "GATE-02 on EX01" in last and "GATE-02 on EX02" in last


def test_a_gate_requirement_blocks_below_the_threshold(suite):
    run = suite(build_org(2, ("no-auth-cert:EX02",)), "--gate", "--target-version", "2016 CU6", "--fail-on", "critical")
    assert run.ret == 1
    assert "GATE-02 on EX02 (high, failed)" in run.stdout.strip().splitlines()[-1]


def test_unreachable_server_targeted_at_cu6_is_an_error_but_elsewhere_not(suite):
    facts = build_org(2, ("unreachable:EX02",))
    run = suite(facts, "--gate", "--target-version", "2016 CU6")
    assert gate_rows(run)["EX02"]["outcome"] == "error"  # whether AUTH-02 holds decides CU6: it is unknown
    run = suite(facts, "--gate", "--target-version", "2016 CU23")
    assert gate_rows(run)["EX02"]["outcome"] == "passed"  # CU23 does not have the CU6 break


def test_an_exchange_se_org_is_named_and_gated(suite):
    run = suite(build_org(2, version="15.2.2562.17"), "--gate", "--target-version", "SE RTM Feb26SU")
    assert run.ret == 0, run.stdout
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("exchange-compliance: contoso-unit: GO Exchange SE RTM Feb26SU (15.2.2562.37): nothing")
    html = (run.reports / "latest.html").read_text()
    assert "Exchange builds</td><td>Exchange SE RTM (15.2.2562.17): EX01, EX02, EDGE1</td>" in html
    assert gate_rows(run)["EX01"]["message"].startswith("EX01 runs Exchange SE RTM (15.2.2562.17): GATE-02 is for")
    # A build newer than the suite's table is a target all the same, named by its number.
    run = suite(build_org(1, version="15.2.2562.17"), "--gate", "--target-version", "15.2.2999.1")
    assert run.ret == 0 and "GO Exchange SE (15.2.2999.1): nothing fails" in run.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gate",), "--gate needs --target-version"),
        (("--gate", "--target-version", "2016 CU99"), "Exchange 2016 has no CU99"),
        (("--target-version", "2016 CU23"), "add --gate"),
        (("--fail-on", "severe"), "invalid choice: 'severe'"),
        (("--keep-reports", "0"), "--keep-reports: keep at least 1 run"),
    ],
)
def test_bad_gate_options_are_usage_errors(suite, args, message):
    run = suite(build_org(1), *args)
    assert run.ret == 4
    assert message in run.stderr
