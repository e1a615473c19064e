"""reports/<org>/: latest.json (stable rows plus run metadata), JUnit XML, the fix plan, "since last run",
timestamped copies and pruning."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import CREDENTIALS, ORG, build_org, live_org, run_suite
from exchange_compliance.config import ConfigError, load_org_config
from exchange_compliance.facts import Unavailable
from exchange_compliance.plugin import fixplan, history, reports, results
from exchange_compliance.plugin.results import OUTCOMES, SCHEMA, Row

ROW_KEYS = {
    *("requirement", "title", "server", "outcome", "severity", "message", "fix", "source", "details"),
    *("failing_since", "failing_runs"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two nightly runs of one org: EWS-01 fixed in between, a new AUTH-02 failure, BE-02/BE-03 still failing."""
    workdir = tmp_path_factory.mktemp("nightly")
    first = run_suite(workdir, build_org(3, ("backend-cert:EX02", "ews-http:EX03")))
    time.sleep(1.1)  # runs are stamped to the second
    second = run_suite(workdir, build_org(3, ("backend-cert:EX02", "no-auth-cert:EX01")))
    return first, second


@pytest.fixture(scope="module")
def latest(runs) -> dict:
    return json.loads((runs[1].reports / "latest.json").read_text())


def test_results_document_has_run_metadata_and_stable_rows(runs, latest):
    assert runs[1].ret == 1, runs[1].stdout
    assert latest["schema"] == SCHEMA and latest["org"] == ORG and latest["organization"] == "Contoso"
    for key in ("started", "duration_seconds", "collected_at", "suite_version", "evidence", "fix_plan"):
        assert latest[key], key
    assert latest["servers"] == ["EX01", "EX02", "EX03", "EDGE1"] and latest["unreachable"] == []
    assert latest["fail_on"] == "high" and latest["gate"] is None
    assert latest["verdict"]["blocking"] == ["AUTH-02 on EX01", "BE-02 on EX02", "BE-03 on EX02"]
    assert all(set(row) == ROW_KEYS for row in latest["rows"])
    assert [row["outcome"] for row in latest["rows"]] == sorted(
        (row["outcome"] for row in latest["rows"]), key=OUTCOMES.index
    )  # failures first
    be02 = next(r for r in latest["rows"] if r["requirement"] == "BE-02" and r["server"] == "EX02")
    assert be02["outcome"] == "failed" and be02["severity"] == "critical" and "EX02" in be02["fix"]


def test_a_row_is_the_dict_latest_json_holds_in_its_order(latest):
    # Other tools read latest.json: the typed row converts to and from it, key for key and in the same order.
    order = ["requirement", "title", "server", "outcome", "severity", "message", "fix", "source", "details"]
    order += ["failing_since", "failing_runs"]
    for data in latest["rows"]:
        assert list(data) == order
        assert json.dumps(Row.from_dict(data).as_dict()) == json.dumps(data)


def test_timestamped_copies_beside_latest(runs, latest):
    folder = runs[1].reports
    stamp = latest["evidence"].removesuffix("-facts.json")
    for latest_name, stamped_name in (
        ("latest.json", f"{stamp}.json"),
        ("latest.html", f"{stamp}.html"),
        ("latest.xml", f"{stamp}.xml"),
        ("latest-facts.json", f"{stamp}-facts.json"),
    ):
        assert (folder / latest_name).read_bytes() == (folder / stamped_name).read_bytes(), latest_name
    assert latest["fix_plan"] == f"{stamp}-fixes.ps1"
    assert (folder / latest["fix_plan"]).read_bytes() == (folder / "latest-fixes.ps1").read_bytes()
    assert len(history.stamps(folder)) == 2


def test_since_last_run(latest):
    since = latest["since_last_run"]
    assert since["new_failures"] == ["AUTH-02 on EX01"]
    assert since["resolved"] == ["EWS-01 on EX03"]
    assert sorted(since["still_failing"]) == ["BE-02 on EX02", "BE-03 on EX02"]


def test_since_last_run_in_the_report_and_the_terminal(runs):
    html = (runs[1].reports / "latest.html").read_text()
    assert "1 new failures, 1 resolved, 2 still failing" in html
    assert "1 new failures, 1 resolved, 2 still failing" in runs[1].stdout
    assert "No earlier run of this org to compare with." in (runs[0].reports / f"{_stamp(runs[0])}.html").read_text()


def _stamp(run) -> str:
    return history.stamps(run.reports)[-1]


def test_junit_xml_carries_the_requirement_as_a_property(runs):
    tree = ElementTree.parse(runs[1].reports / "latest.xml")
    cases = tree.getroot().findall(".//testcase")
    assert cases
    properties = [{p.get("name"): p.get("value") for p in case.iter("property")} for case in cases]
    assert all(p.get("requirement") for p in properties)
    by_key = {(p["requirement"], p["server"]): (case, p) for case, p in zip(cases, properties, strict=True)}
    failing, found = by_key["BE-02", "EX02"]
    assert failing.find("failure") is not None and found["severity"] == "critical" and found["outcome"] == "failed"
    org_case, found = by_key["AUTH-01", ""]
    assert found["outcome"] == "passed" and org_case.find("failure") is None
    assert by_key["BE-01", "EDGE1"][0].find("skipped") is not None  # not applicable


def test_fix_plan_script_is_grouped_by_server_commented_and_guarded(runs, latest):
    raw = (runs[1].reports / latest["fix_plan"]).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # what Windows PowerShell reads as UTF-8
    lines = raw.decode("utf-8-sig").split("\r\n")
    code = [line for line in lines if line.strip() and not line.startswith("#")]
    assert code[0] == fixplan.GUARD  # running the file whole stops at once
    headers = [line for line in lines if line.startswith("# ==== ")]
    assert [h.split(":")[0] for h in headers] == ["# ==== EX01", "# ==== EX02"]
    fixes = [r["fix"] for r in latest["rows"] if r["outcome"] == "failed"]
    assert all(fix in raw.decode("utf-8-sig").replace("\r\n", "\n") for fix in fixes)
    fix_lines = {line for fix in fixes for line in fix.splitlines()}
    assert all(line in fix_lines for line in code[1:])  # every command is a fix: evidence is all comments


def test_fix_plan_in_the_report(runs):
    html = (runs[1].reports / "latest.html").read_text()
    assert "Fix plan: 3 fixes on 2 targets" in html and "<h4>EX02</h4>" in html


def test_fix_plan_comments_every_line_of_evidence():
    row = Row(
        requirement="GRP-01",
        title="t",
        server="EX01",
        outcome="failed",
        severity="high",
        message="line one\nRemove-Item C:\\ -Recurse",
        fix="Add-ADGroupMember x",
        source="s",
        details={},
    )
    text = fixplan.powershell([row], org="o", started="now", results_name="r.json", version="v")
    assert "#   Remove-Item C:\\ -Recurse" in text.splitlines()
    assert "Remove-Item C:\\ -Recurse" not in [line for line in text.splitlines() if not line.startswith("#")]
    empty = fixplan.powershell([], org="o", started="now", results_name="r.json", version="v")
    assert "# Nothing to fix" in empty and fixplan.GUARD in empty


# --- history --------------------------------------------------------------------------------------------------


def touch_run(folder: Path, stamp: str, org: str = ORG, status: str = "fail", rows: list | None = None) -> None:
    document = {"schema": SCHEMA, "org": org, "started": stamp, "verdict": {"status": status}, "rows": rows or []}
    (folder / f"{stamp}.json").write_text(json.dumps(document))
    for suffix in (".html", ".xml", "-facts.json", "-fixes.ps1"):
        (folder / f"{stamp}{suffix}").write_text("x")


def test_previous_run_is_the_newest_judged_run_of_the_same_org(tmp_path):
    touch_run(tmp_path, "20260101-000000")
    touch_run(tmp_path, "20260102-000000", org="other")
    touch_run(tmp_path, "20260103-000000", status="unreachable")
    (tmp_path / "20260104-000000.json").write_text("{cut short")
    touch_run(tmp_path, "20260105-000000")  # this run
    assert history.previous_run(tmp_path, ORG, "20260105-000000")["started"] == "20260101-000000"
    assert history.previous_run(tmp_path, ORG, "20260101-000000") is None
    assert history.previous_run(tmp_path / "missing", ORG, "20260101-000000") is None


def test_prune_keeps_the_newest_runs_and_the_current_one(tmp_path):
    for day in range(1, 6):
        touch_run(tmp_path, f"2026010{day}-000000")
    (tmp_path / "latest.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    removed = history.prune(tmp_path, 2, "20260105-000000")
    assert len(removed) == 3 * 5
    assert history.stamps(tmp_path) == ["20260105-000000", "20260104-000000"]
    assert (tmp_path / "latest.json").exists() and (tmp_path / "notes.txt").exists()


def test_keep_reports_option_prunes_old_runs(tmp_path):
    facts = build_org(1)
    for _ in range(3):
        run = run_suite(tmp_path, facts, "--keep-reports", "2")
        time.sleep(1.1)
    assert run.ret == 0
    assert len(history.stamps(run.reports)) == 2
    assert len(list(run.reports.glob("2*"))) == 2 * 5  # json, html, xml, facts, fixes


def test_org_config_reports_keep(tmp_path):
    assert load_org_config(live_org(tmp_path, "\n[reports]\nkeep = 5\n")).reports_keep == 5
    assert load_org_config(live_org(tmp_path)).reports_keep == 30
    with pytest.raises(ConfigError, match=r"\[reports\] keep: 0 is out of range 1..10000"):
        load_org_config(live_org(tmp_path, "\n[reports]\nkeep = 0\n"))
    with pytest.raises(ConfigError, match=r"\[reports\] kept: unknown key"):
        load_org_config(live_org(tmp_path, "\n[reports]\nkept = 5\n"))


def test_a_parallel_run_reports_the_same(tmp_path):
    facts = build_org(3, ("backend-cert:EX02", "unreachable:EX01"))
    waiver = tmp_path / "waivers.toml"
    waiver.write_text('[[waiver]]\nrequirement = "BE-02"\nserver = "EX02"\njustification = "j"\nexpires = 2099-01-01\n')
    args = ("--waivers", str(waiver), "--gate", "--target-version", "2016 CU6")
    (tmp_path / "serial").mkdir()
    (tmp_path / "parallel").mkdir()
    serial = run_suite(tmp_path / "serial", facts, *args)
    parallel = run_suite(tmp_path / "parallel", facts, *args, "-n", "2")
    assert serial.ret == parallel.ret == 1
    documents = [json.loads((run.reports / "latest.json").read_text()) for run in (serial, parallel)]
    for document in documents:  # each run started at its own time
        assert {row.pop("failing_since") for row in document["rows"]} == {None, document["started"]}
    assert documents[0]["rows"] == documents[1]["rows"]  # waivers and GATE-02 applied on the workers alike
    assert documents[0]["verdict"] == documents[1]["verdict"]
    assert documents[1]["waivers"][0]["status"] == "applied"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"[]", "not a results document of this suite"),
        (json.dumps({"schema": SCHEMA, "org": ORG, "verdict": "fail", "rows": []}).encode(), "not a results document"),
        (json.dumps({"schema": SCHEMA, "org": ORG, "verdict": {}, "rows": [{"x": 1}]}).encode(), "not a results"),
        (b'{"org": "\xff"}', "not UTF-8"),
        (b"{cut short", "not JSON"),
    ],
)
def test_a_previous_results_file_that_is_not_one_is_passed_over_and_named(tmp_path, content, why):
    touch_run(tmp_path, "20260101-000000")
    (tmp_path / "20260102-000000.json").write_bytes(content)
    notes: list[str] = []
    assert history.previous_run(tmp_path, ORG, "20260105-000000", notes)["started"] == "20260101-000000"
    assert len(notes) == 1 and notes[0].startswith(f"{tmp_path / '20260102-000000.json'}: {why}")


def test_a_run_after_a_foreign_results_file_still_judges_and_says_so(suite, tmp_path):
    folder = tmp_path / "reports" / ORG
    folder.mkdir(parents=True)
    (folder / "20000101-000000.json").write_text("[1, 2]")
    run = suite(build_org(1), "--reports-dir", str(tmp_path / "reports"))
    assert run.ret == 0, run.stdout + run.stderr
    assert f"exchange-compliance: {folder / '20000101-000000.json'}: not a results document" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


# --- a reports directory that cannot be written: one line naming the path, exit 4 ---------------------------------


def assert_one_line_error(run, path: Path) -> None:
    output = run.stdout + run.stderr
    assert run.ret == 4, output
    assert f"{path}: cannot write the run's reports: " in output
    assert "Traceback" not in output and "INTERNALERROR" not in output


def test_a_reports_directory_that_is_a_file_stops_the_run_before_collecting(suite, tmp_path):
    (tmp_path / "reports").write_text("not a directory")
    run = suite(build_org(1), "--reports-dir", str(tmp_path / "reports"))
    assert_one_line_error(run, tmp_path / "reports" / ORG)
    assert "ERROR: " in run.stderr and "passed" not in run.stdout  # a usage error: no test ran


def test_a_results_file_that_cannot_be_written_is_named_as_the_last_line(suite, tmp_path):
    (tmp_path / "reports" / ORG / "latest.json").mkdir(parents=True)  # in the way of the results
    run = suite(build_org(1), "--reports-dir", str(tmp_path / "reports"))
    assert_one_line_error(run, tmp_path / "reports" / ORG / "latest.json")
    assert run.stdout.strip().splitlines()[-1].startswith("exchange-compliance: ERROR: ")


def test_pruning_that_fails_is_named(tmp_path, monkeypatch):
    stale = tmp_path / "20000101-000000-facts.json"
    stale.write_text("an old run's evidence")
    (tmp_path / "20990101-000000.json").write_text("this run's results")

    def refuse(path: Path, missing_ok: bool = False) -> None:  # as root, nothing else stops an unlink
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(reports.ReportsError) as caught, reports.writing(tmp_path):
        history.prune(tmp_path, 1, "20990101-000000")
    assert str(caught.value) == f"{stale}: cannot write the run's reports: Permission denied"


def test_the_report_header_shows_the_org_display_name(suite, tmp_path):
    path = live_org(tmp_path, '\n[org]\ndisplay_name = "Contoso production"\n')
    run = suite(None, "--org", str(path), "--reports-dir", str(tmp_path / "reports"), env=CREDENTIALS)
    assert run.ret == 6, run.stdout + run.stderr  # the directory is refused: the header is written anyway
    html = (tmp_path / "reports" / "prod" / "latest.html").read_text()
    assert "<td>Org</td><td>Contoso production (prod)</td>" in html


def test_which_servers_are_unreachable_has_one_answer():
    facts = build_org(3, ("unreachable:EX03",))
    facts = replace(facts, handshakes={**facts.handshakes, "EX01": Unavailable("tls", "EX01", "timed out")})
    assert {name: [u.source for u in why] for name, why in facts.unreachable().items()} == {
        "EX01": ["tls"],
        "EX03": ["winrm", "tls"],
    }
    document = results.document(
        rows=[], org=facts, started=facts.collected_at, duration=0, suite_version="v", evidence=None
    )
    assert document["unreachable"] == ["EX01", "EX03"]
    assert facts.unreachable_text() == (
        "WinRM on EX03: connection refused on 5986; TLS (444) on EX01: timed out; "
        "TLS (444) on EX03: connection refused on 444"
    )
    assert facts.same_failure_everywhere() is None and facts.no_server_answered() is None


def test_one_failure_on_every_server_is_said_once_as_the_configs():
    reason = "the credentials were rejected (HTTP 401, ntlm): check [winrm] user_env and password_env"
    facts = build_org(999)
    names = facts.checked  # EX01..EX999 and EDGE1
    facts = replace(facts, probes={name: Unavailable("winrm", name, reason) for name in names})
    everywhere = f"WinRM on all 1000 servers (EX01, EX02, EX03 and 997 more): {reason}"
    assert facts.same_failure_everywhere() == everywhere
    assert facts.unreachable_text() == everywhere
    assert facts.no_server_answered() == (
        f"no checked Exchange server answered, all alike (check the org config): {everywhere}"
    )
    assert len(facts.no_server_answered()) < 300


def test_many_different_failures_keep_the_reason_short():
    facts = build_org(500)
    unreachable = {name: Unavailable("winrm", name, f"odd failure #{i}") for i, name in enumerate(facts.checked)}
    facts = replace(facts, probes=unreachable)
    said = facts.no_server_answered()
    assert said == (
        "no checked Exchange server answered: WinRM on EX01: odd failure #0; WinRM on EX02: odd failure #1; "
        "and 499 more reasons"
    )


def test_two_runs_within_one_second_write_files_of_their_own(tmp_path):
    from datetime import UTC, datetime

    from exchange_compliance.plugin.run import run_stamp

    started = datetime(2026, 11, 22, 2, 30, 0, 400000, tzinfo=UTC)
    assert run_stamp(started, tmp_path) == "20261122-023000"
    (tmp_path / "20261122-023000.json").write_text("{}")  # a run a moment ago, in the same second
    assert run_stamp(started, tmp_path) == "20261122-023001"
    (tmp_path / "20261122-023001-facts.json").write_text("{}")
    assert run_stamp(started, tmp_path) == "20261122-023002"
