"""pytest-html hooks: requirement, server and severity columns, and each row's evidence and fix.

Every value that came from AD or a server is escaped: a server or group name can contain markup.
"""

from __future__ import annotations

from html import escape

import pytest

from .results import ROW_KEY


def _row(report: pytest.TestReport) -> dict | None:
    return next((value for key, value in report.user_properties if key == ROW_KEY), None)


def pytest_html_report_title(report: object) -> None:
    report.title = "exchange-compliance"  # type: ignore[attr-defined]


def pytest_html_results_table_header(cells: list[str]) -> None:
    cells.insert(1, '<th class="sortable" data-column-type="requirement">Requirement</th>')
    cells.insert(2, '<th class="sortable" data-column-type="server">Server</th>')
    cells.insert(3, '<th class="sortable" data-column-type="severity">Severity</th>')


def pytest_html_results_table_row(report: pytest.TestReport, cells: list[str]) -> None:
    row = _row(report) or {}
    cells.insert(1, f'<td class="col-requirement">{escape(str(row.get("requirement", "")))}</td>')
    cells.insert(2, f'<td class="col-server">{escape(str(row.get("server") or "(org)"))}</td>')
    cells.insert(3, f'<td class="col-severity">{escape(str(row.get("severity", "")))}</td>')


def add_evidence(report: pytest.TestReport, row: dict) -> None:
    """Attach the row's evidence and fix to the report, where pytest-html shows them under the row."""
    import pytest_html

    report.extras = [*getattr(report, "extras", []), pytest_html.extras.html(evidence_html(row))]


def evidence_html(row: dict) -> str:
    parts = [
        f'<div class="excomp-row excomp-{escape(row["outcome"])}">',
        f"<p><b>{escape(row['requirement'])}</b> {escape(row['title'])} "
        f"<i>({escape(row['severity'])}; {escape(row['source'])})</i></p>",
        f"<p><b>Outcome:</b> {escape(row['outcome'])}</p>",
    ]
    if row.get("message"):
        parts.append(f"<p><b>Evidence</b></p><pre>{escape(row['message'])}</pre>")
    if row.get("fix"):
        parts.append(f"<p><b>Fix</b></p><pre>{escape(row['fix'])}</pre>")
    parts.append("</div>")
    return "\n".join(parts)
