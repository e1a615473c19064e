"""What the run says on the terminal: progress as it goes, then under pytest's summary the counts, waivers to
look at, what changed and where the files are, and the verdict as the run's very last line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from .results import Row
from .run_verdict import JudgedRun
from .summary import when

PREFIX = "exchange-compliance: "


def say(config: pytest.Config, message: str, **markup: bool) -> None:
    """A line of the run's own, as it goes (pytest's terminal reporter; nothing without one)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(PREFIX + message, **markup)


def counts_line(org_name: str, rows: list[Row], unreachable_servers: list[str], not_checked: bool) -> str:
    """`prod: 3 failed, 40 passed, unreachable: EX05`: the separator line above the details."""
    counts = Counter(row.outcome for row in rows)
    parts = [f"{n} {outcome}" for outcome, n in sorted(counts.items())]
    if unreachable_servers:
        parts.append(f"unreachable: {', '.join(unreachable_servers)}")
    return f"{org_name}: " + ", ".join(parts or ["not checked" if not_checked else "no rows"])


def detail_lines(judged: JudgedRun, config: pytest.Config, results: Path, evidence: Path | None) -> list[str]:
    """Under the counts line: waivers to look at, what changed, where the files are."""
    lines = [
        f"waiver:   {s.waiver.label} {s.status} (expires {s.waiver.expires})"
        for s in judged.waivers
        if s.status != "applied"
    ]
    if judged.changes is not None:
        lines.append(f"since:    {when(judged.changes.previous_started)}: {judged.changes.counts()}")
    lines += [f"report:   {config.option.htmlpath}", f"results:  {results}"]
    if getattr(config.option, "xmlpath", None):
        lines.append(f"junit:    {config.option.xmlpath}")
    if judged.fix_plan is not None:
        lines.append(f"fix plan: {judged.fix_plan}")
    if evidence is not None:
        lines.append(f"evidence: {evidence}")
    return lines


def last_line(config: pytest.Config, line: str, **markup: bool) -> None:
    """The run's last line, after pytest's own counts: what a change manager or a CI log reader needs."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(PREFIX + line, **markup)
    else:
        print(PREFIX + line)
