"""Result rows: one per requirement and server, the same in the JSON, the HTML report and the terminal.

The row schema is stable (other tools read latest.json): requirement, title, server, outcome, severity,
message, fix, source, details, failing_since, failing_runs (history.py: since when, and for how many runs in a
row, the row has failed; null and 0 for a row that passes). Outcomes: failed, error (the fact could not be
collected, or the check itself broke), waived (failed or error, acknowledged by a waiver: details["waiver"] says
by whom and until when), passed, not_applicable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, cast

import pytest

from ..catalog import catalog, severity_rank
from ..facts import ExchangeServer, OrgFacts
from ..judge.verdict import FactUnavailable, Verdict

ROW_KEY = "exchange_compliance_row"
SCHEMA = "exchange-compliance-results/1"
Outcome = Literal["failed", "error", "waived", "passed", "not_applicable"]
OUTCOMES: tuple[Outcome, ...] = ("failed", "error", "waived", "passed", "not_applicable")
# What still needs someone's attention: a failure, or a requirement that could not be checked.
FAILING: tuple[Outcome, ...] = ("failed", "error")


@dataclass(frozen=True)
class Row:
    """One row of latest.json, in its field order. It crosses from an xdist worker as the dict of `as_dict()`."""

    requirement: str
    title: str
    server: str | None  # None: an org-wide requirement
    outcome: Outcome
    severity: str
    message: str
    fix: str
    source: str
    details: dict[str, object] = field(default_factory=dict)
    # Set on the controller from the kept history (history.mark): the start of the first run of the row's
    # failing streak, and how many runs it spans, this one included.
    failing_since: str | None = None
    failing_runs: int = 0

    def as_dict(self) -> dict[str, object]:
        """The row as latest.json and the workers carry it, its keys in the schema's order."""
        return {
            "requirement": self.requirement,
            "title": self.title,
            "server": self.server,
            "outcome": self.outcome,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "source": self.source,
            "details": dict(self.details),
            "failing_since": self.failing_since,
            "failing_runs": self.failing_runs,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Row:
        """A row from a worker or a results file. An earlier run's file, which `history` has checked for the keys it
        compares by (requirement, server, outcome, severity), may lack the text of the others."""
        return cls(
            requirement=cast(str, data["requirement"]),
            title=cast(str, data.get("title", "")),
            server=cast("str | None", data.get("server")),
            outcome=cast(Outcome, data["outcome"]),
            severity=cast(str, data["severity"]),
            message=cast(str, data.get("message", "")),
            fix=cast(str, data.get("fix", "")),
            source=cast(str, data.get("source", "")),
            details=dict(cast(dict, data.get("details") or {})),
            failing_since=cast("str | None", data.get("failing_since")),
            failing_runs=cast(int, data.get("failing_runs") or 0),
        )

    @property
    def failing(self) -> bool:
        return self.outcome in FAILING

    @property
    def is_warning(self) -> bool:
        """A passing row that still asks for attention (GATE-02's CU6 warning: a pass with details["warning"])."""
        return self.outcome == "passed" and bool(self.details.get("warning"))

    @property
    def where(self) -> str:
        return f"{self.requirement} on {self.server}" if self.server else f"{self.requirement} (org)"

    @property
    def key(self) -> tuple[str, str]:
        """What identifies a row across runs: the requirement and the server (case-insensitive), or the org."""
        return self.requirement, (self.server or "").lower()


def sort_key(row: Row) -> tuple:
    # Failures first, the most severe first within an outcome, then by requirement and server.
    return (OUTCOMES.index(row.outcome), -severity_rank(row.severity), row.requirement, (row.server or "").lower())


def from_test(
    requirement_id: str,
    server: ExchangeServer | None,
    report: pytest.TestReport,
    call: pytest.CallInfo,
    verdict: Verdict | None,
) -> Row:
    """The row of a requirement's test: its outcome, and the verdict's evidence and fix."""
    requirement = catalog()[requirement_id]
    message, fix, details = "", "", {}
    outcome: Outcome
    if report.passed:
        outcome = "passed"
        if verdict is not None:
            message, fix, details = verdict.evidence, verdict.fix, verdict.details
    elif report.skipped:
        outcome = "not_applicable"
        message = verdict.evidence if verdict else _skip_reason(report)
    elif (
        verdict is not None
        and not verdict.met
        and call.excinfo is not None
        and call.excinfo.errisinstance(AssertionError)
    ):
        outcome, message, fix, details = "failed", verdict.evidence, verdict.fix, verdict.details
    else:
        outcome = "error"
        error = call.excinfo.value if call.excinfo is not None else None
        if isinstance(error, FactUnavailable):
            message = f"could not be checked: {error}"
            if error.fact is not None:  # what the terminal groups by: one reason, said once for all its servers
                details = {"unavailable": {"label": error.fact.label, "reason": error.fact.reason}}
        elif error is not None:
            message = f"the check itself failed ({type(error).__name__}): {error}"
            details = {"exception": type(error).__name__}  # a suite bug: the report keeps its traceback
        else:
            message = f"{report.when} failed: {report.longreprtext.strip().splitlines()[-1:]}"
    return Row(
        requirement=requirement_id,
        title=requirement.title,
        server=server.name if server is not None else None,
        outcome=outcome,
        severity=requirement.severity,
        message=message,
        fix=fix,
        source=requirement.source,
        details=dict(details),
    )


def is_verdict(call: pytest.CallInfo, verdict: Verdict | None) -> bool:
    """Whether the call ended in a verdict: the assertion of a failed one, or a fact that could not be collected.
    Anything else that raised is the check itself breaking, a suite bug."""
    error = call.excinfo
    if error is None:
        return False
    failed = verdict is not None and not verdict.met and error.errisinstance(AssertionError)
    return failed or error.errisinstance(FactUnavailable)


def plain_report(
    item: pytest.Item, call: pytest.CallInfo, verdict: Verdict | None, headline: str
) -> pytest.TestReport | None:
    """A requirement test's report, made without a traceback: what pytest's TestReport.from_item_and_call makes,
    but for a failed verdict or an unavailable fact the row says it all (the caller sets `longrepr` to the row's
    text), and a traceback of the test's frame, formatted with every fixture's repr, would cost more than the
    judging (a 200-server Directory per row). None when pytest should make the report: a check that broke (its
    traceback is how a suite bug is found) and any failure outside the call.

    `headline` takes the place of the test's name where pytest heads a failure (`ACL-01 on EX02 (critical): ...`).
    """
    excinfo = call.excinfo
    longrepr: tuple[str, int, str] | str | None = None
    path, line, _ = item.location
    if excinfo is None:
        outcome = "passed"
    elif call.when != "call":
        return None
    elif excinfo.errisinstance(pytest.skip.Exception):
        outcome = "skipped"
        longrepr = (str(item.path), (line or 0) + 1, f"Skipped: {excinfo.value}")
    elif is_verdict(call, verdict):
        outcome = "failed"
        longrepr = ""
    else:
        return None
    return pytest.TestReport(
        item.nodeid,
        (path, line, headline),
        dict.fromkeys(item.keywords, 1),
        outcome,  # type: ignore[arg-type]
        longrepr,
        call.when,  # type: ignore[arg-type]
        [(f"Captured {key} {when}", content) for when, key, content in getattr(item, "_report_sections", ())],
        call.duration,
        call.start,
        call.stop,
        user_properties=item.user_properties,
    )


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def row_of(report: pytest.TestReport) -> Row | None:
    """The row a test report carries, if it is a requirement's (collection reports have no user_properties)."""
    found = next((value for key, value in getattr(report, "user_properties", ()) if key == ROW_KEY), None)
    return Row.from_dict(found) if found is not None else None


def set_row(report: pytest.TestReport, row: Row) -> None:
    """Replace the row a test report carries (the controller adds what only it knows: the row's history)."""
    report.user_properties = [
        (key, row.as_dict() if key == ROW_KEY else value) for key, value in getattr(report, "user_properties", ())
    ]


def document(
    *,
    rows: list[Row],
    org: OrgFacts,
    started: datetime,
    duration: float,
    suite_version: str,
    evidence: str | None,
    **run: object,
) -> dict[str, object]:
    """latest.json: run metadata, then the rows. `run` adds the run's verdict, gate, waivers and changes."""
    return {
        "schema": SCHEMA,
        "org": org.org,
        "organization": org.directory.org_name,
        "started": started.isoformat(),
        "duration_seconds": round(duration, 3),
        "collected_at": org.collected_at.isoformat(),
        "suite_version": suite_version,
        "domain_controller": org.directory.domain_controller,
        "skipped_controllers": list(org.directory.skipped_controllers),
        "servers": list(org.checked),
        "unreachable": list(org.unreachable()),
        "evidence": evidence,
        **run,
        "rows": [row.as_dict() for row in sorted(rows, key=sort_key)],
    }


def dumps(document: dict) -> str:
    """latest.json's text."""
    return json.dumps(document, indent=1, default=str)
