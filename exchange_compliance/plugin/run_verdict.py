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
from .gate import Target
from .history import Changes, TrendPoint
from .results import Row, sort_key
from .waivers import WaiverStatus

# Beside pytest's own exit codes (0 passed, 1 failed, 4 usage or config error): nothing could be checked.
EXIT_ORG_UNREACHABLE = 6


def blocks(row: Row, fail_on: str, gate: bool) -> bool:
    """Whether the row fails the run: failing at or above the threshold, or a gate requirement in a gate run."""
    if not row.failing:
        return False
    if gate and catalog()[row.requirement].gate:
        return True
    return severity_rank(row.severity) >= severity_rank(fail_on)


@dataclass(frozen=True)
class RunVerdict:
    """The run's verdict: what blocks, what is below the threshold, warnings, and why nothing was checked."""

    fail_on: str
    blocking: list[Row]
    below: list[Row]  # failing rows under the threshold: shown, not blocking
    warnings: list[Row]
    broken: list[str] = field(default_factory=list)  # tests that failed outside any requirement (a suite bug)
    unreachable: str | None = None  # why the org could not be checked at all

    @property
    def failed(self) -> bool:
        return bool(self.blocking or self.broken)

    @property
    def status(self) -> str:
        """latest.json's verdict status, and the report banner's colour."""
        return "unreachable" if self.unreachable else "fail" if self.failed else "pass"

    def line(self, target: Target | None = None) -> str:
        """One line: PASS / FAIL, or with a target GO / NO-GO, naming what blocks."""
        good, bad = ("GO", "NO-GO") if target else ("PASS", "FAIL")
        subject = f" {target.label}" if target else ""
        if self.unreachable:
            return f"{bad if target else 'NOT CHECKED'}{subject}: the org could not be checked: {self.unreachable}"
        if self.failed:
            names = [f"{r.where} ({r.severity}, {r.outcome})" for r in self.blocking]
            names += [f"{nodeid} (a check broke outside any requirement)" for nodeid in self.broken]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            return f"{bad}{subject}: {len(names)} blocking at or above {self.fail_on}: {shown}"
        notes = [f"nothing fails at or above {self.fail_on}"]
        if self.below:
            notes.append(f"{len(self.below)} below it")
        if self.warnings:
            notes.append("warning: " + ", ".join(r.where for r in self.warnings))
        return f"{good}{subject}: " + "; ".join(notes)


def judge_rows(rows: list[Row], fail_on: str, gate: bool, broken: list[str], unreachable: str | None) -> RunVerdict:
    rows = sorted(rows, key=sort_key)
    blocking = [r for r in rows if blocks(r, fail_on, gate)]
    below = [r for r in rows if r.failing and not blocks(r, fail_on, gate)]
    return RunVerdict(fail_on, blocking, below, [r for r in rows if r.is_warning], broken, unreachable)


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
