"""The kept history, read once a run: since when each row has failed (failing_since, failing_runs in latest.json,
"failing for 12 runs, since 2026-11-03" in the report), and the trend chart of failed, unchecked and waived rows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from conftest import ORG, build_org, report_rows, run_suite
from exchange_compliance.plugin import history, summary
from exchange_compliance.plugin.results import SCHEMA, Row

BE02 = ("BE-02", "EX02")
EWS01 = ("EWS-01", "EX03")


def write_run(
    folder: Path, day: int, outcomes: dict[tuple[str, str], str], status: str = "fail", partial: bool | None = None
) -> str:
    """An earlier run's results file, started on 2026-11-<day> at 02:30 UTC; returns its `started`. `partial`:
    the verdict says whether the run judged only part of the org's rows (None: it does not say, as before)."""
    started = f"2026-11-{day:02d}T02:30:00+00:00"
    rows = [
        {"requirement": requirement, "server": server, "outcome": outcome, "severity": "critical"}
        for (requirement, server), outcome in outcomes.items()
    ]
    verdict: dict[str, object] = {"status": status}
    if partial is not None:
        verdict |= {"partial": partial, "judged": len(rows), "rows": 43}
    document = {"schema": SCHEMA, "org": ORG, "started": started, "verdict": verdict, "rows": rows}
    (folder / f"202611{day:02d}-023000.json").write_text(json.dumps(document))
    return started


def row(key: tuple[str, str], outcome: str) -> Row:
    return Row(key[0], "title", key[1], outcome, "critical", "m", "f", "s")  # type: ignore[arg-type]


NOW = "2026-11-30T02:30:00+00:00"
THIS_RUN = "20261130-023000"


def marked(folder: Path, key: tuple[str, str], outcome: str, keep: int = 30) -> Row:
    streaks = history.read(folder, ORG, THIS_RUN).streaks(keep)
    return history.mark(row(key, outcome), streaks, NOW)


def test_a_streak_counts_the_runs_in_a_row_and_starts_again_after_a_pass(tmp_path):
    write_run(tmp_path, 1, {BE02: "failed"})
    write_run(tmp_path, 2, {BE02: "passed"})
    third = write_run(tmp_path, 3, {BE02: "failed"})
    write_run(tmp_path, 4, {BE02: "error"})  # could not be checked: not known to be met, so still failing
    found = marked(tmp_path, BE02, "failed")
    assert (found.failing_since, found.failing_runs) == (third, 3)
    assert history.streak_text(found) == "failing for 3 runs, since 2026-11-03"


def test_a_not_applicable_outcome_ends_a_streak_too(tmp_path):
    write_run(tmp_path, 1, {BE02: "failed"})
    write_run(tmp_path, 2, {BE02: "not_applicable"})
    found = marked(tmp_path, BE02, "failed")
    assert (found.failing_since, found.failing_runs) == (NOW, 1)
    assert history.streak_text(found) == "failing for 1 run, since 2026-11-30"


def test_a_row_that_passes_now_has_no_streak(tmp_path):
    write_run(tmp_path, 1, {BE02: "failed"})
    for outcome in ("passed", "not_applicable"):
        found = marked(tmp_path, BE02, outcome)
        assert (found.failing_since, found.failing_runs) == (None, 0)
        assert history.streak_text(found) == ""


def test_a_waived_row_keeps_its_streak_and_carries_it(tmp_path):
    # A waiver acknowledges a failure and fixes nothing: when it expires, the row has failed all along.
    first = write_run(tmp_path, 1, {BE02: "failed"})
    write_run(tmp_path, 2, {BE02: "waived"})
    assert (marked(tmp_path, BE02, "failed").failing_since, marked(tmp_path, BE02, "failed").failing_runs) == (first, 3)
    waived = marked(tmp_path, BE02, "waived")
    assert (waived.failing_since, waived.failing_runs) == (first, 3)


def test_a_run_that_did_not_judge_the_row_neither_ends_nor_counts_in_its_streak(tmp_path):
    first = write_run(tmp_path, 1, {BE02: "failed", EWS01: "failed"})
    write_run(tmp_path, 2, {}, status="unreachable")  # the org could not be checked
    write_run(tmp_path, 3, {EWS01: "failed"})  # EX02 not checked (-k, or excluded for a night)
    found = marked(tmp_path, BE02, "failed")
    assert (found.failing_since, found.failing_runs) == (first, 2)
    assert marked(tmp_path, EWS01, "failed").failing_runs == 3


def test_only_the_kept_history_counts(tmp_path):
    for day in range(1, 6):
        write_run(tmp_path, day, {BE02: "failed"})
    assert marked(tmp_path, BE02, "failed").failing_runs == 6
    # keep 3: two earlier runs stay beside this one once the directory is pruned.
    found = marked(tmp_path, BE02, "failed", keep=3)
    assert (found.failing_since, found.failing_runs) == ("2026-11-04T02:30:00+00:00", 3)
    assert marked(tmp_path, BE02, "failed", keep=1).failing_runs == 1


def test_rows_are_matched_by_requirement_and_server_whatever_the_case(tmp_path):
    write_run(tmp_path, 1, {("BE-02", "ex02"): "failed", ("AUTH-01", None): "failed"})  # type: ignore[dict-item]
    assert marked(tmp_path, BE02, "failed").failing_runs == 2
    assert marked(tmp_path, ("AUTH-01", None), "failed").failing_runs == 2  # type: ignore[arg-type]


def test_a_broken_or_foreign_file_is_passed_over_with_a_line_and_the_rest_still_counts(tmp_path):
    first = write_run(tmp_path, 1, {BE02: "failed"})
    (tmp_path / "20261102-023000.json").write_text('{"schema": "exchange-compliance-results/1", "rows": [')
    (tmp_path / "20261103-023000.json").write_text(json.dumps({"schema": SCHEMA, "org": ORG, "verdict": {}}))
    write_run(tmp_path, 4, {BE02: "failed"})
    other = json.loads((tmp_path / "20261104-023000.json").read_text()) | {"org": "fabrikam"}
    (tmp_path / "20261105-023000.json").write_text(json.dumps(other))  # another org's: not this one's history
    notes: list[str] = []
    found = history.read(tmp_path, ORG, THIS_RUN, notes)
    assert [run.stamp for run in found.runs] == ["20261101-023000", "20261104-023000"]
    assert notes == [
        f"{tmp_path / '20261103-023000.json'}: not a results document of this suite: passed over for the history "
        "of this org",
        f"{tmp_path / '20261102-023000.json'}: not JSON (cut short?): passed over for the history of this org",
    ]
    assert history.mark(row(BE02, "failed"), found.streaks(30), NOW).failing_since == first


def test_the_previous_run_is_the_newest_judged_one_and_last_is_the_newest_of_any_verdict(tmp_path):
    write_run(tmp_path, 1, {BE02: "failed"})
    write_run(tmp_path, 2, {}, status="unreachable")
    found = history.read(tmp_path, ORG, THIS_RUN)
    assert found.previous is not None and found.previous["started"].startswith("2026-11-01")
    assert found.last is not None and found.last.status == "unreachable"
    assert history.read(tmp_path, ORG, "20261101-023000") == history.History((), None)


def test_the_history_holds_little(tmp_path):
    # 30 kept runs of a 1,000-server org are 300,000 outcomes: one copy of each key and outcome, not one a run;
    # and of the previous run's document, the failing rows (all that "since last run" compares).
    for day in (1, 2):
        write_run(tmp_path, day, {BE02: "failed", EWS01: "passed"})
    found = history.read(tmp_path, ORG, THIS_RUN)
    assert [(r["requirement"], r["outcome"]) for r in found.previous["rows"]] == [("BE-02", "failed")]  # type: ignore[index]
    first, second = found.runs
    assert first.outcomes == second.outcomes
    for (key_1, outcome_1), (key_2, outcome_2) in zip(first.outcomes.items(), second.outcomes.items(), strict=True):
        assert key_1 is key_2 and outcome_1 is outcome_2


def test_the_trend_has_the_kept_runs_and_this_one():
    runs = tuple(
        history.PastRun(f"2026110{day}-023000", f"2026-11-0{day}T02:30:00+00:00", status, outcomes)
        for day, status, outcomes in (
            (1, "fail", {("A", "x"): "failed", ("B", "x"): "error", ("C", "x"): "waived", ("D", "x"): "passed"}),
            (2, "unreachable", {}),
            (3, "pass", {("A", "x"): "passed"}),
        )
    )
    points = history.History(runs, None).trend(30, NOW, "fail", [row(BE02, "failed"), row(EWS01, "error")])
    assert [(p.started[:10], p.status, p.failed, p.unchecked, p.waived) for p in points] == [
        ("2026-11-01", "fail", 1, 1, 1),
        ("2026-11-02", "unreachable", 0, 0, 0),
        ("2026-11-03", "pass", 0, 0, 0),
        ("2026-11-30", "fail", 1, 1, 0),
    ]
    assert len(history.History(runs, None).trend(2, NOW, "fail", [])) == 2  # the newest kept run and this one


# --- partial runs: -k, -m, --lf, node IDs judged part of the org's rows ------------------------------------------


def test_a_partial_run_neither_counts_in_nor_ends_a_streak(tmp_path):
    first = write_run(tmp_path, 1, {BE02: "failed", EWS01: "failed"}, partial=False)
    write_run(tmp_path, 2, {BE02: "passed", EWS01: "failed"}, partial=True)  # an admin's -k run
    write_run(tmp_path, 3, {BE02: "failed", EWS01: "failed"})  # a run from before runs said whether partial
    assert (marked(tmp_path, BE02, "failed").failing_since, marked(tmp_path, BE02, "failed").failing_runs) == (
        first,
        3,
    )
    assert marked(tmp_path, EWS01, "failed").failing_runs == 3  # not 4: the -k run does not count either


def test_since_last_run_and_notifications_previous_run_are_the_newest_whole_run(tmp_path):
    first = write_run(tmp_path, 1, {BE02: "failed", EWS01: "failed"})
    write_run(tmp_path, 2, {EWS01: "passed"}, partial=True)  # -k EX03: BE-02 on EX02 not judged, EWS-01 passed
    found = history.read(tmp_path, ORG, THIS_RUN)
    assert found.previous is not None and found.previous["started"] == first
    assert found.last is not None and (found.last.started, found.last.partial) == (first, False)
    assert [run.partial for run in found.runs] == [False, True]  # read, and passed over
    changes = history.compare(found.previous, [row(BE02, "failed"), row(EWS01, "failed")])
    assert [r.where for r in changes.still_failing] == ["BE-02 on EX02", "EWS-01 on EX03"]
    assert changes.new_failures == [] and changes.resolved == []
    # An org with only partial runs so far has no earlier run to compare with: its first whole run is news.
    only_partial = tmp_path / "only-partial"
    only_partial.mkdir()
    write_run(only_partial, 1, {BE02: "failed"}, partial=True)
    assert history.read(only_partial, ORG, THIS_RUN).previous is None
    assert history.read(only_partial, ORG, THIS_RUN).last is None


def test_the_trend_passes_partial_runs_over_and_they_take_no_whole_runs_place_in_what_is_kept():
    runs = tuple(
        history.PastRun(f"2026110{day}-023000", f"2026-11-0{day}T02:30:00+00:00", "fail", {("A", "x"): "failed"}, part)
        for day, part in ((1, False), (2, False), (3, True), (4, True))
    )
    found = history.History(runs, None)
    assert [p.started[:10] for p in found.trend(30, NOW, "pass", [])] == ["2026-11-01", "2026-11-02", "2026-11-30"]
    # keep 3: the newest two whole runs stay beside this one (prune keeps the partial runs apart).
    assert [p.started[:10] for p in found.trend(3, NOW, "pass", [])] == ["2026-11-01", "2026-11-02", "2026-11-30"]
    assert [p.started[:10] for p in found.trend(2, NOW, "pass", [])] == ["2026-11-02", "2026-11-30"]
    assert found.partial_stamps == {"20261103-023000", "20261104-023000"}


def test_partial_runs_are_pruned_apart_from_the_whole_runs(tmp_path):
    # An afternoon of -k runs must not prune the nightly history away: the newest `keep` of each stay.
    whole = [f"202611{day:02d}-023000" for day in (1, 2, 3)]
    partial = [f"202611{day:02d}-150000" for day in (3, 4, 5, 6)]
    for stamp in whole + partial:
        for suffix in (".json", ".html"):
            (tmp_path / f"{stamp}{suffix}").write_text("{}")
    history.prune(tmp_path, 2, "20261107-023000", partial)
    assert history.stamps(tmp_path) == ["20261106-150000", "20261105-150000", "20261103-023000", "20261102-023000"]
    # A partial current run always stays, and the whole runs keep their places.
    history.prune(tmp_path, 1, "20261106-150000", partial)
    assert history.stamps(tmp_path) == ["20261106-150000", "20261103-023000"]


@pytest.fixture(scope="module")
def with_a_partial_run(tmp_path_factory):
    """A whole run, a `-k EX01` run and a whole run, keeping 2 runs: BE-02/BE-03 on EX02 and EWS-01 on EX03 fail in
    both whole runs; the -k run judges EX01's rows only (all pass)."""
    workdir = tmp_path_factory.mktemp("partial-history")
    org = build_org(3, ("backend-cert:EX02", "ews-http:EX03"))
    runs = []
    for args in ((), ("-k", "EX01"), ()):
        runs.append(run_suite(workdir, org, "--keep-reports", "2", *args))
        assert runs[-1].ret == (0 if args else 1), runs[-1].stdout + runs[-1].stderr
        if not args:
            prom = (runs[-1].reports / "latest.prom").read_text()
        else:
            assert (runs[-1].reports / "latest.prom").read_text() == prom  # the first run's, untouched
        time.sleep(1.05)  # runs are stamped to the second
    stamps = sorted(history.stamps(runs[-1].reports))
    assert len(stamps) == 3  # two whole runs, and the partial one apart
    documents = [json.loads((runs[-1].reports / f"{stamp}.json").read_text()) for stamp in stamps]
    return runs, documents


def test_a_partial_run_says_so_in_its_results(with_a_partial_run):
    _runs, (first, partial, third) = with_a_partial_run
    assert partial["verdict"]["partial"] is True
    assert partial["verdict"]["judged"] == len(partial["rows"]) < partial["verdict"]["rows"] == len(first["rows"])
    assert {r["server"] for r in partial["rows"]} <= {"EX01", None}
    assert first["verdict"]["partial"] is third["verdict"]["partial"] is False
    assert first["verdict"]["judged"] == first["verdict"]["rows"] == len(first["rows"])


def test_the_next_whole_run_passes_the_partial_run_over(with_a_partial_run):
    runs, (first, _partial, third) = with_a_partial_run
    rows = rows_by_key(third)
    for key in (("BE-02", "EX02"), ("BE-03", "EX02"), ("EWS-01", "EX03")):
        assert (rows[key]["failing_since"], rows[key]["failing_runs"]) == (first["started"], 2), key
    since = third["since_last_run"]
    assert since["previous_started"] == first["started"]
    assert since["new_failures"] == since["resolved"] == [] and len(since["still_failing"]) == 3
    svg = chart_of((runs[-1].reports / "latest.html").read_text())
    assert len(svg.findall(f"{SVG}g")) == 2  # the first run and this one


def test_a_partial_run_says_in_one_line_what_it_leaves_alone(with_a_partial_run):
    runs, _documents = with_a_partial_run
    line = (
        "partial:  a partial run: latest.prom and notifications are left to runs of every requirement; "
        "the history passes it over"
    )
    assert [text for text in runs[1].stdout.splitlines() if text.startswith("partial:")] == [line]
    assert not any(text.startswith("partial:") for text in runs[0].stdout.splitlines() + runs[2].stdout.splitlines())


# --- the chart ------------------------------------------------------------------------------------------------


def point(day: int, failed: int, unchecked: int = 0, waived: int = 0, status: str = "fail") -> history.TrendPoint:
    return history.TrendPoint(f"2026-11-{day:02d}T02:30:00+00:00", status, failed, unchecked, waived)


SVG = "{http://www.w3.org/2000/svg}"


def chart(points: list[history.TrendPoint]) -> ElementTree.Element:
    html = summary.trend(points)
    svg = re.search(r"<svg .*</svg>", html, re.S)
    assert svg is not None
    return ElementTree.fromstring(svg.group(0))  # well-formed XML: what a browser parses inline as SVG


def test_the_trend_chart_stacks_failed_unchecked_and_waived_rows_a_run():
    svg = chart([point(1, 3, 1, 2), point(2, 0, status="unreachable"), point(3, 0), point(4, 6)])
    runs = svg.findall(f"{SVG}g")
    assert [g.findtext(f"{SVG}title") for g in runs] == [
        "2026-11-01 02:30:00 UTC: 3 failed, 1 could not be checked, 2 waived",
        "2026-11-02 02:30:00 UTC: the org could not be checked",
        "2026-11-03 02:30:00 UTC: 0 failed, 0 could not be checked, 0 waived",
        "2026-11-04 02:30:00 UTC: 6 failed, 0 could not be checked, 0 waived",
    ]
    fills = [[r.get("fill") for r in g.findall(f"{SVG}rect") if r.get("fill-opacity") != "0"] for g in runs]
    assert fills == [["#c62828", "#ef6c00", "#8e24aa"], ["#e0e0e0"], [], ["#c62828"]]
    heights = [
        sum(float(r.get("height", 0)) for r in g.findall(f"{SVG}rect") if r.get("fill-opacity") != "0") for g in runs
    ]
    assert heights[0] == heights[3] > 0 and heights[2] == 0  # 3 + 1 + 2 = 6 stands as high as 6
    labels = [t.text for t in svg.findall(f"{SVG}text")]
    assert labels == ["0", "5", "10", "2026-11-01", "2026-11-04 (this run)"]  # the axis tops at 10


def test_the_trend_chart_of_a_first_run_and_of_a_clean_history():
    svg = chart([point(1, 0)])
    assert [t.text for t in svg.findall(f"{SVG}text")] == ["0", "1", "2026-11-01 (this run)"]
    assert summary.trend([]) == ""


# --- two nightly runs and a third, as an admin sees them --------------------------------------------------------


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    """Three runs: BE-02/BE-03 on EX02 fail in all three; EWS-01 on EX03 fails, is fixed, fails again."""
    workdir = tmp_path_factory.mktemp("nightly-history")
    runs = []
    for faults in (
        ("backend-cert:EX02", "ews-http:EX03"),
        ("backend-cert:EX02",),
        ("backend-cert:EX02", "ews-http:EX03"),
    ):
        runs.append(run_suite(workdir, build_org(3, faults)))
        assert runs[-1].ret == 1, runs[-1].stdout + runs[-1].stderr
        time.sleep(1.05)  # runs are stamped to the second
    stamps = sorted(history.stamps(runs[-1].reports))
    documents = [json.loads((runs[-1].reports / f"{stamp}.json").read_text()) for stamp in stamps]
    return runs[-1].reports, documents


def rows_by_key(document: dict) -> dict[tuple[str, str | None], dict]:
    return {(r["requirement"], r["server"]): r for r in document["rows"]}


def test_latest_json_says_since_when_each_row_has_failed(nightly):
    _folder, (first, second, third) = nightly
    rows = rows_by_key(third)
    assert (rows["BE-02", "EX02"]["failing_since"], rows["BE-02", "EX02"]["failing_runs"]) == (first["started"], 3)
    assert (rows["BE-03", "EX02"]["failing_since"], rows["BE-03", "EX02"]["failing_runs"]) == (first["started"], 3)
    # Fixed in the second run, failing again in the third: it starts again.
    assert (rows["EWS-01", "EX03"]["failing_since"], rows["EWS-01", "EX03"]["failing_runs"]) == (third["started"], 1)
    assert (rows["ACL-01", "EX01"]["failing_since"], rows["ACL-01", "EX01"]["failing_runs"]) == (None, 0)
    assert rows_by_key(second)["BE-02", "EX02"]["failing_runs"] == 2
    assert rows_by_key(first)["EWS-01", "EX03"]["failing_runs"] == 1


def test_the_report_says_since_when_and_shows_the_trend(nightly):
    folder, (first, _second, _third) = nightly
    rows = {(r["requirement"], r["server"], r["outcome"]): r for r in report_rows(folder / "latest.html")}
    be02 = rows["BE-02", "EX02", "failed"]["html"]
    streak = f'<p class="excomp-streak"><b>Failing for 3 runs, since {first["started"][:10]}</b></p>'
    assert f'<div class="excomp-row excomp-failed">\n{streak}\n<p><b>Evidence</b>' in be02
    assert be02.count("<b>Evidence</b>") == 1
    passing = [r for r in rows.values() if r["outcome"] == "passed"]
    assert passing and all(r["extra"] is None for r in passing)  # the short form: no streak
    html = (folder / "latest.html").read_text()
    assert f"(critical, failed), failing for 3 runs, since {first['started'][:10]}" in html  # still failing
    svg = chart_of(html)
    assert [g.findtext(f"{SVG}title").split(": ")[1] for g in svg.findall(f"{SVG}g")] == [  # type: ignore[union-attr]
        "3 failed, 0 could not be checked, 0 waived",
        "2 failed, 0 could not be checked, 0 waived",
        "3 failed, 0 could not be checked, 0 waived",
    ]


def chart_of(html: str) -> ElementTree.Element:
    found = re.search(r'<svg xmlns="http://www.w3.org/2000/svg" id="trend-chart".*?</svg>', html, re.S)
    assert found is not None, "no trend chart in the report"
    return ElementTree.fromstring(found.group(0))


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (scripts/setup installs it)")
def test_a_browser_draws_the_trend_chart(nightly, tmp_path):
    folder, _documents = nightly
    # The report as it is, plus a script that asks the browser what it made of the chart: SVG elements (not
    # unknown HTML ones) with a size on the page.
    probe = (
        "<script>addEventListener('load', () => { const svg = document.getElementById('trend-chart');"
        "const bars = [...svg.querySelectorAll('g.trend-run rect')].filter(r => r instanceof SVGRectElement"
        " && r.getBoundingClientRect().height > 0 && r.getAttribute('fill-opacity') !== '0');"
        "const box = svg.getBoundingClientRect();"
        "document.body.setAttribute('data-trend', [svg instanceof SVGSVGElement, box.width, box.height,"
        " bars.length].join(' ')); });</script>"
    )
    page = tmp_path / "report.html"
    page.write_text((folder / "latest.html").read_text().replace("</body>", probe + "</body>"))
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
              "--disable-background-networking", "--disable-component-update"]  # fmt: skip
    dom = subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'p1'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    found = re.search(r'data-trend="([^"]*)"', dom)
    assert found is not None, "the chart was not found on the page"
    is_svg, width, height, bars = found.group(1).split()
    assert is_svg == "true" and float(width) == summary.TREND_WIDTH and float(height) == summary.TREND_HEIGHT
    assert int(bars) == 3  # three runs, failures only
    shot = tmp_path / "trend.png"
    subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'p2'}", "--window-size=1280,1400", f"--screenshot={shot}",
         (folder / "latest.html").as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nscreenshot of the report with its trend chart: {shot}")
