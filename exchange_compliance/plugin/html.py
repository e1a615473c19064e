"""pytest-html hooks: the summary on top, one table row per requirement and server, evidence and fix under it.

Columns: result, requirement (ID and title), server, severity. pytest-html filters and sorts on its own result
words, so a waived row stays "XFailed" and a not-applicable one "Skipped" underneath, relabelled for the reader
(the filter labels here, the result cell through CSS and a data-outcome attribute). Failing rows open expanded;
passed, not-applicable and waived rows collapsed. pytest's traceback is dropped except for a check that broke:
the evidence says it better, and a 200-server report stays quick to open.

Every value that came from AD, a server or the waivers file is escaped: a server or group name can contain
markup.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlsplit

import pytest

from ..catalog import Source, catalog
from . import fixplan
from . import summary as sections
from .history import streak_text
from .results import Row, row_of
from .run import RUN

RELABEL = """<style>
td.col-result[data-outcome]{font-size:0}
td.col-result[data-outcome]::before{content:attr(data-outcome);font-size:12px}
td.col-result[data-outcome]::after{font-size:12px}
td.col-result[data-outcome="Waived"]{color:#6a1b9a}td.col-result[data-outcome="Not applicable"]{color:#999}
td.col-result[data-outcome="Not checked"]{color:#e65100}
.logwrapper:not(:has(.log)){display:none}
body{display:flex;flex-direction:column}h1{order:-2}.summary{order:-1}#environment-header,#environment{order:1}
</style>"""
EVIDENCE = '<div class="excomp-row'  # how a row's evidence opens
# What the result cell says, over pytest-html's word (which its filters and sorting need underneath).
SAYS = {"waived": "Waived", "not_applicable": "Not applicable", "error": "Not checked"}


def pytest_html_report_title(report: object) -> None:
    # `report` is pytest-html's ReportData: the title, the filter labels and which outcomes open collapsed.
    run = report.config.stash.get(RUN, None)  # type: ignore[attr-defined]
    report.title = f"exchange-compliance: {run.options.org_name}" if run else "exchange-compliance"  # type: ignore[attr-defined]
    outcomes = report.outcomes  # type: ignore[attr-defined]
    outcomes["xfailed"]["label"] = "Waived"
    outcomes["skipped"]["label"] = "Not applicable"
    if report.config.getini("render_collapsed") == "passed":  # type: ignore[attr-defined]  # the default: ours
        report.set_data("renderCollapsed", ["passed", "skipped", "xfailed"])  # type: ignore[attr-defined]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The controller has marked the row with its failing streak by now (ComplianceRun's hook is tryfirst), and
    # pytest-html (trylast) reads the extras after this: the evidence, made where the test ran, is made again
    # with the streak at its head.
    row = row_of(report)
    if row is not None and row.failing_runs:
        import pytest_html

        made = getattr(report, "extras", [])
        again = pytest_html.extras.html(evidence_html(row))
        report.extras = [again if _is_evidence(extra) else extra for extra in made]


def _is_evidence(extra: dict) -> bool:
    return extra.get("format_type") == "html" and str(extra.get("content", "")).startswith(EVIDENCE)


def pytest_html_results_table_header(cells: list[str]) -> None:
    result = cells[0]
    cells[:] = [
        result,
        '<th class="sortable" data-column-type="requirement">Requirement</th>',
        '<th class="sortable" data-column-type="server">Server</th>',
        '<th class="sortable" data-column-type="severity">Severity</th>',
    ]


def pytest_html_results_table_row(report: pytest.TestReport, cells: list[str]) -> None:
    row = row_of(report)
    result = cells[0]
    if row is None:  # not a requirement (a collection error, a helper test): name it by its test ID
        cells[:] = [result, f'<td class="col-requirement">{escape(report.nodeid)}</td>', "<td></td>", "<td></td>"]
        return
    requirement = f"<b>{escape(row.requirement)}</b> {escape(row.title)}"
    if row.outcome in SAYS:
        result = result.replace(
            '<td class="col-result">', f'<td class="col-result" data-outcome="{SAYS[row.outcome]}">'
        )
    cells[:] = [
        result,
        f'<td class="col-requirement">{_one_line(requirement)}</td>',
        f'<td class="col-server">{_one_line(escape(row.server or "(org)"))}</td>',
        f'<td class="col-severity">{escape(row.severity)}</td>',
    ]


def _one_line(html: str) -> str:
    # pytest-html reads a sortable cell's value with a single-line pattern.
    return html.replace("\r", " ").replace("\n", " ")


def pytest_html_results_table_html(report: pytest.TestReport, data: list[str]) -> None:
    row = row_of(report)
    if row is not None and not row.details.get("exception"):
        data.clear()


def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: object) -> None:
    run = session.config.stash.get(RUN, None)  # type: ignore[attr-defined]
    if run is None or not run.is_controller:
        return
    judged = run.finish()
    prefix.extend([sections.STYLE, RELABEL, sections.headline(judged.line, judged.verdict.status)])
    prefix.append(sections.facts_table(sections.run_facts(judged)))
    if judged.rows:
        prefix.append(f'<p id="counts">{escape(sections.counts(judged.rows, judged.verdict.fail_on))}</p>')
    prefix.append(sections.warnings_list(judged.rows))
    if judged.facts is not None:
        prefix.append(sections.grid(judged.rows, list(judged.facts.checked)))
    postfix.append(sections.trend(judged.trend))
    if judged.facts is not None:
        postfix.append(sections.changes(judged.changes))
        waivers_path = run.options.waivers_path
        postfix.append(sections.waivers(judged.waivers, str(waivers_path) if waivers_path else None))
        postfix.append(fixplan.html(judged.rows, judged.fix_plan.name if judged.fix_plan else None))


def add_evidence(report: pytest.TestReport, row: Row) -> None:
    """Attach the row's evidence and fix to the report, where pytest-html shows them under the row."""
    import pytest_html

    report.extras = [*getattr(report, "extras", []), pytest_html.extras.html(evidence_html(row))]


def evidence_html(row: Row) -> str:
    outcome = row.outcome
    parts = [f'{EVIDENCE} excomp-{escape(outcome)}">']
    if streak := streak_text(row):
        parts.append(f'<p class="excomp-streak"><b>{escape(streak.capitalize())}</b></p>')
    details = row.details
    waiver: dict = details.get("waiver") or details.get("expired_waiver")  # type: ignore[assignment]
    if waiver:
        expires, who = escape(str(waiver["expires"])), escape(str(waiver["approved_by"] or "(not recorded)"))
        if outcome == "waived":
            lead = f"<b>Waived</b> until {expires}, approved by {who}"
        else:
            lead = f"<b>A waiver expired</b> on {expires} (approved by {who}): the row counts again"
        parts.append(f"<p>{lead}. Justification: {escape(str(waiver['justification']))}</p>")
    if outcome in ("passed", "not_applicable") and not details.get("warning"):
        # Kept short: there are thousands of these in a large org, and nobody reads them first.
        parts.append(f"<p>{escape(row.message)} <i>Source: {sources_html(row)}</i></p></div>")
        return "".join(parts)
    label = "Not checked" if outcome == "error" else "Evidence"
    parts.append(f"<p><b>{label}</b></p><pre>{escape(row.message)}</pre>")
    if row.fix:
        parts.append(f'<p class="excomp-fix-title"><b>Fix</b></p><pre class="excomp-fix">{escape(row.fix)}</pre>')
    parts.append(f"<p><i>Source: {sources_html(row)}</i></p></div>")
    return "\n".join(parts)


def sources_html(row: Row) -> str:
    """The row's source articles, each title a link to its public address; the row's text for a requirement the
    catalog no longer has."""
    requirement = catalog().get(row.requirement)
    if requirement is None:
        return escape(row.source)
    return "; ".join(_citation(source) for source in requirement.sources)


def _citation(source: Source) -> str:
    title = escape(source.title)
    if urlsplit(source.url).scheme in ("http", "https"):
        # A new tab that cannot reach back into the report (window.opener).
        title = f'<a href="{escape(source.url)}" rel="noopener" target="_blank">{title}</a>'
    return title + (f" ({escape(source.byline)})" if source.byline else "")
