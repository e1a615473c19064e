"""The HTML report: one self-contained file (no external asset) that opens with what an admin needs first.

On top the summary (summary.py: the verdict, the run, the grid of requirements by servers; since last run, the
waivers, the fix plan), then the rows, one per requirement and server, in a section per outcome. The failing
rows (failed, could not be checked) are in the page itself, their evidence and fix shown: the report is read for
them, and they show before any script runs. The other rows (waived, passed, not applicable: thousands in a large
org, which the browser would otherwise lay out at every opening) are data in the page, compact JSON, made into
rows only when their section is first opened ("Show every row", or `#all-rows` in the address, opens them all).
A row's evidence folds under it; clicking the row opens or closes it.

Every value that came from AD, a server, the waivers file or the evidence is escaped: in the page by
html.escape; in the data by JSON with <, > and & as \\u escapes (so nothing in it can end the script element),
and by the page's script, which escapes every text it builds rows from exactly as html.escape does. The only
markup in the data is built here, escaped here: the evidence of waived rows and warnings (evidence_html) and
each requirement's source articles with their links (sources_html).
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape
from pathlib import Path
from urllib.parse import urlsplit

from ..catalog import Source, catalog
from . import fixplan
from . import summary as sections
from .history import streak_text
from .results import OUTCOMES, Row
from .run_verdict import JudgedRun

# What the report calls each outcome.
LABELS = {
    "failed": "Failed",
    "error": "Not checked",
    "waived": "Waived",
    "passed": "Passed",
    "not_applicable": "Not applicable",
}
# Rows in the page itself, open; the others are made from the page's data when their section is opened.
IN_PAGE = ("failed", "error")
EVIDENCE = '<div class="excomp-row'  # how a row's evidence opens
HEADER = (
    '<thead><tr><th class="col-result">Result</th><th class="col-requirement">Requirement</th>'
    '<th class="col-server">Server</th><th class="col-severity">Severity</th></tr></thead>'
)
PAGE_STYLE = """<style>
body{font-family:Helvetica,Arial,sans-serif;font-size:12px;margin:10px 16px;color:#222;min-width:800px}
h1{font-size:22px;margin:4px 0}h2{font-size:16px;margin:18px 0 6px}
table.excomp-results{border-collapse:collapse;width:100%;margin:4px 0 10px}
table.excomp-results th{text-align:left;border-bottom:2px solid #ccc;padding:4px 6px}
table.excomp-results td{padding:4px 6px;vertical-align:top}
table.excomp-results>tbody{border-top:1px solid #e5e5e5}tr.collapsible{cursor:pointer}
tr.collapsible:hover{background:#f6f6f6}
td.col-result{font-weight:bold;white-space:nowrap;width:100px}td.col-server{white-space:nowrap}
td.col-severity{width:70px}td.extra{padding:0 6px 8px 112px}.hidden{display:none}
tbody.failed td.col-result{color:#c62828}tbody.error td.col-result{color:#e65100}
tbody.waived td.col-result{color:#6a1b9a}tbody.passed td.col-result{color:#2e7d32}
tbody.not_applicable td.col-result{color:#999}
details.excomp-rows>summary{font-size:14px;font-weight:bold;cursor:pointer;margin:6px 0}
.excomp-controls input{width:320px;padding:3px}pre.excomp-log{background:#fff3e0;padding:6px;white-space:pre-wrap}
</style>"""
# Builds the rows of a section from the page's data when it is first opened; opens and closes a row's evidence;
# filters the rows by what they say. It escapes as html.escape does: & < > " '.
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
      parts.push('<tbody class="results-table-row ' + esc(outcome) + '"><tr class="collapsible">' +
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
    var row = event.target.closest && event.target.closest('tr.collapsible');
    if (row && row.nextElementSibling) row.nextElementSibling.classList.toggle('hidden');
  });
  document.getElementById('row-filter').addEventListener('input', function (event) {
    var words = event.target.value.toLowerCase().trim();
    if (words) showAll();
    sections.forEach(function (section) {
      section.querySelectorAll('tbody.results-table-row').forEach(function (body) {
        body.classList.toggle('hidden', words !== '' && body.rows[0].textContent.toLowerCase().indexOf(words) < 0);
      });
    });
  });
  if (location.hash === '#all-rows') showAll();
})();
</script>"""


def write(judged: JudgedRun, path: Path, waivers_source: str | None, tracebacks: dict[str, str]) -> Path:
    """Write the report of a judged run to `path`. `tracebacks` holds what a check that broke left (by row
    `where`, or a broken test's node ID): a suite bug keeps its traceback, every other row its evidence."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(judged, waivers_source, tracebacks), encoding="utf-8")
    return path


def page(judged: JudgedRun, waivers_source: str | None, tracebacks: dict[str, str]) -> str:
    title = f"exchange-compliance: {judged.org_name}"
    top = [
        sections.headline(judged.line, judged.verdict.status),
        sections.facts_table(sections.run_facts(judged)),
    ]
    rows = judged.rows
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
        ]
    return "\n".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<title id="head-title">{escape(title)}</title>',
            PAGE_STYLE,
            sections.STYLE,
            "</head><body>",
            f'<h1 id="title">{escape(title)}</h1>',
            *top,
            *below,
            _broken(judged.verdict.broken, tracebacks),
            *(_results(rows, tracebacks) if judged.facts is not None else []),
            "</body></html>\n",
        ]
    )


def _results(rows: list[Row], tracebacks: dict[str, str]) -> list[str]:
    by_outcome: dict[str, list[Row]] = {outcome: [] for outcome in OUTCOMES}
    for row in rows:
        by_outcome[row.outcome].append(row)
    found = Counter(row.outcome for row in rows)
    parts = [
        '<h2 id="results">Results</h2>',
        '<p class="excomp-controls"><input type="search" id="row-filter" placeholder="filter the rows: requirement, '
        'server, words" aria-label="filter the rows"> <button id="show-all" type="button">Show every row</button>'
        " Click a row to open or close its evidence.</p>",
    ]
    for outcome in OUTCOMES:
        count, label = found[outcome], LABELS[outcome]
        if outcome in IN_PAGE:
            body = "".join(_row(row, tracebacks.get(row.where)) for row in by_outcome[outcome])
            parts.append(
                f'<details class="excomp-rows" id="rows-{outcome}" data-outcome="{outcome}" data-label="{label}"'
                f"{' open' if count else ''}><summary>{count} {label}</summary>"
                f'<table class="excomp-results"{_first_table(parts)}>{HEADER}{body}</table></details>'
            )
        else:
            pending = ' data-pending="yes"' if count else ""
            parts.append(
                f'<details class="excomp-rows" id="rows-{outcome}" data-outcome="{outcome}" data-label="{label}"'
                f'{pending}><summary>{count} {label}</summary><table class="excomp-results"{_first_table(parts)}>'
                f"{HEADER}</table></details>"
            )
    parts += [f'<script type="application/json" id="excomp-data">{_data(by_outcome)}</script>', SCRIPT]
    return parts


def _first_table(parts: list[str]) -> str:
    # The first table of rows is the results table: where the summary ends.
    return "" if any('id="results-table"' in part for part in parts) else ' id="results-table"'


def _row(row: Row, traceback: str | None) -> str:
    """A row in the page: its cells, then its evidence (open)."""
    log = f'<pre class="excomp-log">{escape(traceback)}</pre>' if traceback else ""
    return (
        f'<tbody class="results-table-row {row.outcome}"><tr class="collapsible">'
        f'<td class="col-result">{LABELS[row.outcome]}</td>'
        f'<td class="col-requirement"><b>{escape(row.requirement)}</b> {escape(row.title)}</td>'
        f'<td class="col-server">{escape(row.server or "(org)")}</td>'
        f'<td class="col-severity">{escape(row.severity)}</td></tr>'
        f'<tr class="extras-row"><td class="extra" colspan="4">{evidence_html(row)}{log}</td></tr></tbody>'
    )


def _data(by_outcome: dict[str, list[Row]]) -> str:
    """The rows made on opening, as JSON safe inside a script element: the requirement's (ID, title, severity,
    sources' markup) once per kind, then per row [kind, server, message, evidence markup or null for the short
    form]."""
    kinds: dict[tuple[str, str, str, str], int] = {}
    sources: dict[tuple[str, str], str] = {}
    rows: dict[str, list[list[object]]] = {}
    for outcome, found in by_outcome.items():
        if outcome in IN_PAGE:
            continue
        rows[outcome] = []
        for row in found:
            cited = sources.get((row.requirement, row.source)) or sources.setdefault(
                (row.requirement, row.source), sources_html(row)
            )
            kind = kinds.setdefault((row.requirement, row.title, row.severity, cited), len(kinds))
            extra = None if _short(row) else evidence_html(row)
            rows[outcome].append([kind, row.server, row.message, extra])
    text = json.dumps({"kinds": list(kinds), "rows": rows}, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _broken(broken: list[str], tracebacks: dict[str, str]) -> str:
    """Tests that failed outside any requirement: a bug in tests_env, with its traceback."""
    if not broken:
        return ""
    items = "".join(
        f'<li><b>{escape(node)}</b><pre class="excomp-log">{escape(tracebacks.get(node, ""))}</pre></li>'
        for node in broken
    )
    title = "<b>Checks that broke outside any requirement</b>"
    return f'<div class="excomp-section" id="broken">{title}<ul>{items}</ul></div>'


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
