"""What the run says on the terminal: progress as it goes; each failing requirement as the report shows it (ID,
title, server, severity, evidence, fix: no Python); the rows that could not be checked, one line per reason; then
the counts, waivers to look at, what changed and where the files are, and the verdict as the run's very last line.

Every name in it came from AD or a server: it goes through text.printable, so an ESC or a CR in a group name
cannot drive the terminal or rewrite a line of a CI log.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ..text import grouped, name_list, one_line, printable, servers_phrase
from .results import Row
from .run_verdict import JudgedRun
from .summary import when

PREFIX = "exchange-compliance: "
# A failure's evidence and fix are cut to this many lines in the terminal: the report and the fix plan have them
# whole, and nine failures should fit on a screen or two.
EVIDENCE_LINES = 5
FIX_LINES = 3
# Reasons rows could not be checked, listed before "and N more reasons".
SHOWN_REASONS = 10
REASON_LIMIT = 400  # characters of one such line: the report has the whole message
INDENT = " " * 10
# Said under a partial run's counts: what it leaves alone (metrics.write, notify.should_send, history.read).
PARTIAL = (
    "a partial run: latest.prom and notifications are left to runs of every requirement; the history passes it over"
)


def say(config: pytest.Config, message: str, **markup: bool) -> None:
    """A line of the run's own, as it goes (pytest's terminal reporter; nothing without one)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(PREFIX + printable(message), **markup)


def headline(requirement: str, server: str | None, severity: str, title: str) -> str:
    """`ACL-01 on EX02 (critical): No deny of ...`: where pytest heads a failure with the test's name."""
    where = f"{requirement} on {server}" if server else f"{requirement} for the org"
    return printable(f"{where} ({severity}): {title}")


def failure_text(row: Row) -> str:
    """What the terminal says under a failing row's headline: the evidence and the fix, as the report has them,
    cut to a few lines each. Continuation lines are indented, so a line break in a name cannot pose as a line of
    the suite's own."""
    lines = []
    waiver = row.details.get("waiver") or row.details.get("expired_waiver")
    if isinstance(waiver, dict):
        state = "Waived until" if row.outcome == "waived" else "A waiver expired on"
        lines.append(printable(f"{state} {waiver['expires']}: {waiver['justification']}"))
    label = "Not checked:" if row.outcome == "error" else "Evidence:"
    lines += _block(label, row.message, EVIDENCE_LINES, "the report has them")
    if row.fix:
        lines += _block("Fix:", row.fix, FIX_LINES, "the fix plan has them")
    return "\n".join(lines)


def _block(label: str, text: str, limit: int, where: str) -> list[str]:
    lines = printable(str(text).rstrip(), lines=True).split("\n")
    if len(lines) > limit:
        lines = [*lines[: limit - 1], f"... {len(lines) - limit + 1} more lines: {where}"]
    return [f"{label:<{len(INDENT)}}{lines[0]}", *(f"{INDENT}{line}" for line in lines[1:])]


def not_checked_lines(rows: list[Row], servers: int, reasons: dict[str, list[str]] | None = None) -> list[str]:
    """The rows that could not be checked, one line per reason: `1000 rows not checked (AUTH-02, BE-01, ...):
    WinRM on all 200 servers (EX001, EX002, EX003 and 197 more): the credentials were rejected ...`. A reason
    every server gave comes first, and says it is the org config's to fix. `reasons` (OrgFacts.unreachable_groups)
    names every server that gave a reason, also one whose rows did not need the fact (an Edge server's)."""
    reasons = reasons or {}
    unchecked = [row for row in rows if row.outcome == "error" and not row.details.get("exception")]
    keyed: dict[str, list[Row]] = {}
    for row in unchecked:
        keyed.setdefault(_reason_key(row), []).append(row)
    lines = []
    groups = grouped((key, row.server or "") for key, group in keyed.items() for row in group)
    for key, names in groups[:SHOWN_REASONS]:
        group = keyed[key]
        requirements = sorted({row.requirement for row in group})
        count = f"{len(group)} row{'s' if len(group) != 1 else ''} not checked ({name_list(requirements, 6)})"
        named = [name for name in names if name]
        if key.startswith("\0"):  # a fact a collector could not read: the same reason on every server it names
            label, _, reason = key[1:].partition(": ")
            named = reasons.get(key[1:], named)
            scope = servers_phrase(named, servers)
            config = servers > 1 and len(named) == servers
            text = f"{label} on {scope}: {reason}" + (" (every server: check the org config first)" if config else "")
        else:
            text = group[0].message.removeprefix("could not be checked: ")
            where = f"{group[0].requirement} on {servers_phrase(named, servers)}" if named else "org-wide"
            text = f"{where}: {text}"
        lines.append(one_line(f"{count}: {text}", limit=REASON_LIMIT))
    if len(groups) > SHOWN_REASONS:
        lines.append(f"and {len(groups) - SHOWN_REASONS} more reasons: the report has every row")
    return lines


def _reason_key(row: Row) -> str:
    unavailable = row.details.get("unavailable")
    if isinstance(unavailable, dict):
        return f"\0{unavailable['label']}: {unavailable['reason']}"
    return f"{row.requirement}\0{row.message}"


def counts_line(org_name: str, rows: list[Row], unreachable_servers: list[str], not_checked: bool) -> str:
    """`prod: 3 failed, 40 passed, unreachable: EX05`: the separator line above the details."""
    counts = Counter(row.outcome for row in rows)
    parts = [f"{n} {outcome}" for outcome, n in sorted(counts.items())]
    if unreachable_servers:
        parts.append(f"unreachable: {name_list(unreachable_servers)}")
    return printable(f"{org_name}: " + ", ".join(parts or ["not checked" if not_checked else "no rows"]))


def detail_lines(judged: JudgedRun, config: pytest.Config, results: Path, evidence: Path | None) -> list[str]:
    """Under the counts line: waivers to look at, what changed, where the files are."""
    lines = [
        printable(f"waiver:   {s.waiver.label} {s.status} (expires {s.waiver.expires})")
        for s in judged.waivers
        if s.status != "applied"
    ]
    if judged.changes is not None:
        lines.append(f"since:    {when(judged.changes.previous_started)}: {judged.changes.counts()}")
    if judged.verdict.partial:
        lines.append(f"partial:  {PARTIAL}")
    if getattr(config.option, "htmlpath", None):  # none where pytest-html is left out (-p no:html)
        lines.append(f"report:   {config.option.htmlpath}")
    lines.append(f"results:  {results}")
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
        reporter.write_line(PREFIX + printable(line), **markup)
    else:
        print(PREFIX + printable(line))
