"""The HTML report: pytest-html's one self-contained file, with the suite's summary on top and its rows in the
suite's words.

pytest-html writes the page (--self-contained-html: no external asset) and builds its results table in the
browser from the JSON data it puts in the page. The hooks here give it what an admin needs:

- the summary (pytest_html_results_summary; summary.py: the verdict, the run, the grid of requirements by
  servers; the trend, since last run, the waivers, the fix plan);
- its results table holds the rows that fail (failed, could not be checked), one per requirement and server
  (result, requirement ID and title, server, severity), each with its evidence, fix and source as an extra
  (pytest's traceback only for a check that broke: the evidence says it better);
- the other rows (waived, passed, not applicable: thousands in a large org) are taken out of its table
  (pytest_html_results_table_row empties their cells, and pytest-html then drops the row before any more work on
  it) and are compact JSON in the summary instead, made into rows only when their section is first opened
  ("Show every row", or `#all-rows` in the address, opens them all): a 2,000-row table built in the browser at
  every opening took seconds.

Every value that came from AD, a server, the waivers file or the evidence is escaped: in markup by html.escape
(pytest-html puts the cells and extras in the page as markup); in the summary's data by JSON with <, > and & as
\\u escapes (so nothing in it can end the script element), and by the summary's script, which escapes every text
it builds rows from exactly as html.escape does. The only markup in that data is built here, escaped here: the
evidence of waived rows and warnings (evidence_html) and each requirement's source articles (sources_html).
pytest-html's environment table is the Python, platform and packages alone: no environment variable of a CI
system, no --metadata, nothing that could hold a secret.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from html import escape
from urllib.parse import urlsplit

import pytest

from .. import __version__
from ..catalog import Source, catalog
from . import fixplan
from . import summary as sections
from .history import streak_text
from .results import OUTCOMES, Row, row_of
from .run import RUN
from .run_verdict import JudgedRun

# What the report calls each outcome.
LABELS = {
    "failed": "Failed",
    "error": "Not checked",
    "waived": "Waived",
    "passed": "Passed",
    "not_applicable": "Not applicable",
}
# Rows in pytest-html's table; the others are made from the summary's data when their section is opened.
IN_PAGE = ("failed", "error")
EVIDENCE = '<div class="excomp-row'  # how a row's evidence opens
HEADER = (
    '<thead><tr><th class="col-result">Result</th><th class="col-requirement">Requirement</th>'
    '<th class="col-server">Server</th><th class="col-severity">Severity</th></tr></thead>'
)
# pytest-html filters and sorts on its own result word ("Failed"), so a row that could not be checked keeps it
# underneath and says "Not checked" through CSS. Its log box shows only where there is a log (a check that
# broke); its filter boxes only for outcomes its table holds (the others are disabled), and its count of tests
# not at all (it counts its table's rows: the summary says the run's). The summary first, pytest-html's
# environment table last. The summary's tables of rows, scoped to table.excomp-results: pytest-html styles its own.
STYLE = """<style>
body{display:flex;flex-direction:column}h1{order:-2}.summary{order:-1}
body>p,#environment-header,#environment{order:1}
input.filter[disabled],input.filter[disabled]+span,p.run-count{display:none}
td.col-result[data-outcome]{font-size:0}
td.col-result[data-outcome]::before{content:attr(data-outcome);font-size:12px}
td.col-result[data-outcome]::after{font-size:12px}td.col-result[data-outcome="Not checked"]{color:#e65100}
.logwrapper:not(:has(.log)){display:none}
table.excomp-results{border-collapse:collapse;width:100%;margin:4px 0 10px;color:#000}
table.excomp-results th{text-align:left;border-bottom:2px solid #ccc;padding:4px 6px}
table.excomp-results td{padding:4px 6px;vertical-align:top}
table.excomp-results>tbody{border-top:1px solid #e5e5e5}table.excomp-results tr.collapsible{cursor:pointer}
table.excomp-results tr.collapsible:hover{background:#f6f6f6}
table.excomp-results td.col-result{font-weight:bold;white-space:nowrap;width:100px}
table.excomp-results td.col-server{white-space:nowrap}table.excomp-results td.col-severity{width:70px}
table.excomp-results td.extra{padding:0 6px 8px 112px}table.excomp-results .hidden{display:none}
tbody.waived td.col-result{color:#6a1b9a}tbody.passed td.col-result{color:#2e7d32}
tbody.not_applicable td.col-result{color:#999}
details.excomp-rows>summary{font-size:14px;font-weight:bold;cursor:pointer;margin:6px 0;color:#000}
.excomp-controls input{width:320px;padding:3px}
</style>"""
# The summary's rows: built from its data when a section is first opened; a row's evidence opens and closes on a
# click; the filter box finds rows by what they say. It escapes as html.escape does: & < > " '. Scoped to the
# summary's own tables: pytest-html's rows toggle through its own script.
SCRIPT = """<script>
(function () {
  var data = null;
  var ESC = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;'};
  function esc(text) { return String(text).replace(/[&<>"']/g, function (c) { return ESC[c]; }); }
  function rowsOf(section) {
    var outcome = section.getAttribute('data-outcome');
    if (section.getAttribute('data-pending') !== 'yes') return;
    section.removeAttribute('data-pending');
    data = data || JSON.parse(document.getElementById('excomp-data').textContent);
    var label = esc(section.getAttribute('data-label')), kinds = data.kinds, parts = [];
    data.rows[outcome].forEach(function (row) {
      var kind = kinds[row[0]], server = row[1] === null ? '(org)' : row[1];
      var extra = row[3] !== null ? row[3] : '<div class="excomp-row excomp-' + esc(outcome) + '"><p>' + esc(row[2]) +
        ' <i>Source: ' + kind[3] + '</i></p></div>';
      parts.push('<tbody class="excomp-body ' + esc(outcome) + '"><tr class="collapsible">' +
        '<td class="col-result">' + label + '</td><td class="col-requirement"><b>' + esc(kind[0]) + '</b> ' +
        esc(kind[1]) + '</td><td class="col-server">' + esc(server) + '</td><td class="col-severity">' +
        esc(kind[2]) + '</td></tr><tr class="extras-row hidden"><td class="extra" colspan="4">' + extra +
        '</td></tr></tbody>');
    });
    section.querySelector('table').insertAdjacentHTML('beforeend', parts.join(''));
  }
  var sections = Array.prototype.slice.call(document.querySelectorAll('details.excomp-rows'));
  sections.forEach(function (section) {
    section.addEventListener('toggle', function () { if (section.open) rowsOf(section); });
  });
  function showAll() { sections.forEach(function (section) { rowsOf(section); section.open = true; }); }
  document.getElementById('show-all').addEventListener('click', showAll);
  document.addEventListener('click', function (event) {
    var row = event.target.closest && event.target.closest('table.excomp-results tr.collapsible');
    if (row && row.nextElementSibling) row.nextElementSibling.classList.toggle('hidden');
  });
  document.getElementById('row-filter').addEventListener('input', function (event) {
    var words = event.target.value.toLowerCase().trim();
    if (words) showAll();
    sections.forEach(function (section) {
      section.querySelectorAll('tbody.excomp-body').forEach(function (body) {
        body.classList.toggle('hidden', words !== '' && body.rows[0].textContent.toLowerCase().indexOf(words) < 0);
      });
    });
  });
  if (location.hash === '#all-rows') showAll();
})();
</script>"""


class ReportHooks:
    """pytest-html's hooks, registered on the controller of a run that writes the report (a worker's reports reach
    the controller, where pytest-html makes the page)."""

    def __init__(self) -> None:
        self.elsewhere: set[tuple[str, str]] = set()  # (node ID, phase) of the rows the summary holds instead
        self.shown: dict[tuple[str, str], Row] = {}  # the rows of pytest-html's table, by (node ID, phase)

    def pytest_html_report_title(self, report: object) -> None:
        # `report` is pytest-html's ReportData: the title, the outcomes' labels, the environment table.
        run = report.config.stash.get(RUN, None)  # type: ignore[attr-defined]
        report.title = f"exchange-compliance: {run.options.org_name}" if run else "exchange-compliance"  # type: ignore[attr-defined]
        report.outcomes["xfailed"]["label"] = "Waived"  # type: ignore[attr-defined]
        report.outcomes["skipped"]["label"] = "Not applicable"  # type: ignore[attr-defined]
        report.set_data("environment", environment())  # type: ignore[attr-defined]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # After the run's own hook (tryfirst: the row has its failing streak by now), before pytest-html's (trylast,
        # which reads the extras when the test's last report comes): a failing row's evidence as an HTML extra.
        if report.when != "call" and report.passed:
            return
        row = row_of(report)
        if row is None:
            return
        if row.outcome in IN_PAGE:
            from pytest_html import extras

            self.shown[report.nodeid, report.when] = row
            report.extras = [*getattr(report, "extras", []), extras.html(evidence_html(row))]  # type: ignore[attr-defined]
        else:
            self.elsewhere.add((report.nodeid, report.when))

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells[:] = [
            cells[0],
            '<th class="sortable" data-column-type="requirement">Requirement</th>',
            '<th class="sortable" data-column-type="server">Server</th>',
            '<th class="sortable" data-column-type="severity">Severity</th>',
        ]

    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        # An emptied row is dropped by pytest-html at once: a passing setup or teardown (it shows none anyway),
        # and the rows the summary holds.
        if (report.when != "call" and report.passed) or (report.nodeid, report.when) in self.elsewhere:
            del cells[:]
            return
        row = self.shown.get((report.nodeid, report.when))
        result = cells[0]
        if row is None:  # not a requirement (a check that broke outside any): named by its test ID
            cells[:] = [result, f'<td class="col-requirement">{_one_line(escape(report.nodeid))}</td>', "<td></td>",
                        "<td></td>"]  # fmt: skip
            return
        if row.outcome == "error":
            result = result.replace('<td class="col-result">', '<td class="col-result" data-outcome="Not checked">')
        cells[:] = [
            result,
            f'<td class="col-requirement">{_one_line(f"<b>{escape(row.requirement)}</b> {escape(row.title)}")}</td>',
            f'<td class="col-server">{_one_line(escape(row.server or "(org)"))}</td>',
            f'<td class="col-severity">{escape(row.severity)}</td>',
        ]

    def pytest_html_results_table_html(self, report: pytest.TestReport, data: list[str]) -> None:
        # pytest's log only for a check that broke (its traceback): a row's evidence says the rest.
        row = self.shown.get((report.nodeid, report.when))
        if row is not None and not row.details.get("exception"):
            data.clear()

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        run = session.config.stash.get(RUN, None)
        if run is None or not run.is_controller:
            return
        waivers_path = run.options.waivers_path
        top, below = summary_parts(run.finish(), str(waivers_path) if waivers_path else None)
        # ASCII (other characters as references): a string of it takes a byte a character, where one "\u2713" of
        # the grid makes the whole page two, in each copy pytest-html's template makes (4 MB at 1,000 servers).
        prefix.extend(part.encode("ascii", "xmlcharrefreplace").decode("ascii") for part in top)
        postfix.extend(part.encode("ascii", "xmlcharrefreplace").decode("ascii") for part in below)


def environment() -> dict[str, str]:
    """pytest-html's environment table, which it puts in the page as markup: versions alone, escaped."""
    import pytest_html

    return {
        "exchange-compliance": escape(__version__),
        "Python": escape(platform.python_version()),
        "Platform": escape(platform.platform()),
        "pytest": escape(pytest.__version__),
        "pytest-html": escape(pytest_html.__version__),
    }


def _one_line(html: str) -> str:
    # pytest-html reads a sortable cell's value with a single-line pattern.
    return html.replace("\r", " ").replace("\n", " ")


def summary_parts(judged: JudgedRun, waivers_source: str | None) -> tuple[list[str], list[str]]:
    """The summary above pytest-html's table: what heads it (the verdict, the run, the counts, the grid), and what
    follows (the trend, since last run, the waivers, the fix plan, the rows the table does not hold)."""
    rows = judged.rows
    top = [STYLE, sections.STYLE, sections.headline(judged.line, judged.verdict.status)]
    top.append(sections.facts_table(sections.run_facts(judged)))
    if rows:
        top.append(f'<p id="counts">{escape(sections.counts(rows, judged.verdict.fail_on))}</p>')
    top.append(sections.warnings_list(rows))
    below = [sections.trend(judged.trend)]
    if judged.facts is not None:
        top.append(sections.grid(rows, list(judged.facts.checked)))
        below += [
            sections.changes(judged.changes),
            sections.waivers(judged.waivers, waivers_source),
            fixplan.html(rows, judged.fix_plan.name if judged.fix_plan else None),
            *other_rows(rows),
        ]
    return top, below


def other_rows(rows: list[Row]) -> list[str]:
    """The waived, passed and not-applicable rows: a closed section each, its rows made from the data on opening."""
    by_outcome: dict[str, list[Row]] = {outcome: [] for outcome in OUTCOMES if outcome not in IN_PAGE}
    for row in rows:
        if row.outcome not in IN_PAGE:
            by_outcome[row.outcome].append(row)
    found = Counter(row.outcome for row in rows)
    failing = found["failed"] + found["error"]
    parts = [
        '<h2 id="other-rows">Waived, passed and not applicable</h2>',
        '<p class="excomp-controls"><input type="search" id="row-filter" placeholder="filter these rows: '
        'requirement, server, words" aria-label="filter the rows"> <button id="show-all" type="button">Show every '
        f"row</button> Click a row to open or close its evidence. The {failing} failed and not-checked rows are in "
        'the <a href="#results-table">results table</a> below.</p>',
    ]
    for outcome in by_outcome:
        count, label = found[outcome], LABELS[outcome]
        pending = ' data-pending="yes"' if count else ""
        parts.append(
            f'<details class="excomp-rows" id="rows-{outcome}" data-outcome="{outcome}" data-label="{label}"'
            f'{pending}><summary>{count} {label}</summary><table class="excomp-results">{HEADER}</table></details>'
        )
    parts += [f'<script type="application/json" id="excomp-data">{_data(by_outcome)}</script>', SCRIPT]
    # pytest-html's table follows the summary.
    parts.append(f'<h2 id="failing-rows">{failing} failed and not checked</h2>')
    return parts


def _data(by_outcome: dict[str, list[Row]]) -> str:
    """The rows made on opening, as JSON safe inside a script element: the requirement's (ID, title, severity,
    sources' markup) once per kind, then per row [kind, server, message, evidence markup or null for the short
    form]."""
    kinds: dict[tuple[str, str, str, str], int] = {}
    sources: dict[tuple[str, str], str] = {}
    rows: dict[str, list[list[object]]] = {}
    for outcome, found in by_outcome.items():
        rows[outcome] = []
        for row in found:
            cited = sources.get((row.requirement, row.source)) or sources.setdefault(
                (row.requirement, row.source), sources_html(row)
            )
            kind = kinds.setdefault((row.requirement, row.title, row.severity, cited), len(kinds))
            extra = None if _short(row) else evidence_html(row)
            rows[outcome].append([kind, row.server, row.message, extra])
    text = json.dumps({"kinds": list(kinds), "rows": rows}, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _short(row: Row) -> bool:
    # Kept short: there are thousands of these in a large org, and nobody reads them first.
    details = row.details
    plain = not (details.get("warning") or details.get("waiver") or details.get("expired_waiver"))
    return row.outcome in ("passed", "not_applicable") and plain and not streak_text(row)


def evidence_html(row: Row) -> str:
    """A row's evidence, fix and source, escaped (the page's script builds the short form of passing rows itself,
    with the same markup)."""
    outcome = row.outcome
    if _short(row):
        return (
            f'{EVIDENCE} excomp-{escape(outcome)}"><p>{escape(row.message)} '
            f"<i>Source: {sources_html(row)}</i></p></div>"
        )
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
