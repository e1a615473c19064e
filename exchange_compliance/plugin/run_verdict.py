"""The run's verdict and its exit status: what blocks, what is below the threshold, what could not be checked.

A row blocks when it failed or could not be checked (error) at or above the threshold, the `--fail-on` severity
(default high): a requirement nobody could check is not known to be met, so an error blocks like a failure.
Waived rows never block. In a CU gate run (`--gate`), a gate requirement (GATE-01, GATE-02) blocks whatever its
severity: it is what makes a cumulative update fail or break the server. A test that broke outside any
requirement fails the run too; an org that could not be checked at all ends it with exit 6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from ..catalog import catalog, severity_rank
from ..facts import OrgFacts
from ..text import name_list, natural, servers_phrase
from .gate import Target
from .history import Changes, TrendPoint
from .results import Row, sort_key
from .waivers import WaiverStatus

# Beside pytest's own exit codes (0 passed, 1 failed, 4 usage or config error): nothing could be checked.
EXIT_ORG_UNREACHABLE = 6
# The verdict line's length at most: whatever the org's size, it stays one readable line, under 300 characters
# with the "exchange-compliance: " it is printed after.
LINE_LIMIT = 278
# Rows (or reasons) the verdict line names before "and N more".
SHOWN_ROWS = 5
# What the org's name and ": " take before the verdict, in the line's budget.
ORG_ROOM = 40


def blocks(row: Row, fail_on: str, gate: bool) -> bool:
    """Whether the row fails the run: failing at or above the threshold, or a gate requirement in a gate run."""
    if not row.failing:
        return False
    if gate and catalog()[row.requirement].gate:
        return True
    return severity_rank(row.severity) >= severity_rank(fail_on)


@dataclass(frozen=True)
class Selection:
    """How many of the org's rows the run judged: fewer when -k, -m, --lf, node IDs or -x left some out."""

    judged: int
    rows: int  # what a run of every requirement gives: each server-scoped one per checked server, org ones once

    @property
    def partial(self) -> bool:
        return self.judged < self.rows

    def label(self, only: bool = False) -> str:
        return f"PARTIAL: {'only ' if only else ''}{self.judged} of {self.rows} rows judged"


@dataclass(frozen=True)
class RunVerdict:
    """The run's verdict: what blocks, what is below the threshold, warnings, and why nothing was checked."""

    fail_on: str
    blocking: list[Row]
    below: list[Row]  # failing rows under the threshold: shown, not blocking
    warnings: list[Row]
    broken: list[str] = field(default_factory=list)  # tests that failed outside any requirement (a suite bug)
    unreachable: str | None = None  # why the org could not be checked at all
    selection: Selection | None = None  # None: the rows judged are not counted (no facts)
    gate: bool = False  # a CU gate run: a partial selection is never GO
    servers: int = 0  # how many servers the run checked
    reasons: dict[str, list[str]] = field(default_factory=dict)  # "WinRM: <reason>": every server that gave it

    @property
    def partial(self) -> bool:
        return self.selection is not None and self.selection.partial

    @property
    def failed(self) -> bool:
        return bool(self.blocking or self.broken) or (self.gate and self.partial)

    def selection_fields(self) -> dict[str, object]:
        """latest.json's verdict on the selection: `partial`, and `judged` of the org's `rows` when counted. The
        history (history.read) passes a partial run over: it speaks for the rows it judged, not for the org."""
        if self.selection is None:
            return {"partial": False}
        return {"partial": self.partial, "judged": self.selection.judged, "rows": self.selection.rows}

    @property
    def status(self) -> str:
        """latest.json's verdict status, and the report banner's colour."""
        return "unreachable" if self.unreachable else "fail" if self.failed else "pass"

    def line(self, target: Target | None = None) -> str:
        """One line, under LINE_LIMIT characters whatever the org's size: PASS / FAIL, or with a target GO / NO-GO,
        naming what blocks; a partial run says how many of the org's rows it judged."""
        good, bad = ("GO", "NO-GO") if target else ("PASS", "FAIL")
        subject = f" {target.label}" if target else ""
        if self.unreachable:
            return f"{bad if target else 'NOT CHECKED'}{subject}: the org could not be checked: {self.unreachable}"
        partial = f"{self.selection.label()}: " if self.selection is not None and self.partial else ""
        if target and self.partial and self.selection is not None:
            return fit(
                f"{bad}{subject}: {self.selection.label(only=True)}: a CU gate judges every row "
                "(run it without -k, -m, --lf, -x or node IDs)"
            )
        if self.failed:
            count = len(self.blocking) + len(self.broken)
            head = f"{partial}{bad}{subject}: {count} blocking at or above {self.fail_on}: "
            return fit(head + self._blocking(LINE_LIMIT - ORG_ROOM - len(head) - len(" and 9999 more")))
        notes = [f"nothing fails at or above {self.fail_on}"]
        if self.below:
            notes.append(f"{len(self.below)} below it")
        if self.warnings:
            notes.append("warning: " + name_list([r.where for r in self.warnings], SHOWN_ROWS))
        return fit(f"{partial}{good}{subject}: " + "; ".join(notes))

    def _blocking(self, room: int) -> str:
        """The failed rows by name, the rows not checked by reason (one reason on 200 servers is one phrase), the
        broken tests, as many as fit in `room` characters; a reason every server gave first, as the org config's."""
        failed = [f"{r.where} ({r.severity}, {r.outcome})" for r in self.blocking if not _unavailable(r)]
        unchecked: dict[str, list[Row]] = {}
        for row in self.blocking:
            if (reason := _unavailable(row)) is not None:
                unchecked.setdefault(reason, []).append(row)
        reasons = []
        for reason, rows in sorted(unchecked.items(), key=lambda item: -len(item[1])):
            label, _, why = reason.partition(": ")
            names = self.reasons.get(reason) or sorted({r.server or "" for r in rows}, key=natural)
            everywhere = len(names) == self.servers > 1
            lead = "every server the same way, check the org config: " if everywhere else ""
            reasons.append(f"{lead}{len(rows)} not checked, {label} on {servers_phrase(names, self.servers)}: {why}")
        broken = [f"{nodeid} (a check broke outside any requirement)" for nodeid in self.broken]
        everywhere_first = sorted(reasons, key=lambda text: not text.startswith("every server"))
        named = [*everywhere_first[:1], *failed, *everywhere_first[1:], *broken]
        shown: list[str] = []
        for name in named[:SHOWN_ROWS]:
            if shown and len(", ".join([*shown, name])) > room:
                break
            shown.append(name)
        return ", ".join(shown) + (f" and {len(named) - len(shown)} more" if len(named) > len(shown) else "")


def judge_rows(
    rows: list[Row],
    fail_on: str,
    gate: bool,
    broken: list[str],
    unreachable: str | None,
    expected: int | None = None,
    servers: int = 0,
    reasons: dict[str, list[str]] | None = None,
) -> RunVerdict:
    """The verdict of the rows. `expected`: how many rows a run of every requirement gives (None: not known);
    `servers`: how many servers were checked; `reasons`: OrgFacts.unreachable_groups, as a dict."""
    rows = sorted(rows, key=sort_key)
    blocking = [r for r in rows if blocks(r, fail_on, gate)]
    below = [r for r in rows if r.failing and not blocks(r, fail_on, gate)]
    selection = Selection(len({r.key for r in rows}), expected) if expected is not None else None
    warnings = [r for r in rows if r.is_warning]
    return RunVerdict(fail_on, blocking, below, warnings, broken, unreachable, selection, gate, servers, reasons or {})


def fit(line: str) -> str:
    """The verdict line cut to LINE_LIMIT characters: a CI log, a mail subject, a pager take it whole."""
    return line if len(line) <= LINE_LIMIT else line[: LINE_LIMIT - 1] + "\u2026"


def _unavailable(row: Row) -> str | None:
    found = row.details.get("unavailable") if row.outcome == "error" else None
    return f"{found['label']}: {found['reason']}" if isinstance(found, dict) else None


@dataclass(frozen=True)
class JudgedRun:
    """The run, judged once after the last test: what latest.json, the HTML report and the terminal say."""

    org_name: str
    display_name: str | None  # the org config's, when the facts were collected live
    started: datetime
    duration: float
    target: Target | None  # the CU gate's, in a gate run
    facts: OrgFacts | None  # None: the org could not be reached
    source: Path | None  # the evidence file judged (--org-snapshot); None: collected live
    rows: list[Row]  # sorted: failures first
    verdict: RunVerdict
    line: str  # "<org>: PASS: ...", the run's last line
    waivers: list[WaiverStatus]
    changes: Changes | None  # since the last run of the org
    fix_plan: Path | None
    trend: list[TrendPoint] = field(default_factory=list)  # the kept runs and this one, oldest first
    insecure: tuple[str, ...] = ()  # the org config's settings that weaken the run's protection (warnings)


def exit_status(judged: JudgedRun, status: int) -> int:
    """The run's exit status, from pytest's: 6 when the org could not be checked, else 1 only for what blocks."""
    if judged.verdict.unreachable and status != pytest.ExitCode.INTERRUPTED:
        return EXIT_ORG_UNREACHABLE
    if status in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        # pytest fails the run on any failed test; the threshold fails it only at or above --fail-on.
        return int(judged.verdict.failed)
    return status
