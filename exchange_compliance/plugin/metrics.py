"""latest.prom: the run in Prometheus' text exposition format, for node_exporter's textfile collector.

    exchange_compliance_requirement_failed{org,requirement,server,severity}  1 failed or could not be checked
    exchange_compliance_rows{org,outcome}                                    rows of each outcome
    exchange_compliance_run_duration_seconds{org}
    exchange_compliance_last_run_timestamp_seconds{org}                      when the run started (Unix time)
    exchange_compliance_verdict_ok{org}                                      1 pass (or GO), 0 otherwise

Every series carries `org`, so that the files of several orgs can share one textfile directory. An org-wide
requirement has server="". A run that could not check the org (exit 6) has verdict_ok 0 and no per-requirement
series. A partial run (-k, -m, --lf, node IDs: part of the org's rows) writes no file: latest.prom stays the last
whole run's, which an alert would otherwise take a `-k EX01` run's few rows for. Label values come from AD (server
names): escaped as the format wants (backslash, double quote, line feed). The file is replaced whole
(reports.publish): a scrape never reads half of it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .reports import publish, writing
from .results import OUTCOMES
from .run_verdict import JudgedRun

NAME = "latest.prom"
PREFIX = "exchange_compliance_"
# name, help: the same in every org's file (node_exporter merges a family across files)
FAMILIES = {
    "requirement_failed": "1 when the requirement failed or could not be checked on the server (server is empty "
    "for an org-wide requirement), 0 when it passed, is waived or does not apply.",
    "rows": "Rows of the run's results by outcome.",
    "run_duration_seconds": "How long the run took.",
    "last_run_timestamp_seconds": "When the run started, in seconds since the Unix epoch.",
    "verdict_ok": "1 when nothing fails at or above the run's threshold (PASS, or GO in a CU gate run), else 0.",
}


def label(value: str) -> str:
    """A label value as the exposition format writes it, in double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _series(name: str, labels: dict[str, str], value: float) -> str:
    pairs = ",".join(f"{key}={label(text)}" for key, text in labels.items())
    number = str(int(value)) if float(value).is_integer() else repr(float(value))
    return f"{PREFIX}{name}{{{pairs}}} {number}"


def text(judged: JudgedRun) -> str:
    """The exposition text of the run."""
    org = {"org": judged.org_name}
    families: dict[str, list[str]] = {name: [] for name in FAMILIES}
    failed: dict[tuple[str, str, str], int] = {}
    for row in judged.rows:
        # A series must be unique in the file (node_exporter drops the whole file otherwise): should two rows
        # ever share their labels, the failing one wins.
        key = (row.requirement, row.server or "", row.severity)
        failed[key] = max(failed.get(key, 0), int(row.failing))
    for (requirement, server, severity), value in failed.items():
        labels = {**org, "requirement": requirement, "server": server, "severity": severity}
        families["requirement_failed"].append(_series("requirement_failed", labels, value))
    counts = Counter(row.outcome for row in judged.rows)
    for outcome in OUTCOMES:
        families["rows"].append(_series("rows", {**org, "outcome": outcome}, counts[outcome]))
    families["run_duration_seconds"].append(_series("run_duration_seconds", org, round(judged.duration, 3)))
    started = judged.started.timestamp()
    families["last_run_timestamp_seconds"].append(_series("last_run_timestamp_seconds", org, started))
    families["verdict_ok"].append(_series("verdict_ok", org, int(judged.verdict.status == "pass")))
    lines = []
    for name, series in families.items():
        if series:
            lines += [f"# HELP {PREFIX}{name} {FAMILIES[name]}", f"# TYPE {PREFIX}{name} gauge", *series]
    return "\n".join(lines) + "\n"


def write(judged: JudgedRun, report_dir: Path) -> Path | None:
    """reports/<org>/latest.prom, replaced whole; a ReportsError naming the file when it cannot be written. None,
    and the file left as it is, after a partial run."""
    if judged.verdict.partial:
        return None
    path = report_dir / NAME
    with writing(path):
        return publish(path, text(judged))
