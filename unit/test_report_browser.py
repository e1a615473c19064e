"""The report in a real browser (Debian's chromium, headless): what a person sees once its script has run, and
how long a 200-server org's report takes to open."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from conftest import build_org, run_suite
from exchange_compliance.plugin.html import evidence_html
from exchange_compliance.plugin.results import Row

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason="needs Debian's chromium package (scripts/setup installs it)"
)
# The bound leaves room for a busy machine, and still catches a report that has grown quadratic or bloated; what
# the report takes to open is measured by unit/bench_scale.py (README, Performance).
OPEN_SECONDS = 8.0
SERVERS = 200


def chromium(*arguments: str, profile: Path, timeout: float = 120) -> str:
    """Run headless chromium with a throwaway profile and nothing that reaches out to the network."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rendered(report: Path, tmp_path: Path, every_row: bool = False) -> str:
    """The DOM once the report's script has run; `every_row`: with every section of rows opened (#all-rows)."""
    address = report.as_uri() + ("#all-rows" if every_row else "")
    return chromium("--virtual-time-budget=5000", "--dump-dom", address, profile=tmp_path / "profile")


def open_seconds(report: Path, folder: Path, attempts: int = 2) -> float:
    """Seconds from navigation to the load event of `report`, which loads in a frame of a page that notes when the
    frame's load event fires (after the report's own script has run); the best of `attempts` browser runs, the
    first of which may pay for a cold disk cache. `folder` holds the timing page and the browser profiles."""
    timer = folder / "timer.html"
    timer.write_text(
        '<!DOCTYPE html><html><body><iframe id="f" style="width:1400px;height:900px"></iframe><script>'
        "const f = document.getElementById('f'); const start = performance.now();"
        "f.onload = () => document.body.setAttribute('data-ms', String(performance.now() - start));"
        f"f.src = {report.as_uri()!r};</script></body></html>"
    )
    timings = []
    for attempt in range(attempts):
        dom = chromium("--dump-dom", timer.as_uri(), profile=folder / f"profile{attempt}")
        found = re.search(r'data-ms="([\d.]+)"', dom)
        assert found, f"{report} never finished loading"
        timings.append(float(found.group(1)) / 1000)
    return min(timings)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def bodies(dom: str) -> list[tuple[str, str]]:
    """(the row's outcome, its HTML) for every row of the results in the DOM: pytest-html's table (failed, and not
    checked, which is "failed" underneath and says so in its result cell) and the summary's sections."""
    found = re.findall(r'<tbody class="(?:results-table-row|excomp-body) (\w+)"[^>]*>(.*?)</tbody>', dom, re.S)
    return [("error" if 'data-outcome="Not checked"' in html else result, html) for result, html in found]


def test_a_person_sees_the_summary_a_failing_row_and_its_fix(faulty_report, tmp_path):
    dom = rendered(faulty_report.reports / "latest.html", tmp_path, every_row=True)
    # Markup in a server or group name ran nowhere: it would have retitled the page.
    assert '<title id="head-title">exchange-compliance: contoso-unit</title>' in dom
    summary = text_of(dom.split('id="results-table"')[0])
    assert "contoso-unit: FAIL: " in summary and "ACL-01 on EX02 (critical, failed)" in summary
    assert (
        "Servers checked 5: EX01, EX02, EX03" in summary
        and "Unreachable WinRM on EX01: connection refused on 5986" in summary
    )
    rows = bodies(dom)
    assert len(rows) >= 40
    failed = [html for result, html in rows if result == "failed"]
    be02 = next(html for html in failed if "BE-02" in html and ">EX02<" in html)
    assert '<tr class="extras-row">' in be02  # expanded: no "hidden"
    assert "Fix" in text_of(be02) and "netsh http update sslcert ipport=0.0.0.0:444" in text_of(be02)
    passed = [html for result, html in rows if result == "passed"]
    assert passed and all('<tr class="extras-row hidden">' in html for html in passed)  # collapsed
    assert "<b>Evidence</b>" not in "".join(passed)
    # The page's script made them from the page's data with the markup the report writes for them itself.
    results = json.loads((faulty_report.reports / "latest.json").read_text())["rows"]
    made = {(r["requirement"], r["server"]): r for r in results if r["outcome"] in ("passed", "not_applicable")}
    for result, html in rows:
        if result in ("passed", "not_applicable"):
            requirement = re.search(r'<td class="col-requirement"><b>([A-Z]+-\d+)</b>', html).group(1)
            server = unescape(re.search(r'<td class="col-server">(.*?)</td>', html).group(1))
            row = made[requirement, None if server == "(org)" else server]
            # Chromium writes quotes in text as they are; html.escape writes them as &quot; and &#x27;.
            written = evidence_html(Row.from_dict(row)).replace("&quot;", '"').replace("&#x27;", "'")
            assert written in html and "<img" not in html


def test_the_failing_rows_are_in_the_page_and_the_rest_made_when_opened(faulty_report, tmp_path):
    dom = rendered(faulty_report.reports / "latest.html", tmp_path)
    rows = bodies(dom)
    assert {result for result, _ in rows} == {"failed", "error"}  # the rest waits for its section to open
    assert len(rows) == 9 and all('<tr class="extras-row">' in html for _, html in rows)  # pytest-html's, open
    table = dom.split('id="results-table"')[1]
    assert "No results found" not in table and "Not checked" in table
    for outcome in ("waived", "passed", "not_applicable"):
        section = re.search(rf'<details class="excomp-rows" id="rows-{outcome}"[^>]*>', dom).group(0)
        assert "open" not in section and 'data-pending="yes"' in section


def driven(report: Path, actions: str, tmp_path: Path) -> str:
    """The report's DOM (up to its data) after `actions`, a script run on its document `d` once it has loaded, as
    a person would click and type: a page drives it in a frame, then copies the frame's DOM out of it."""
    driver = tmp_path / "driver.html"
    driver.write_text(
        '<!DOCTYPE html><html><body><iframe id="f"></iframe><script>'
        "const f = document.getElementById('f');"
        f"f.onload = () => {{ const d = f.contentDocument; {actions}"
        "setTimeout(() => { const out = document.createElement('pre'); out.id = 'dom';"  # after the events it queued
        "out.textContent = d.documentElement.outerHTML; document.body.appendChild(out); }, 100); };"
        f"f.src = {report.as_uri()!r};</script></body></html>"
    )
    dom = chromium("--allow-file-access-from-files", "--virtual-time-budget=5000", "--dump-dom", driver.as_uri(),
                   profile=tmp_path / "profile")  # fmt: skip
    return unescape(re.search(r'<pre id="dom">(.*?)</pre>', dom, re.S).group(1)).split('id="excomp-data"')[0]


def test_filtering_the_rows_and_opening_one(faulty_report, tmp_path):
    actions = (
        "const box = d.getElementById('row-filter'); box.value = 'ews-01'; box.dispatchEvent(new Event('input'));"
        "d.querySelector('#rows-passed tbody.excomp-body:not(.hidden) tr.collapsible').click();"
    )
    dom = driven(faulty_report.reports / "latest.html", actions, tmp_path)
    rows = re.findall(r'<tbody class="(excomp-body[^"]*)"[^>]*>(.*?)</tbody>', dom, re.S)
    shown = [html for classes, html in rows if "hidden" not in classes]
    assert shown and all("EWS-01" in html for html in shown)  # the filter matched the requirement's rows only
    assert len(shown) < len(rows) and {"passed", "waived"} <= {c.split()[1] for c, h in rows if h in shown}
    opened = [html for html in shown if '<tr class="extras-row">' in html and "excomp-passed" in html]
    assert len(opened) == 1 and "Source: " in opened[0]  # the clicked passing row shows its evidence


def test_screenshot_of_the_top_of_the_report(faulty_report, tmp_path):
    shot = tmp_path / "report.png"
    chromium("--window-size=1400,1000", f"--screenshot={shot}", (faulty_report.reports / "latest.html").as_uri(),
             profile=tmp_path / "profile")  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.fixture(scope="module")
def big_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("big-org")
    run = run_suite(workdir, build_org(SERVERS, ("backend-cert:EX02", "no-auth-cert:EX03", "unreachable:EX05")))
    assert run.ret == 1, run.stdout[-3000:] + run.stderr
    return run.reports / "latest.html"


def test_a_200_server_report_opens_quickly(big_report, tmp_path, record_property):
    best = open_seconds(big_report, tmp_path)
    size = big_report.stat().st_size
    record_property("report_open_seconds", round(best, 2))
    record_property("report_megabytes", round(size / 1e6, 2))
    print(f"\n200-server report: {size / 1e6:.1f} MB, opened in {best:.2f} s")
    assert best < OPEN_SECONDS
    assert size < 6_000_000


def test_the_200_server_report_still_reads_in_ten_seconds(big_report, tmp_path):
    dom = rendered(big_report, tmp_path, every_row=True)
    summary = text_of(dom.split('id="results-table"')[0])
    assert "Servers checked 201: EX01, EX02" in summary and "and 181 more" in summary
    # Only servers that need attention are in the grid up front; the rest are folded away.
    grid = dom.split('id="grid"')[1].split("</table>")[0]
    assert grid.count('<td class="srv">') == 4  # the org row, EX02, EX03, EX05
    assert "198 more servers meet every requirement that applies to them" in summary
    assert len(bodies(dom)) == SERVERS * 10 + 3 + 10  # every requirement and server: one row each


def test_a_name_that_ends_the_script_element_runs_nothing(tmp_path):
    """A server named to end the element that holds pytest-html's data or the summary's, then run a script of its
    own: both kinds of data keep it as text (an attribute escaped by pytest-html's template; JSON with < and > as
    \\u escapes), and the browser shows the name, never runs it."""
    name = "EX02</script><script>document.title='pwned'</script>"
    run = run_suite(tmp_path / "run", build_org(2, ("backend-cert:EX02",), rename=name))
    assert run.ret == 1, run.stdout[-3000:] + run.stderr
    report = run.reports / "latest.html"
    assert "</script><script>document.title" not in report.read_text()
    dom = rendered(report, tmp_path, every_row=True)
    assert '<title id="head-title">exchange-compliance: contoso-unit</title>' in dom
    rows = bodies(dom)
    shown = [html for _, html in rows if "EX02&lt;/script&gt;&lt;script&gt;document.title='pwned'" in html]
    assert {result for result, html in rows if html in shown} >= {"failed", "passed"}  # pytest-html's and the summary's
