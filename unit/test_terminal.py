"""What a run prints: each failure as the report shows it (no Python), each reason a row could not be checked once
for all its servers, a verdict line under 300 characters whatever the org's size, names with control characters
spelled out; and pytest's habits (--lf, --ff, -k, --co, --gate on a partial selection)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from conftest import ORG, TESTS_ENV, build_org
from exchange_compliance import snapshot
from exchange_compliance.catalog import catalog
from exchange_compliance.facts import Unavailable
from exchange_compliance.plugin import terminal
from exchange_compliance.plugin.results import Row
from exchange_compliance.plugin.run_verdict import fit, judge_rows
from exchange_compliance.text import printable

# The faults of the source articles, each on its own server, as the lab's seeds scenario plants them.
SEEDS_LIKE = ("nested-admins:EX02", "no-auth-cert:EX03", "backend-cert:EX04", "ews-http:EX05")
PYTHON = (
    "where False",
    "def test_",
    "Directory(",
    "Verdict(",
    "AssertionError",
    "assert verdict.met",
    "FAILED tests_env",
)
REJECTED = "the credentials were rejected (HTTP 401, ntlm): check [winrm] user_env and password_env"


def last_line(run) -> str:
    return run.stdout.strip().splitlines()[-1]


def failing_rows(run) -> list[dict]:
    rows = json.loads((run.reports / "latest.json").read_text())["rows"]
    return [row for row in rows if row["outcome"] == "failed"]


def headline(row: dict) -> str:
    return terminal.headline(row["requirement"], row["server"], row["severity"], row["title"])


# --- failures in the report's words -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds_like(tmp_path_factory):
    from conftest import run_suite

    return run_suite(tmp_path_factory.mktemp("seeds-like"), build_org(5, SEEDS_LIKE))


def test_a_failure_prints_what_the_report_shows_and_nothing_of_python(seeds_like):
    run = seeds_like
    assert run.ret == 1, run.stdout + run.stderr
    for python in PYTHON:
        assert python not in run.stdout, python
    failing = failing_rows(run)
    assert {(r["requirement"], r["server"]) for r in failing} >= {("ACL-01", "EX02"), ("AUTH-02", "EX03")}
    for row in failing:
        assert f"_ {headline(row)} _" in run.stdout  # ID, server, severity and title head it, where pytest's name was
        evidence = printable(row["message"].splitlines()[0])
        fix = printable(row["fix"].splitlines()[0])
        assert f"\nEvidence: {evidence}\n" in run.stdout, row
        assert f"\nFix:      {fix}\n" in run.stdout, row


def test_evidence_and_fix_are_cut_to_a_few_lines_that_point_at_the_whole(seeds_like):
    acl01 = next(r for r in failing_rows(seeds_like) if r["requirement"] == "ACL-01")
    assert len(acl01["fix"].splitlines()) > terminal.FIX_LINES
    block = seeds_like.stdout.split(f"_ {headline(acl01)} _\n")[1].split("\n_")[0].split("\n-")[0].splitlines()
    assert len(block) <= terminal.EVIDENCE_LINES + terminal.FIX_LINES
    assert block[-1].endswith("more lines: the fix plan has them")


def test_in_parallel_a_failure_is_not_headed_by_the_workers_python(suite):
    run = suite(build_org(2, ("backend-cert:EX02",)), "-n", "2")
    assert run.ret == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("_ BE-0")]
    assert len(heads) == 2 and all(lines[i + 1].startswith("Evidence: ") for i in heads)


def test_pytests_short_summary_is_off_unless_asked_for(suite):
    facts = build_org(2, ("backend-cert:EX02",))
    assert "short test summary info" not in suite(facts).stdout
    asked = suite(facts, "-rf").stdout
    assert "short test summary info" in asked and "test_backend_site.py::test_certificate_bound_to_444" in asked


def test_a_broken_check_still_shows_its_traceback(pytester):
    target = pytester.path / "tests_env"
    shutil.copytree(TESTS_ENV, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "test_broken.py").write_text(
        "from exchange_compliance.plugin import requirement\n\n\n"
        '@requirement("GRP-01")\ndef test_a_bug(directory, server):\n    return {}["missing"]\n'
    )
    facts = snapshot.write(build_org(1), pytester.path / "facts.json")
    args = ("-p", "exchange_compliance.plugin", str(target), "--org-snapshot", str(facts), "--reports-dir", "out")
    run = pytester.runpytest_subprocess(*args)
    assert run.ret == 1
    assert "def test_a_bug(directory, server):" in run.stdout.str() and "KeyError: 'missing'" in run.stdout.str()
    quiet = pytester.runpytest_subprocess(*args, "--tb=line")
    assert "KeyError" in quiet.stdout.str() and "def test_a_bug" not in quiet.stdout.str()  # --tb still rules


# --- one reason, said once ----------------------------------------------------------------------------------------


def rejected_everywhere(n: int, answering: int = 0, org: str = ORG):
    """n servers (EX01.. and EDGE1), WinRM refusing the credentials on all but the first `answering`."""
    facts = build_org(n - 1, org=org)
    refused = {name: Unavailable("winrm", name, REJECTED) for name in facts.checked[answering:]}
    return replace(facts, probes={**facts.probes, **refused})


def test_credentials_rejected_by_200_servers_are_one_reason_and_the_configs(tmp_path):
    from conftest import run_suite

    run = run_suite(tmp_path, rejected_everywhere(200))
    assert run.ret == 6, run.stdout + run.stderr
    said = [line for line in run.stdout.splitlines() if REJECTED in line]
    assert len(said) == 2, said  # the NOT CHECKED section and the verdict line
    section, verdict = said
    assert section == (
        f"995 rows not checked (AUTH-02, BE-01, BE-02, BE-03, GATE-01): WinRM on all 200 servers "
        f"(EX01, EX02, EX03 and 197 more): {REJECTED} (every server: check the org config first)"
    )
    assert verdict.startswith("exchange-compliance: contoso-unit: NOT CHECKED: the org could not be checked: ")
    assert "all alike (check the org config): WinRM on all 200 servers (EX01, EX02, EX03 and 197 more)" in verdict
    assert len(verdict) < 300
    assert "_ AUTH-02 on EX01" not in run.stdout  # not one FAILURES entry per row
    assert "997 not checked" in run.stdout.splitlines()[-2]  # pytest's counts (AUTH-03, AUTH-04 too), in our words


def test_the_verdict_line_stays_under_300_characters_with_a_long_org_name(tmp_path):
    from conftest import run_suite

    run = run_suite(tmp_path, rejected_everywhere(200, org="contoso-europe-west-production-exchange-2019"))
    assert run.ret == 6
    assert len(last_line(run)) < 300 and "WinRM on all 200 servers" in last_line(run)


def test_a_reason_most_servers_give_is_grouped_in_the_verdict(tmp_path):
    from conftest import run_suite

    run = run_suite(tmp_path, rejected_everywhere(200, answering=50))
    assert run.ret == 1, run.stdout + run.stderr
    verdict = last_line(run)
    assert len(verdict) < 300
    assert "745 not checked, WinRM on 150 of 200 servers (EX51, EX52, EX53 and 147 more): the credentials" in verdict


def rows_of_a_large_org(servers: int) -> list[Row]:
    names = [f"EX{i:04d}" for i in range(1, servers + 1)]
    unavailable = {"unavailable": {"label": "WinRM", "reason": REJECTED}}
    rows = []
    for requirement in catalog().values():
        for name in names if requirement.scope == "server" else [None]:
            outcome = "error" if requirement.id in ("AUTH-02", "BE-01") else "failed"
            details = unavailable if outcome == "error" else {}
            rows.append(
                Row(requirement.id, requirement.title, name, outcome, requirement.severity, "m", "", "", details)
            )  # type: ignore[arg-type]
    return rows


def test_the_verdict_line_stays_under_300_characters_at_1000_servers():
    verdict = judge_rows(rows_of_a_large_org(1000), "low", False, [], None, expected=None, servers=1000)
    line = fit(f"contoso-unit: {verdict.line()}")  # as the run makes it
    assert len(line) < 300, line
    assert line.startswith("contoso-unit: FAIL: 11003 blocking at or above low: every server the same way, check the")
    assert "2000 not checked, WinRM on all 1000 servers (EX0001, EX0002, EX0003 and 997 more)" in line


def test_not_checked_lines_put_the_configs_reason_first():
    rows = rows_of_a_large_org(3)
    odd = Row("AUTH-03", "t", None, "error", "critical", "could not be checked: no probed server has it", "", "")
    lines = terminal.not_checked_lines([*rows, odd], 3)
    assert lines == [
        f"6 rows not checked (AUTH-02, BE-01): WinRM on all 3 servers (EX0001, EX0002, EX0003): {REJECTED} "
        "(every server: check the org config first)",
        "1 row not checked (AUTH-03): org-wide: no probed server has it",
    ]


# --- names are data ---------------------------------------------------------------------------------------------

# What a name from AD or a server could carry to drive a terminal or a CI log: an OSC title change ended by BEL, a
# CR that rewrites the line, a line break, the C1 controls NEL and CSI, DEL, a bidi override.
HOSTILE = "\x1b]0;owned\x07\r\nexchange-compliance: PASS\x85\x9b31m\x7f\u202e"


def test_control_characters_in_names_are_spelled_out_in_everything_printed(suite):
    faults = ("backend-cert:EX03", "nested-admins:EX03", "unreachable:EX01")
    facts = build_org(3, faults, rename=f"EX03{HOSTILE}", group=HOSTILE)
    run = suite(facts, "-v", "--fail-on", "low")
    assert run.ret == 1, run.stdout + run.stderr
    raw = [char for char in run.stdout if not char.isprintable() and char != "\n"]
    assert raw == []
    spelled = printable(HOSTILE)
    assert f"_ BE-02 on EX03{spelled} (critical): " in run.stdout  # the failure's headline
    assert spelled in last_line(run)  # the verdict line names the server
    assert not any(line.startswith("exchange-compliance: PASS") for line in run.stdout.splitlines())


def test_progress_lines_are_spelled_out_too():
    written: list[str] = []

    class Reporter:
        def write_line(self, line: str, **_markup: bool) -> None:
            written.append(line)

    class Plugins:
        def get_plugin(self, _name: str) -> Reporter:
            return Reporter()

    class Config:
        pluginmanager = Plugins()

    terminal.say(Config(), f"directory: org {HOSTILE}")  # type: ignore[arg-type]
    terminal.last_line(Config(), f"org: FAIL: ACL-01 on {HOSTILE}")  # type: ignore[arg-type]
    assert all(line.isprintable() for line in written) and len(written) == 2


# --- pytest's habits ------------------------------------------------------------------------------------------------


def test_last_failed_judges_the_failing_rows_again_and_says_the_run_is_partial(suite):
    facts = build_org(3, ("backend-cert:EX02", "ews-http:EX03", "unreachable:EX01"))
    first = suite(facts)
    failing = {(r["requirement"], r["server"]) for r in failing_rows(first)}
    unchecked = {
        (r["requirement"], r["server"])
        for r in json.loads((first.reports / "latest.json").read_text())["rows"]
        if r["outcome"] == "error"
    }
    total = len(json.loads((first.reports / "latest.json").read_text())["rows"])
    again = suite(facts, "--lf")
    rows = json.loads((again.reports / "latest.json").read_text())["rows"]
    assert {(r["requirement"], r["server"]) for r in rows} == failing | unchecked
    assert f"PARTIAL: {len(failing | unchecked)} of {total} rows judged: FAIL: " in last_line(again)
    first_failed = suite(facts, "--ff")
    assert "PARTIAL" not in last_line(first_failed)
    assert len(json.loads((first_failed.reports / "latest.json").read_text())["rows"]) == total


def test_a_keyword_selection_does_not_speak_for_the_org(suite):
    run = suite(build_org(3, ("backend-cert:EX02",)), "-k", "EX01")
    assert run.ret == 0
    assert last_line(run).startswith("exchange-compliance: contoso-unit: PARTIAL: 10 of 43 rows judged: PASS: ")


def test_a_partial_gate_run_is_never_go(suite):
    facts = build_org(3)
    assert suite(facts, "--gate", "--target-version", "15.1.2507.6").ret == 0
    run = suite(facts, "--gate", "--target-version", "15.1.2507.6", "-k", "EX01")
    assert run.ret == 1
    assert last_line(run) == (
        "exchange-compliance: contoso-unit: NO-GO Exchange 2016 CU23 (15.1.2507.6): PARTIAL: only 11 of 47 rows "
        "judged: a CU gate judges every row (run it without -k, -m, --lf, -x or node IDs)"
    )


def test_collect_only_lists_the_rows_and_judges_nothing_writes_nothing(suite):
    run = suite(build_org(3, ("backend-cert:EX02",)), "--co", "-q")
    assert run.ret == 0, run.stdout + run.stderr
    assert "test_certificate_bound_to_444_is_valid_and_names_the_server[EX02]" in run.stdout
    assert "exchange-compliance: contoso-unit:" not in run.stdout and "PASS" not in run.stdout
    assert not run.reports.exists()  # reports/<org>/: no report, no evidence file
