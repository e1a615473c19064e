"""Earlier runs of the same org: "since last run" and pruning old outputs.

Each run writes timestamped copies (<stamp>.json, .html, .xml, -facts.json, -fixes.ps1) beside latest.*; the
previous run is the newest timestamped JSON of the same org that got as far as judging (a run that could not
reach the org has no rows to compare with).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .results import SCHEMA, Row

STAMPED = re.compile(r"(\d{8}-\d{6})(?:\.json|\.html|\.xml|-facts\.json|-fixes\.ps1)")


def stamps(report_dir: Path) -> list[str]:
    """The run stamps with files in the directory, newest first."""
    if not report_dir.is_dir():
        return []
    found = {m.group(1) for p in report_dir.iterdir() if (m := STAMPED.fullmatch(p.name))}
    return sorted(found, reverse=True)


def previous_run(report_dir: Path, org: str, before: str, passed_over: list[str] | None = None) -> dict | None:
    """The newest judged run of `org` older than the stamp `before`, or None.

    A results file that cannot be compared with (cut short, not UTF-8, not a results document: a hand edit,
    another tool's JSON) is passed over, not a traceback: a nightly run must not stop on yesterday's file.
    `passed_over` gets a line naming each, for the run to say.
    """
    for stamp in stamps(report_dir):
        path = report_dir / f"{stamp}.json"
        if stamp >= before or not path.exists():  # an html or facts file without its json
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            _note(passed_over, path, f"cannot read: {exc.strerror}")
            continue
        except UnicodeDecodeError:
            _note(passed_over, path, "not UTF-8")
            continue
        except json.JSONDecodeError:
            _note(passed_over, path, "not JSON (cut short?)")
            continue
        if not _results_document(document):
            _note(passed_over, path, "not a results document of this suite")
        elif document["org"] == org and document["verdict"]["status"] != "unreachable":
            return document
    return None


def _note(passed_over: list[str] | None, path: Path, why: str) -> None:
    if passed_over is not None:
        passed_over.append(f"{path}: {why}: passed over for 'since last run'")


def _results_document(document: object) -> bool:
    """A results document in the shape compare() and the report read."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA or not isinstance(document.get("org"), str):
        return False
    verdict, rows = document.get("verdict"), document.get("rows")
    return isinstance(verdict, dict) and isinstance(rows, list) and all(_row(r) for r in rows)


def _row(row: object) -> bool:
    if not isinstance(row, dict) or not isinstance(row.get("server"), str | None):
        return False
    return all(isinstance(row.get(name), str) for name in ("requirement", "outcome", "severity"))


@dataclass(frozen=True)
class Changes:
    previous_started: str
    new_failures: list[Row]
    resolved: list[Row]
    still_failing: list[Row]
    # failing last time, neither failing nor passing now: waived since, or no longer checked
    set_aside: list[Row]

    def counts(self) -> str:
        return (
            f"{len(self.new_failures)} new failures, {len(self.resolved)} resolved, "
            f"{len(self.still_failing)} still failing"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "previous_started": self.previous_started,
            **{
                name: [r.where for r in rows]
                for name, rows in (
                    ("new_failures", self.new_failures),
                    ("resolved", self.resolved),
                    ("still_failing", self.still_failing),
                    ("set_aside", self.set_aside),
                )
            },
        }


def compare(previous: dict, rows: list[Row]) -> Changes:
    """This run's rows against the previous run's document (previous_run checked its rows' shape)."""
    before = {r.key: r for r in map(Row.from_dict, previous.get("rows", []))}
    now = {r.key: r for r in rows}
    failing_before = {k for k, r in before.items() if r.failing}
    new: list[Row] = []
    still: list[Row] = []
    resolved: list[Row] = []
    for k, row in now.items():
        if row.failing:
            (still if k in failing_before else new).append(row)
        elif k in failing_before and row.outcome in ("passed", "not_applicable"):
            resolved.append(row)
    settled = {r.key for r in (*still, *resolved)}
    set_aside = [now.get(k, before[k]) for k in sorted(failing_before - settled)]
    return Changes(previous.get("started", "?"), new, resolved, still, set_aside)


def prune(report_dir: Path, keep: int, current: str) -> list[Path]:
    """Delete the files of all but the newest `keep` runs (the current run always stays); returns what went."""
    kept = set(stamps(report_dir)[:keep]) | {current}
    removed = []
    for path in sorted(report_dir.iterdir()):
        match = STAMPED.fullmatch(path.name)
        if match and match.group(1) not in kept:
            path.unlink()
            removed.append(path)
    return removed
