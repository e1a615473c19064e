"""The report in a real browser (Debian's chromium, headless): what a person sees once its script has run, and
how long a 200-server org's report takes to open."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import build_org, run_suite

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason="needs Debian's chromium package (scripts/setup installs it)"
)
# Measured on the 2-core machine the suite's CI runs on: about 2.5 s to load the 200-server report and build its
# 2,200-row table (pytest-html's own rows, with its default columns and logs: about 4 s). The bound leaves room
# for a busy machine, and still catches a report that has grown quadratic or bloated.
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


def rendered(report: Path, tmp_path: Path) -> str:
    """The DOM once pytest-html's script has built the table."""
    return chromium("--virtual-time-budget=5000", "--dump-dom", report.as_uri(), profile=tmp_path / "profile")


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def bodies(dom: str) -> list[tuple[str, str]]:
    """(pytest-html's result class, the row's HTML) for every row of the results table."""
    return re.findall(r'<tbody class="results-table-row (\w+)"[^>]*>(.*?)</tbody>', dom, re.S)


def test_a_person_sees_the_summary_a_failing_row_and_its_fix(faulty_report, tmp_path):
    dom = rendered(faulty_report.reports / "latest.html", tmp_path)
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
    # The report loads in a frame; the page notes when the frame's load event fires, which is after the
    # report's own script has built the table of every row.
    timer = tmp_path / "timer.html"
    timer.write_text(
        '<!DOCTYPE html><html><body><iframe id="f" style="width:1400px;height:900px"></iframe><script>'
        "const f = document.getElementById('f'); const start = performance.now();"
        "f.onload = () => document.body.setAttribute('data-ms', String(performance.now() - start));"
        f"f.src = {big_report.as_uri()!r};</script></body></html>"
    )
    timings = []
    for attempt in range(2):  # the better of two: the first may pay for a cold disk cache
        started = time.monotonic()
        dom = chromium("--dump-dom", timer.as_uri(), profile=tmp_path / f"profile{attempt}")
        wall = time.monotonic() - started
        found = re.search(r'data-ms="([\d.]+)"', dom)
        assert found, "the report never finished loading"
        timings.append((float(found.group(1)) / 1000, wall))
    best, wall = min(timings)
    size = big_report.stat().st_size
    record_property("report_open_seconds", round(best, 2))
    record_property("report_megabytes", round(size / 1e6, 2))
    print(f"\n200-server report: {size / 1e6:.1f} MB, opened in {best:.2f} s (browser run {wall:.1f} s)")
    assert best < OPEN_SECONDS
    assert size < 6_000_000


def test_the_200_server_report_still_reads_in_ten_seconds(big_report, tmp_path):
    dom = rendered(big_report, tmp_path)
    summary = text_of(dom.split('id="results-table"')[0])
    assert "Servers checked 201: EX01, EX02" in summary and "and 181 more" in summary
    # Only servers that need attention are in the grid up front; the rest are folded away.
    grid = dom.split('id="grid"')[1].split("</table>")[0]
    assert grid.count('<td class="srv">') == 4  # the org row, EX02, EX03, EX05
    assert "198 more servers meet every requirement that applies to them" in summary
    assert len(bodies(dom)) == SERVERS * 10 + 3 + 10  # every requirement and server: one row each
