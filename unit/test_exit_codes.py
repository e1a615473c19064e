"""Exit status: 0 nothing fails at or above --fail-on (default high), 1 something does, 4 a usage or config
error, 6 the org could not be checked at all; the last line says which, and why."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from html import escape
from pathlib import Path

import pytest

from conftest import CREDENTIALS, TESTS_ENV, build_org, live_org, report_data, report_rows
from exchange_compliance import snapshot


def last_line(run) -> str:
    return run.stdout.strip().splitlines()[-1]


def test_healthy_org_exits_0(suite):
    run = suite(build_org(3))
    assert run.ret == 0, run.stdout
    assert last_line(run) == "exchange-compliance: contoso-unit: PASS: nothing fails at or above high"
    assert json.loads((run.reports / "latest.json").read_text())["verdict"]["status"] == "pass"


def test_critical_failure_exits_1_and_names_it(suite):
    run = suite(build_org(3, ("backend-cert:EX02",)))
    assert run.ret == 1
    assert last_line(run) == (
        "exchange-compliance: contoso-unit: FAIL: 2 blocking at or above high: "
        "BE-02 on EX02 (critical, failed), BE-03 on EX02 (critical, failed)"
    )


def test_medium_failure_passes_the_default_threshold_and_fails_a_lower_one(suite):
    facts = build_org(2, ("ews-http:EX02",))
    run = suite(facts)
    assert run.ret == 0
    assert last_line(run).endswith("PASS: nothing fails at or above high; 1 below it")
    assert "1 failed" in run.stdout  # still a failure in the report and the counts, just not a blocking one
    run = suite(facts, "--fail-on", "medium")
    assert run.ret == 1 and "EWS-01 on EX02 (medium, failed)" in last_line(run)


def test_a_row_that_could_not_be_checked_blocks_like_a_failure(suite):
    run = suite(build_org(3, ("unreachable:EX02",)))
    assert run.ret == 1
    assert "5 not checked, WinRM on EX02: connection refused on 5986" in last_line(run)
    assert suite(build_org(3, ("unreachable:EX02",)), "--fail-on", "critical").ret == 1  # BE-02 etc. are critical


def test_no_server_answering_is_exit_6_with_a_report(suite):
    run = suite(build_org(2, ("unreachable:EX01", "unreachable:EX02", "unreachable:EDGE1")))
    assert run.ret == 6
    assert "NOT CHECKED: the org could not be checked: no checked Exchange server answered" in last_line(run)
    html = (run.reports / "latest.html").read_text()
    assert "WinRM on all 3 servers (EX01, EX02, EDGE1): connection refused on 5986" in html
    assert json.loads((run.reports / "latest.json").read_text())["verdict"]["status"] == "unreachable"


SERVERS = "EX01, EX02, EDGE1"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"checked": ("NOPE",)},
            "the evidence file's checked list names none of its servers: it lists NOPE; the servers are " + SERVERS,
        ),
        (
            {"checked": ()},
            "the evidence file's checked list names none of its servers: it lists nothing; the servers are",
        ),
        (
            {"checked": (), "include": ("NOPE*",)},
            f'the [servers] patterns (include = ["NOPE*"]) select none of the 3 servers ({SERVERS})',
        ),
        (
            {"checked": (), "include": ("EX*",), "exclude": ("EX*",)},
            f'the [servers] patterns (include = ["EX*"], exclude = ["EX*"]) select none of the 3 servers ({SERVERS})',
        ),
        ({"servers": ()}, "no msExchExchangeServer objects under CN=Contoso,CN=Microsoft Exchange,CN=Services,"),
    ],
)
def test_nothing_checked_is_exit_6_not_a_pass(suite, change, why):
    facts = build_org(2)
    if "servers" in change:
        facts = replace(facts, checked=(), directory=replace(facts.directory, servers=()))
    else:
        facts = replace(facts, **change)
    run = suite(facts)
    output = run.stdout + run.stderr
    assert run.ret == 6, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert last_line(run).startswith(
        f"exchange-compliance: contoso-unit: NOT CHECKED: the org could not be checked: no server was checked: {why}"
    )
    document = json.loads((run.reports / "latest.json").read_text())
    assert document["verdict"]["status"] == "unreachable" and document["rows"] == []
    assert document["verdict"]["line"] == last_line(run).removeprefix("exchange-compliance: ")
    assert f"no server was checked: {escape(why)}" in (run.reports / "latest.html").read_text()


def test_unreachable_directory_is_exit_6_and_the_report_says_why(suite, tmp_path):
    run = suite(None, "--org", str(live_org(tmp_path)), env=CREDENTIALS)
    assert run.ret == 6, run.stdout + run.stderr
    assert "no domain controller could be bound: 127.0.0.1:1" in last_line(run)
    reports = run.reports.parent / "prod"
    document = json.loads((reports / "latest.json").read_text())
    assert document["verdict"]["status"] == "unreachable" and document["rows"] == []
    html = (reports / "latest.html").read_text()
    assert "the org could not be checked: no domain controller could be bound" in html
    assert (reports / "latest.xml").is_file()


def test_config_errors_are_exit_4_with_one_line_naming_file_and_key(suite, tmp_path):
    path = live_org(tmp_path, "\n[backend]\nprot = 444\n")
    run = suite(None, "--org", str(path), env=CREDENTIALS)
    assert run.ret == 4
    assert f"ERROR: {path}: [backend] prot: unknown key" in run.stderr
    run = suite(None, "--org", str(live_org(tmp_path)))  # no credentials in the environment
    assert run.ret == 4 and "environment variable T_LDAP_USER is not set" in run.stderr


def test_missing_org_and_bad_snapshot_are_exit_4(suite, tmp_path):
    run = suite(None)
    assert run.ret == 4 and "give --org NAME (orgs/NAME.toml) or --org-snapshot FILE" in run.stderr
    (tmp_path / "bad.json").write_text("{")
    run = suite(None, "--org-snapshot", str(tmp_path / "bad.json"))
    assert run.ret == 4 and "bad.json: not JSON" in run.stderr


@pytest.fixture
def tests_env_copy(pytester: pytest.Pytester) -> Path:
    """tests_env copied beside a pytester rootdir of its own, to add a test the real suite does not have."""
    target = pytester.path / "tests_env"
    shutil.copytree(TESTS_ENV, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_a_broken_check_fails_the_run_and_keeps_its_traceback(pytester, tests_env_copy):
    (tests_env_copy / "test_broken.py").write_text(
        "from exchange_compliance.plugin import requirement\n\n\n"
        '@requirement("GRP-01")\ndef test_a_bug(directory, server):\n    return {}["missing"]\n\n\n'
        "def test_helper_outside_any_requirement():\n    assert False, 'broken helper'\n"
    )
    facts = snapshot.write(build_org(1), pytester.path / "facts.json")
    run = pytester.runpytest_subprocess(
        "-p", "exchange_compliance.plugin", str(tests_env_copy), "--org-snapshot", str(facts), "--reports-dir", "out"
    )
    assert run.ret == 1
    line = run.outlines[-1]
    assert "GRP-01 on EX01 (high, error)" in line
    assert "test_broken.py::test_helper_outside_any_requirement (a check broke outside any requirement)" in line
    results = json.loads((pytester.path / "out" / "contoso-unit" / "latest.json").read_text())
    bug = next(r for r in results["rows"] if r["requirement"] == "GRP-01" and r["outcome"] == "error")
    assert bug["message"] == "the check itself failed (KeyError): 'missing'"
    report = pytester.path / "out" / "contoso-unit" / "latest.html"
    rows = {(r["requirement"], r["server"], r["outcome"]): r for r in report_rows(report)}
    bug = rows["GRP-01", "EX01", "error"]["html"]
    assert "KeyError: &#x27;missing&#x27;" in bug and "test_broken.py:6" in bug  # a bug keeps its traceback (log)
    assert "html" not in rows["BE-01", "EX01", "passed"]  # a passing row is the summary's data, no log
    # A test that broke outside any requirement is a row of pytest-html's table, named by its test ID, with its log.
    (broken,) = [tests for node, tests in report_data(report)["tests"].items() if "test_helper_outside" in node]
    assert "test_helper_outside_any_requirement" in broken[0]["resultsTableRow"][1]
    assert "AssertionError: broken helper" in broken[0]["log"]
