"""Earlier runs of the same org: since when each row has failed, the trend, "since last run", pruning old outputs.

Each run writes timestamped copies (<stamp>.json, .html, .xml, -facts.json, -fixes.ps1) beside latest.*. The
run reads the kept history once, at its start (`read`): every timestamped JSON of the org, of which it keeps
each row's outcome (for the failing streaks, the trend chart and notification) and the newest judged run's whole
document (for "since last run"; a run that could not reach the org has no rows to compare with). Reading 30 runs
of a 200-server org (2,000 rows, 1.5 MB of JSON each) takes about 0.4 s, nearly all of it json.loads
(unit/bench_history.py).

A failing streak: a row that failed or could not be checked in this run has failed since the start of the
earliest run, within the kept history, from which it failed (or could not be checked) in every run that judged
it. A passing or not-applicable outcome ends a streak: the row starts again at 1. Two choices, both so that the
count tells an admin how long a problem has really stood:
- A waived row keeps its streak going (and carries it): a waiver acknowledges a failure and fixes nothing, so
  the day it expires the row reads "failing for 40 runs", not 1.
- A run that did not judge the row (the org could not be reached, the server was not checked, the row was not
  selected with -k) says nothing about it: it neither ends the streak nor counts in it.

A partial run (-k, -m, --lf, node IDs or -x judged only part of the org's rows; its verdict says `partial`) speaks
for no row of the history: the streaks, the trend, "since last run" and notification's previous run pass it over,
so that an admin's `-k EX01` neither ends a streak nor has the next nightly run take the rows it left out for
fixed. Its files are pruned apart from the whole runs' (the newest `keep` of each stay: prune), so that an
afternoon of -k runs does not prune the nightly history away; it reads the history as any run does.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .results import FAILING, SCHEMA, Row

STAMPED = re.compile(r"(\d{8}-\d{6})(?:\.json|\.html|\.xml|-facts\.json|-fixes\.ps1)")
# The outcomes that keep a row's failing streak going (see the module's docstring for waived).
STREAK: tuple[str, ...] = (*FAILING, "waived")

Key = tuple[str, str]  # Row.key: the requirement and the server, lower-cased ("" for an org-wide row)


def stamped_files(report_dir: Path) -> list[tuple[str, Path]]:
    """(stamp, path) of each run's file in the directory. Regular files only: a symlink named like a run's file is
    neither read (for since last run) nor pruned (which would follow nothing, but is not the run's to delete)."""
    if not report_dir.is_dir():
        return []
    with os.scandir(report_dir) as entries:
        found = [
            (match.group(1), report_dir / entry.name)
            for entry in entries
            if (match := STAMPED.fullmatch(entry.name)) and entry.is_file(follow_symlinks=False)
        ]
    return sorted(found)


def stamps(report_dir: Path) -> list[str]:
    """The run stamps with files in the directory, newest first."""
    return sorted({stamp for stamp, _ in stamped_files(report_dir)}, reverse=True)


@dataclass(frozen=True)
class PastRun:
    """What the history keeps of one earlier run of the org."""

    stamp: str
    started: str  # ISO 8601, as the run's results document has it
    status: str  # the verdict's: pass, fail, unreachable (no rows)
    outcomes: dict[Key, str]  # every row's outcome
    partial: bool = False  # judged only part of the org's rows: passed over (see the module's docstring)

    def keys(self, *outcomes: str) -> frozenset[Key]:
        return frozenset(key for key, outcome in self.outcomes.items() if outcome in outcomes)


@dataclass(frozen=True)
class Streak:
    since: str  # the start of the streak's first run
    runs: int


@dataclass(frozen=True)
class TrendPoint:
    """One run in the trend chart."""

    started: str
    status: str  # pass, fail, unreachable
    failed: int
    unchecked: int
    waived: int


@dataclass(frozen=True)
class History:
    """The kept history of an org before this run, read once."""

    runs: tuple[PastRun, ...]  # oldest first; runs that could not check the org and partial runs included
    previous: dict | None  # the newest judged whole run's results document (its failing rows only), for compare()

    @property
    def last(self) -> PastRun | None:
        """The newest whole run before this one, whatever its verdict (notification compares with it)."""
        return next((run for run in reversed(self.runs) if not run.partial), None)

    @property
    def partial_stamps(self) -> frozenset[str]:
        """The stamps of the partial runs: prune counts them apart."""
        return frozenset(run.stamp for run in self.runs if run.partial)

    def kept(self, keep: int) -> tuple[PastRun, ...]:
        """The earlier whole runs that stay beside this run once it is written and the directory pruned to `keep`
        whole runs (prune; partial runs are kept apart, and passed over)."""
        whole = [run for run in self.runs if not run.partial]
        return tuple(whole[len(whole) - (keep - 1) :]) if keep > 1 else ()

    def streaks(self, keep: int) -> dict[Key, Streak]:
        """Each row's failing streak as of the newest kept run (rows whose streak ended are absent)."""
        found: dict[Key, Streak] = {}
        for run in self.kept(keep):
            for key, outcome in run.outcomes.items():
                if outcome in STREAK:
                    before = found.get(key)
                    found[key] = Streak(before.since, before.runs + 1) if before else Streak(run.started, 1)
                else:
                    found.pop(key, None)
        return found

    def trend(self, keep: int, started: str, status: str, rows: Iterable[Row]) -> list[TrendPoint]:
        """The kept runs and this one, oldest first: failed, unchecked and waived rows in each."""
        points = [_point(run.started, run.status, Counter(run.outcomes.values())) for run in self.kept(keep)]
        return [*points, _point(started, status, Counter(row.outcome for row in rows))]


def _point(started: str, status: str, counts: Counter) -> TrendPoint:
    return TrendPoint(started, status, counts["failed"], counts["error"], counts["waived"])


def mark(row: Row, streaks: dict[Key, Streak], started: str) -> Row:
    """The row with its failing streak, this run (which started at `started`) included; unchanged when it passes."""
    if row.outcome not in STREAK:
        return row
    before = streaks.get(row.key)
    if before is None:
        return replace(row, failing_since=started, failing_runs=1)
    return replace(row, failing_since=before.since, failing_runs=before.runs + 1)


def streak_text(row: Row) -> str:
    """ "failing for 12 runs, since 2026-11-03" (UTC dates, as the report's times); "" for a row with no streak."""
    runs = row.failing_runs
    if not runs or not row.failing_since:
        return ""
    return f"failing for {runs} run{'s' if runs != 1 else ''}, since {row.failing_since[:10]}"


def read(report_dir: Path, org: str, before: str, passed_over: list[str] | None = None) -> History:
    """The runs of `org` older than the stamp `before` (this run's).

    A results file that cannot be read as one (cut short, not UTF-8, not a results document: a hand edit,
    another tool's JSON) is passed over, not a traceback: a nightly run must not stop on yesterday's file.
    `passed_over` gets a line naming each, for the run to say.
    """
    runs: list[PastRun] = []
    previous: dict | None = None
    # One key tuple and one outcome string for every run: 30 kept runs of a 1,000-server org (10,000 rows each)
    # then hold 27 MB, not 85 (a run's peak memory stays under 300 MB; unit/bench_scale.py).
    shared: dict = {}
    results = {stamp: path for stamp, path in stamped_files(report_dir) if path.name == f"{stamp}.json"}
    for stamp, path in sorted(results.items(), reverse=True):  # newest first
        if stamp >= before:
            continue
        found = _load(path, passed_over, shared)
        if found is None or found[0]["org"] != org:
            continue
        document, outcomes = found
        status = document["verdict"]["status"]
        partial = document["verdict"].get("partial") is True  # absent before runs said so: a whole run
        if previous is None and status != "unreachable" and not partial:
            # compare() reads the rows that failed: the other 9,900 of a 1,000-server run need not be held.
            previous = {**document, "rows": [row for row in document["rows"] if row["outcome"] in FAILING]}
        runs.append(PastRun(stamp, document["started"], status, outcomes, partial))
    return History(tuple(reversed(runs)), previous)


def previous_run(report_dir: Path, org: str, before: str, passed_over: list[str] | None = None) -> dict | None:
    """The newest judged whole run of `org` older than the stamp `before`, or None."""
    return read(report_dir, org, before, passed_over).previous


def _load(path: Path, passed_over: list[str] | None, shared: dict) -> tuple[dict, dict[Key, str]] | None:
    """The results document and its rows' outcomes; None (and a note) for a file that is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        _note(passed_over, path, f"cannot read: {exc.strerror}")
    except UnicodeDecodeError:
        _note(passed_over, path, "not UTF-8")
    except json.JSONDecodeError:
        _note(passed_over, path, "not JSON (cut short?)")
    else:
        outcomes = _outcomes(document, shared)
        if outcomes is not None:
            return document, outcomes
        _note(passed_over, path, "not a results document of this suite")
    return None


def _note(passed_over: list[str] | None, path: Path, why: str) -> None:
    if passed_over is not None:
        passed_over.append(f"{path}: {why}: passed over for the history of this org")


def _outcomes(document: object, shared: dict) -> dict[Key, str] | None:
    """Each row's outcome, when the document is a results document in the shape read() and compare() take it.

    One pass over the rows, checking each as it is taken: this is most of what reading the history costs."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        return None
    if not all(isinstance(document.get(name), str) for name in ("org", "started")):
        return None
    verdict, rows = document.get("verdict"), document.get("rows")
    if not isinstance(verdict, dict) or not isinstance(verdict.get("status"), str) or not isinstance(rows, list):
        return None
    outcomes: dict[Key, str] = {}
    for row in rows:
        if not isinstance(row, dict):
            return None
        requirement, server, outcome = row.get("requirement"), row.get("server"), row.get("outcome")
        if not (isinstance(requirement, str) and isinstance(outcome, str) and isinstance(row.get("severity"), str)):
            return None
        if server is not None and not isinstance(server, str):
            return None
        key = (requirement, (server or "").lower())
        outcomes[shared.setdefault(key, key)] = shared.setdefault(outcome, outcome)
    return outcomes


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


def prune(report_dir: Path, keep: int, current: str, partial: Collection[str] = ()) -> list[Path]:
    """Delete the files of all but the newest `keep` runs (the current run always stays); returns what went.
    Partial runs (`partial`: their stamps, the current run's too when it is one) are counted apart, the newest
    `keep` of them kept as well: they do not take the place of the whole runs the history is made of."""
    every = stamps(report_dir)
    kept = {current, *[s for s in every if s not in partial][:keep], *[s for s in every if s in partial][:keep]}
    removed = []
    for stamp, path in stamped_files(report_dir):
        if stamp not in kept:
            path.unlink()
            removed.append(path)
    return removed
