"""The fix plan: every fix of the run in one place, grouped by server, in the report and as a .ps1 file.

The .ps1 is for an admin to read and run step by step; the suite never runs it (it only reads the org), and
the file starts with a `throw` so that running it whole by accident does nothing.
"""

from __future__ import annotations

from html import escape

from ..catalog import severity_rank
from ..judge.powershell import comment
from .results import Row

ORG_WIDE = "Org-wide"
GUARD = "throw 'exchange-compliance fix plan: review it and run each step by hand; it is not meant to run as a whole.'"


def fix_rows(rows: list[Row]) -> list[Row]:
    """The rows with something to do: failures with a fix, and warnings that give advice (GATE-02)."""
    return [r for r in rows if r.fix and (r.outcome == "failed" or r.is_warning)]


def by_server(rows: list[Row]) -> dict[str, list[Row]]:
    """Org-wide fixes first, then one group per server (by name); the most severe first within a group."""
    groups: dict[str, list[Row]] = {}
    for row in sorted(fix_rows(rows), key=lambda r: (-severity_rank(r.severity), r.requirement)):
        groups.setdefault(row.server or ORG_WIDE, []).append(row)
    return dict(sorted(groups.items(), key=lambda item: (item[0] != ORG_WIDE, item[0].lower())))


def _comment(text: str) -> list[str]:
    # Every line of evidence becomes a comment, its control characters spelled out: a name from AD with a line
    # break (LF, CR, or any other PowerShell or an editor ends a line at) must not become a command.
    return [f"#   {comment(line)}".rstrip() for line in str(text).split("\n")] or ["#"]


def powershell(rows: list[Row], *, org: str, started: str, results_name: str, version: str) -> str:
    """The .ps1 text. Every name in a line of its own (the org, a server, the evidence) goes through
    judge/powershell.py's comment(); the fixes are the judges', which quote the names in them."""
    groups = by_server(rows)
    count = sum(len(g) for g in groups.values())
    lines = [
        f"# exchange-compliance fix plan for org {comment(org)}, run started {comment(started)}",
        f"# From {comment(results_name)}, written by exchange-compliance {version}: {count} fixes on {len(groups)} "
        "targets.",
        "# Nothing here has been run: the suite only reads. Review each step, run it by hand where its group says",
        "# (the Exchange Management Shell, or PowerShell with the AD module), then run the suite again.",
        "# Waived rows are not here; errors (rows that could not be checked) have no fix until they can be.",
        GUARD,
    ]
    if not groups:
        lines.append("# Nothing to fix: every requirement is met, waived or not applicable.")
    for target, group in groups.items():
        lines += ["", f"# ==== {comment(target)}: {len(group)} fix{'es' if len(group) != 1 else ''} " + "=" * 40]
        for row in group:
            state = "WARNING" if row.is_warning else f"{row.severity}, failed"
            lines += ["", f"# ---- {comment(row.requirement)} ({state}): {comment(row.title)}", "# Evidence:"]
            lines += _comment(row.message)
            lines += [f"# Source: {comment(row.source)}", *str(row.fix).splitlines()]
    return "\n".join(lines) + "\n"


def encode(text: str) -> bytes:
    """The .ps1 file's bytes. CRLF and a BOM: what Windows PowerShell 5.1 reads as UTF-8 (names can carry non-ASCII
    letters)."""
    return ("\ufeff" + text.replace("\n", "\r\n")).encode("utf-8")


def html(rows: list[Row], script_name: str | None) -> str:
    groups = by_server(rows)
    count = sum(len(g) for g in groups.values())
    where = f" (also written as <code>{escape(script_name)}</code>)" if script_name else ""
    if not groups:
        return (
            f'<details class="excomp-section" id="fix-plan"><summary>Fix plan: nothing to fix{where}</summary>'
            + "</details>"
        )
    parts = [
        f'<details class="excomp-section" id="fix-plan"><summary>Fix plan: {count} fix{"es" if count != 1 else ""} '
        f"on {len(groups)} target{'s' if len(groups) != 1 else ''}{where}</summary>",
        "<p>Nothing here has been run: review each step and run it by hand, then run the suite again.</p>",
    ]
    for target, group in groups.items():
        parts.append(f"<h4>{escape(target)}</h4>")
        for row in group:
            state = "warning" if row.is_warning else escape(row.severity)
            parts.append(
                f"<p><b>{escape(row.requirement)}</b> {escape(row.title)} <i>({state})</i></p>"
                f'<pre class="excomp-fix">{escape(row.fix)}</pre>'
            )
    parts.append("</details>")
    return "\n".join(parts)
