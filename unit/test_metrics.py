"""latest.prom: the run for node_exporter's textfile collector, read back with Prometheus' reference parser."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import CREDENTIALS, ORG, build_org, judged_run, live_org, run_suite
from exchange_compliance.plugin import metrics, reports
from exchange_compliance.plugin.results import OUTCOMES, Row

P = "exchange_compliance_"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample by metric name, as Prometheus reads the file."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> tuple[dict, dict]:
    """A run with failures, an unreachable server and markup in a server name; latest.json and latest.prom."""
    import json

    workdir = tmp_path_factory.mktemp("metrics")
    run = run_suite(workdir, build_org(4, ("backend-cert:EX02", "unreachable:EX01", "ews-http:EX03"), rename=True))
    assert run.ret == 1, run.stdout + run.stderr
    return json.loads((run.reports / "latest.json").read_text()), samples((run.reports / "latest.prom").read_text())


def test_every_row_is_a_series_one_when_it_fails_or_could_not_be_checked(faulty):
    document, found = faulty
    series = {(s["requirement"], s["server"], s["severity"]): value for s, value in found[P + "requirement_failed"]}
    assert all(labels["org"] == ORG for labels, _value in found[P + "requirement_failed"])
    expected = {
        (r["requirement"], r["server"] or "", r["severity"]): int(r["outcome"] in ("failed", "error"))
        for r in document["rows"]
    }
    assert series == expected and len(series) == len(document["rows"])
    assert series["BE-02", "EX02", "critical"] == 1 and series["BE-02", "EX03", "critical"] == 0
    assert series["AUTH-02", "EX01", "critical"] == 1  # could not be checked: not known to be met
    assert series["AUTH-01", "", "critical"] == 0  # an org-wide requirement
    renamed = [server for _requirement, server, _severity in series if server.startswith("EX04")]
    assert renamed == ["EX04<img src=x onerror=document.title=1337>"] * len(renamed) and renamed


def test_rows_duration_timestamp_and_verdict(faulty):
    document, found = faulty
    rows = {labels["outcome"]: value for labels, value in found[P + "rows"]}
    assert set(rows) == set(OUTCOMES)  # every outcome, zeros too: an alert can count on the series being there
    assert rows == {o: sum(1 for r in document["rows"] if r["outcome"] == o) for o in OUTCOMES}
    ((labels, duration),) = found[P + "run_duration_seconds"]
    assert labels == {"org": ORG} and duration == pytest.approx(document["duration_seconds"], abs=0.01)
    ((labels, started),) = found[P + "last_run_timestamp_seconds"]
    from datetime import datetime

    assert started == datetime.fromisoformat(document["started"]).timestamp()
    assert found[P + "verdict_ok"] == [({"org": ORG}, 0.0)]


def test_a_passing_run_has_verdict_ok_1(tmp_path):
    run = run_suite(tmp_path, build_org(1))
    assert run.ret == 0, run.stdout
    found = samples((run.reports / "latest.prom").read_text())
    assert found[P + "verdict_ok"] == [({"org": ORG}, 1.0)]
    assert not any(value for _labels, value in found[P + "requirement_failed"])


def test_a_run_that_could_not_check_the_org_has_verdict_ok_0_and_no_row_series(suite, tmp_path):
    run = suite(None, "--org", str(live_org(tmp_path)), "--reports-dir", str(tmp_path / "reports"), env=CREDENTIALS)
    assert run.ret == 6, run.stdout + run.stderr
    found = samples((tmp_path / "reports" / "prod" / "latest.prom").read_text())
    assert found[P + "verdict_ok"] == [({"org": "prod"}, 0.0)]
    assert P + "requirement_failed" not in found
    assert {labels["outcome"]: value for labels, value in found[P + "rows"]} == dict.fromkeys(OUTCOMES, 0.0)
    assert P + "last_run_timestamp_seconds" in found and P + "run_duration_seconds" in found


@pytest.mark.parametrize(
    "name",
    ['EX"01', "EX\\01", "EX\n01", "EX\\n01", 'EX01"} 1\nexchange_compliance_verdict_ok{org="x"} 1 #', "É\u00a0\t"],
)
def test_label_values_from_ad_are_escaped_as_the_format_wants(name):
    row = Row("BE-02", "t", name, "failed", "critical", "m", "f", "s")
    text = metrics.text(judged_run([row], org='org "a"\\b'))  # type: ignore[arg-type]
    found = samples(text)
    assert found[P + "requirement_failed"] == [
        ({"org": 'org "a"\\b', "requirement": "BE-02", "server": name, "severity": "critical"}, 1.0)
    ]
    assert len(found[P + "verdict_ok"]) == 1  # nothing injected by the name


def test_series_are_unique_whatever_the_rows():
    # node_exporter refuses a whole file that repeats a series: the failing one stands for both.
    rows = [Row("BE-02", "t", "EX01", o, "critical", "m", "f", "s") for o in ("passed", "failed")]  # type: ignore[arg-type]
    assert samples(metrics.text(judged_run(rows)))[P + "requirement_failed"] == [
        ({"org": ORG, "requirement": "BE-02", "server": "EX01", "severity": "critical"}, 1.0)
    ]


# --- a partial run: -k, -m, --lf, node IDs judged part of the org's rows -----------------------------------------


def test_a_partial_run_writes_no_latest_prom_and_leaves_the_last_whole_runs(tmp_path):
    rows = [Row("BE-02", "t", "EX01", "passed", "critical", "m", "f", "s")]  # type: ignore[arg-type]
    whole = metrics.write(judged_run([Row("BE-02", "t", "EX02", "failed", "critical", "m", "f", "s")]), tmp_path)  # type: ignore[arg-type]
    assert whole == tmp_path / "latest.prom"
    before = whole.read_text()
    assert metrics.write(judged_run(rows, expected=43), tmp_path) is None  # 1 of 43 rows judged
    assert whole.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["latest.prom"]
    assert metrics.write(judged_run(rows, expected=1), tmp_path) == whole  # every row judged: written
    assert samples(whole.read_text())[P + "verdict_ok"] == [({"org": ORG}, 1.0)]


def test_a_partial_run_of_the_suite_leaves_latest_prom_as_the_last_whole_run_wrote_it(tmp_path):
    org = build_org(2, ("backend-cert:EX02",))
    whole = run_suite(tmp_path, org)
    assert whole.ret == 1, whole.stdout + whole.stderr
    before = (whole.reports / "latest.prom").read_bytes()
    partial = run_suite(tmp_path, org, "-k", "EX01")
    assert partial.ret == 0, partial.stdout + partial.stderr
    assert (partial.reports / "latest.prom").read_bytes() == before
    assert "latest.prom and notifications are left to runs of every requirement" in partial.stdout


# --- written whole: a scrape never sees half a file -------------------------------------------------------------


def test_publish_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "latest.prom"
    reports.publish(path, "old\n")
    with path.open() as reader:  # a scrape that opened the file before the run replaced it
        reports.publish(path, "new\n" * 1000)
        assert reader.read() == "old\n"  # renamed over, not rewritten in place
    assert path.read_text() == "new\n" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["latest.prom"]


def test_publish_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "latest.prom"
    reports.publish(path, b"old\n")

    written: list[Path] = []

    def refuse(source: Path, target: Path) -> None:
        written.append(Path(source))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        reports.publish(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["latest.prom"]
    # What was written before the rename is no *.prom: node_exporter, reading the directory, passes it by.
    (temporary,) = written
    assert temporary.parent == tmp_path and temporary.suffix != ".prom"


def test_the_file_is_as_readable_as_the_umask_lets_any_report_be(tmp_path):
    # node_exporter runs as another user: a 0600 file (mkstemp's) would be invisible to it.
    previous = os.umask(0o022)
    try:
        path = reports.publish(tmp_path / "latest.prom", "x\n")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_metrics_file_that_cannot_be_written_is_one_line_exit_4(suite, tmp_path):
    (tmp_path / "reports" / ORG / "latest.prom").mkdir(parents=True)  # in the way
    run = suite(build_org(1), "--reports-dir", str(tmp_path / "reports"))
    output = run.stdout + run.stderr
    assert run.ret == 4, output
    assert f"{tmp_path / 'reports' / ORG / 'latest.prom'}: cannot write the run's reports: " in output
    assert "Traceback" not in output and not list((tmp_path / "reports" / ORG).glob(".latest.prom.*"))


def test_the_readme_alert_rules_use_the_metrics_the_run_writes():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rules = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    expressions = re.findall(r"^\s+expr: (.+)$", rules, re.M)
    assert len(expressions) == 3
    named = {name for expression in expressions for name in re.findall(r"exchange_compliance_\w+", expression)}
    assert named and named <= {P + name for name in metrics.FAMILIES}
