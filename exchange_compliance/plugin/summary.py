"""The top of the HTML report: what an admin reads in ten seconds, then what changed, the waivers.

Plain HTML strings for pytest-html's summary hook. Everything that came from AD, a server, the waivers file
or the evidence is escaped: a server or group name can contain markup.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from html import escape

from .. import __version__
from ..builds import release_name
from ..catalog import catalog, severity_rank
from ..facts import OrgFacts, Version
from .history import Changes, TrendPoint, streak_text
from .results import FAILING, OUTCOMES, Row
from .run_verdict import JudgedRun
from .waivers import WaiverStatus

SYMBOLS = {"failed": "\u2717", "error": "!", "waived": "W", "passed": "\u2713", "not_applicable": "\u2013"}
LABELS = {"not_applicable": "not applicable"}
# Passing servers past this many are folded away: the grid of a 200-server org stays a glance.
SHOWN_PASSING = 12

STYLE = """<style>
.excomp-banner{font-size:18px;font-weight:bold;padding:8px 12px;border-radius:4px;color:#fff;margin:6px 0}
.excomp-banner.pass{background:#2e7d32}.excomp-banner.fail{background:#c62828}.excomp-banner.unreachable{background:#6a1b9a}
.excomp-facts td{padding:2px 10px 2px 0;color:#000;vertical-align:top}.excomp-facts td:first-child{color:#555}
table.excomp-grid{margin:6px 0;color:#000}table.excomp-grid td,table.excomp-grid th{border:1px solid #ddd;
padding:2px 5px;text-align:center;font-size:12px}table.excomp-grid th.srv,table.excomp-grid td.srv{text-align:left}
.g-failed{background:#ffcdd2;color:#b71c1c;font-weight:bold}.g-error{background:#ffe0b2;color:#e65100;font-weight:bold}
.g-waived{background:#e1bee7;color:#4a148c}.g-passed{background:#e8f5e9;color:#2e7d32}.g-not_applicable{color:#999}
.g-warning{background:#fff9c4;color:#795548;font-weight:bold}
.excomp-section{color:#000;margin:10px 0}.excomp-section summary{font-size:15px;font-weight:bold;cursor:pointer}
.excomp-section li{margin:2px 0}pre.excomp-fix{background:#f5f5f5;border:1px solid #ddd;padding:6px;
white-space:pre-wrap;color:#000}.excomp-row pre{white-space:pre-wrap;color:#000}.excomp-row p{margin:4px 0}
.excomp-row .excomp-fix-title{color:#b71c1c}table.excomp-list td{text-align:left}.summary__data{flex:1 1 auto}
</style>"""


def run_facts(run: JudgedRun) -> list[tuple[str, str]]:
    """What the report says about the run, as label / value pairs (escaped by facts_table)."""
    lines = [("Run", f"started {run.started:%Y-%m-%d %H:%M:%S} UTC, took {run.duration:.1f} s")]
    lines += [("Warning", line) for line in run.insecure]
    if run.target is not None:
        lines.insert(0, ("CU gate", f"target {run.target.label}; gate requirements block at any severity"))
    # The org config's display_name heads the report when the facts were collected live; a replayed evidence
    # file carries no config, so it is named by the org alone.
    display = run.display_name if run.display_name not in (None, run.org_name) else None
    if run.facts is None:
        org = f"{display} ({run.org_name})" if display else run.org_name
        return [("Org", org), *lines, ("Not checked", run.verdict.unreachable or "")]
    facts = run.facts
    source = f"from {run.source}" if run.source else "live"
    servers = list(facts.checked)
    named = ", ".join(servers[:20]) + (f" and {len(servers) - 20} more" if len(servers) > 20 else "")
    exchange_org = f"Exchange organization {facts.directory.org_name}"
    return [
        ("Org", f"{display} ({run.org_name}, {exchange_org})" if display else f"{run.org_name} ({exchange_org})"),
        *lines,
        ("Facts", f"{source}, collected {when(facts.collected_at.isoformat())}"),
        *([("Domain controller", controller_text(facts))] if facts.directory.domain_controller else []),
        ("Servers checked", f"{len(servers)}: {named}" if servers else "none"),
        *([("Exchange builds", builds_text(facts))] if servers else []),
        ("Unreachable", facts.unreachable_text() or "none"),
        ("Suite", f"exchange-compliance {__version__}"),
    ]


def builds_text(facts: OrgFacts) -> str:
    """Exchange 2019 CU15 (15.2.1748.10): EX03; Exchange SE RTM (15.2.2562.17): EX01, EX02: the checked servers by
    the build AD records for them, oldest first."""
    groups: dict[Version | None, list[str]] = {}
    for server in facts.checked_servers():
        groups.setdefault(server.version, []).append(server.name)
    parts = []
    for version in sorted(groups, key=_oldest_first):
        names = groups[version]
        label = f"{release_name(version)} ({version})" if version else "build not readable from AD"
        parts.append(f"{label}: {', '.join(names[:10])}" + (f" and {len(names) - 10} more" if len(names) > 10 else ""))
    return "; ".join(parts)


def _oldest_first(version: Version | None) -> tuple[int, ...]:
    if version is None:
        return (1,)
    return (0, version.major, version.minor, version.build, version.revision or 0)


def controller_text(facts: OrgFacts) -> str:
    """dc02.contoso.com (dc01.contoso.com:636 skipped: certificate verify failed: ...): the DC that was read."""
    directory = facts.directory
    skipped = "; ".join(entry.replace(": ", " skipped: ", 1) for entry in directory.skipped_controllers)
    return f"{directory.domain_controller} ({skipped})" if skipped else str(directory.domain_controller)


def headline(line: str, status: str) -> str:
    """The verdict's line as a banner coloured by its status (pass, fail, unreachable)."""
    return f'<div class="excomp-banner {status}" id="verdict">{escape(line)}</div>'


def facts_table(items: list[tuple[str, str]]) -> str:
    """Label / value lines (org, when, how long, servers); values are escaped here."""
    cells = "".join(f"<tr><td>{escape(label)}</td><td>{escape(value)}</td></tr>" for label, value in items)
    return f'<table class="excomp-facts" id="run-facts">{cells}</table>'


def counts(rows: list[Row], fail_on: str) -> str:
    found = Counter(r.outcome for r in rows)
    parts = [f"{found[o]} {LABELS.get(o, o)}" for o in OUTCOMES if found[o]]
    return ", ".join(parts or ["no rows"]) + f" (the run fails on {fail_on} and above)"


def _cell(row: Row | None) -> str:
    if row is None:
        return "<td></td>"
    outcome = "warning" if row.is_warning else row.outcome
    symbol = "\u26a0" if outcome == "warning" else SYMBOLS[row.outcome]
    title = f"{row.where}: {LABELS.get(outcome, outcome)} ({row.severity})"
    return f'<td class="g-{outcome}" title="{escape(title)}">{symbol}</td>'


def _notable(row: Row) -> bool:
    return row.outcome in (*FAILING, "waived") or row.is_warning


def _badness(cells: dict[str, Row]) -> tuple:
    # The most severe failing or unchecked row first; at the same severity a failure before an unchecked row.
    def worst(*outcomes: str) -> int:
        return max((severity_rank(r.severity) for r in cells.values() if r.outcome in outcomes), default=-1)

    count = Counter(r.outcome for r in cells.values())
    return (-worst(*FAILING), -worst("failed"), -count["failed"], -count["error"], -count["waived"])


def grid(rows: list[Row], servers: list[str]) -> str:
    """Requirements by servers, failing servers first; requirements with failures first among the columns."""
    by_server: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_server.setdefault(row.server or "", {})[row.requirement] = row
    order = list(catalog())
    failing_ids = {r.requirement for r in rows if r.failing}
    columns = sorted({r.requirement for r in rows}, key=lambda i: (i not in failing_ids, order.index(i)))
    names = ([""] if "" in by_server else []) + sorted(
        {*servers, *(n for n in by_server if n)}, key=lambda n: (_badness(by_server.get(n, {})), n.lower())
    )
    head = "".join(
        f'<th title="{escape(catalog()[c].title)} ({catalog()[c].severity})">{escape(c)}</th>' for c in columns
    )

    def line(name: str) -> str:
        cells = by_server.get(name, {})
        label = escape(name) if name else "<i>org</i>"
        return f'<tr><td class="srv">{label}</td>{"".join(_cell(cells.get(c)) for c in columns)}</tr>'

    attention = [n for n in names if not n or any(_notable(r) for r in by_server.get(n, {}).values())]
    passing = [n for n in names if n not in attention]
    shown = attention + (passing if len(passing) <= SHOWN_PASSING else [])
    table = f'<table class="excomp-grid" id="grid"><tr><th class="srv">server</th>{head}</tr>'
    parts = [table + "".join(line(n) for n in shown) + "</table>"]
    if len(passing) > SHOWN_PASSING:
        parts.append(
            f'<details class="excomp-section"><summary>{len(passing)} more servers meet every requirement that '
            f"applies to them</summary>{table}{''.join(line(n) for n in passing)}</table></details>"
        )
    legend = (
        " ".join(f'<span class="g-{o}">&nbsp;{SYMBOLS[o]}&nbsp;</span> {LABELS.get(o, o)}' for o in SYMBOLS)
        + ' <span class="g-warning">&nbsp;\u26a0&nbsp;</span> passed with a warning'
    )
    return "\n".join([*parts, f'<p class="excomp-legend">{legend}</p>'])


def _first_line(text: str, limit: int) -> str:
    line = (str(text).splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def _items(rows: list[Row], detail: int = 0) -> str:
    """List items naming rows; `detail` > 0 adds the first line of the evidence, cut at that many characters."""
    if not rows:
        return "<li>none</li>"
    items = []
    for row in rows:
        extra = f": {escape(_first_line(row.message, detail))}" if detail and row.message else ""
        streak = f", {escape(streak_text(row))}" if row.failing_runs > 1 else ""
        items.append(
            f"<li><b>{escape(row.where)}</b> ({escape(row.severity)}, {escape(row.outcome)}){streak}{extra}</li>"
        )
    return "".join(items)


def when(iso: str) -> str:
    """An ISO timestamp from a results file as a person reads it: 2026-11-22 03:00:41 UTC."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment.utcoffset() == timedelta(0) else f"{moment:%Y-%m-%d %H:%M:%S %z}"


def changes(found: Changes | None) -> str:
    if found is None:
        return (
            '<details class="excomp-section" id="since-last-run" open><summary>Since last run</summary>'
            "<p>No earlier run of this org to compare with.</p></details>"
        )
    parts = [
        f'<details class="excomp-section" id="since-last-run" open><summary>Since last run '
        f"({escape(when(found.previous_started))}): {escape(found.counts())}</summary>",
        f"<p><b>New failures</b></p><ul>{_items(found.new_failures, detail=160)}</ul>",
        f"<p><b>Resolved</b></p><ul>{_items(found.resolved)}</ul>",
        f"<p><b>Still failing</b></p><ul>{_items(found.still_failing)}</ul>",
    ]
    if found.set_aside:
        parts.append(f"<p><b>Waived since, or no longer checked</b></p><ul>{_items(found.set_aside)}</ul>")
    return "\n".join([*parts, "</details>"])


def waivers(statuses: list[WaiverStatus], source: str | None) -> str:
    if not statuses:
        where_from = f" ({escape(source)} has none)" if source else ""
        return f'<details class="excomp-section" id="waivers"><summary>Waivers: none{where_from}</summary></details>'
    tally = Counter(s.status for s in statuses)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(tally.items()))
    unusual = any(s.status != "applied" for s in statuses)
    rows = []
    for s in statuses:
        w = s.waiver
        covers = ", ".join(s.rows) or "no row of this run"
        rows.append(
            f'<tr class="w-{escape(s.status.replace(" ", "-"))}"><td>{escape(w.label)}</td><td><b>{escape(s.status)}'
            f"</b></td><td>{escape(w.justification)}</td><td>{w.expires.isoformat()}</td>"
            f"<td>{escape(w.approved_by or '(not recorded)')}</td><td>{escape(covers)}</td></tr>"
        )
    return (
        f'<details class="excomp-section" id="waivers"{" open" if unusual else ""}><summary>Waivers: {summary} '
        f'({escape(source or "")})</summary><table class="excomp-grid excomp-list"><tr><th>waiver</th><th>status</th>'
        "<th>justification</th><th>expires</th><th>approved by</th><th>covers</th></tr>"
        + "".join(rows)
        + "</table></details>"
    )


def warnings_list(rows: list[Row]) -> str:
    found = [r for r in rows if r.is_warning]
    if not found:
        return ""
    return f'<div class="excomp-section" id="warnings"><b>Warnings</b><ul>{_items(found, detail=400)}</ul></div>'


# The trend chart's colours: the grid's, a shade stronger, so thin bars still read.
TREND_SERIES = (
    ("failed", "failed", "#c62828"),
    ("unchecked", "could not be checked", "#ef6c00"),
    ("waived", "waived", "#8e24aa"),
)
TREND_WIDTH, TREND_HEIGHT = 640, 150
_PLOT = (40, 10, 630, 120)  # left, top, right, bottom of the bars' area


def _scale(top: int) -> int:
    """The y axis' top: 1, 2 or 5 times a power of ten, at least `top`."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if top <= factor * step:
                return factor * step
        step *= 10


def trend(points: list[TrendPoint]) -> str:
    """A stacked bar a run, oldest first: its failed, unchecked and waived rows. Inline SVG, no script, no asset."""
    if not points:
        return ""
    left, top, right, bottom = _PLOT
    peak = _scale(max(max(p.failed + p.unchecked + p.waived for p in points), 1))
    slot = (right - left) / len(points)
    width = min(max(slot * 0.75, 1.0), 36.0)  # a few runs make narrow bars, not a wall of colour
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="trend-chart" width="{TREND_WIDTH}" height="{TREND_HEIGHT}" '
        f'viewBox="0 0 {TREND_WIDTH} {TREND_HEIGHT}" role="img" font-family="sans-serif" font-size="11">',
        f"<title>Failed, unchecked and waived rows in the last {len(points)} runs</title>",
    ]
    for value in (0, peak // 2, peak) if peak > 1 else (0, peak):
        y = bottom - (bottom - top) * value / peak
        svg.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{value}</text>')
    for index, point in enumerate(points):
        x = left + index * slot + (slot - width) / 2
        label = escape(when(point.started))
        if point.status == "unreachable":
            svg.append(
                f'<g class="trend-run unreachable"><title>{label}: the org could not be checked</title>'
                f'<rect x="{x:.1f}" y="{top}" width="{width:.1f}" height="{bottom - top}" fill="#e0e0e0"/></g>'
            )
            continue
        counts = ", ".join(f"{getattr(point, name)} {words}" for name, words, _colour in TREND_SERIES)
        bars, base = [], float(bottom)
        for name, _words, colour in TREND_SERIES:
            height = (bottom - top) * getattr(point, name) / peak
            if height:
                base -= height
                bars.append(
                    f'<rect x="{x:.1f}" y="{base:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{colour}"/>'
                )
        # An empty slot still answers a hover: a clean run is news too.
        bars.append(f'<rect x="{x:.1f}" y="{top}" width="{width:.1f}" height="{bottom - top}" fill-opacity="0"/>')
        svg.append(f'<g class="trend-run"><title>{label}: {counts}</title>{"".join(bars)}</g>')
    # The first run's date under its bar, and this run's under its own.
    first_x, last_x = left + (slot - width) / 2, right - (slot - width) / 2
    if len(points) > 1:
        first = escape(points[0].started[:10])
        svg.append(f'<text x="{first_x:.1f}" y="{bottom + 16}" fill="#555">{first}</text>')
    last = f"{escape(points[-1].started[:10])} (this run)"
    svg.append(f'<text x="{last_x:.1f}" y="{bottom + 16}" text-anchor="end" fill="#555">{last}</text>')
    svg.append("</svg>")
    legend = " ".join(
        f'<span style="display:inline-block;width:10px;height:10px;background:{colour}"></span> {words}'
        for _name, words, colour in TREND_SERIES
    )
    legend += ' <span style="display:inline-block;width:10px;height:10px;background:#e0e0e0"></span> org not checked'
    runs = f"{len(points)} run{'s' if len(points) != 1 else ''}"
    return (
        f'<div class="excomp-section" id="trend"><b>Trend</b> (the kept history: {runs}, this one last): {legend}'
        f"<br>{''.join(svg)}</div>"
    )
