"""The HTML report as written: the summary an admin reads first, one row per requirement and server with its
evidence and fix, and every name from AD escaped (a server or group name can contain markup)."""

from __future__ import annotations

import json
import re

from conftest import MARKUP, report_data, report_rows

ESCAPED = MARKUP.replace("<", "&lt;").replace(">", "&gt;")


def html_of(run) -> str:
    return (run.reports / "latest.html").read_text(encoding="utf-8")


def table_rows(run) -> list[dict]:
    return report_rows(run.reports / "latest.html")


def test_markup_from_ad_is_escaped_everywhere(faulty_report):
    html = html_of(faulty_report)
    assert ESCAPED in html  # the server's name is in the grid and the banner, escaped
    assert "<img src=x" not in html  # nowhere raw: summary, rows, waivers, fix plan, the rows' data
    rows = table_rows(faulty_report)
    group = f"Server Operators {ESCAPED}"
    assert any(group in row["html"] for row in rows if "html" in row)  # ACL-01 on EX02's evidence, in the page
    made = [row for row in rows if "html" not in row]
    assert f"EX04{MARKUP}" in {row["server"] for row in made}  # text, which the page's script escapes
    for row in made:
        assert "<img src=x" not in (row["extra"] or "")  # what the browser puts in the DOM as markup
    waived = next(row for row in made if row["outcome"] == "waived")
    assert f"EWS off on purpose {ESCAPED}" in waived["extra"]


def test_summary_says_what_where_and_when(faulty_report):
    html = html_of(faulty_report)
    banner = re.search(r'<div class="excomp-banner fail" id="verdict">(.*?)</div>', html)
    assert banner and banner.group(1).startswith("contoso-unit: FAIL: ")
    assert "ACL-01 on EX02 (critical, failed)" in banner.group(1)
    facts = re.search(r'<table class="excomp-facts" id="run-facts">(.*?)</table>', html).group(1)
    for text in ("contoso-unit (Exchange organization Contoso)", "took ", "collected 2025-06-01 12:00:00 UTC"):
        assert text in facts
    assert f"5: EX01, EX02, EX03, EX04{ESCAPED}, EDGE1" in facts
    assert "WinRM on EX01: connection refused on 5986; TLS (444) on EX01: connection refused on 444" in facts
    assert re.search(r'<p id="counts">\d+ failed, \d+ error, 1 waived, \d+ passed, \d+ not applicable', html)


def test_grid_puts_failing_servers_first(faulty_report):
    grid = re.search(r'<table class="excomp-grid" id="grid">(.*?)</table>', html_of(faulty_report)).group(1)
    rows = re.findall(r"<tr><td class=\"srv\">(.*?)</td>(.*?)</tr>", grid)
    names = [name for name, _ in rows]
    assert names[0] == "<i>org</i>" and names[1:3] == ["EX02", "EX01"]  # critical failures, then errors
    header = re.findall(r"<th title=[^>]*>([A-Z]+-\d+)</th>", grid)
    ex02 = dict(zip(header, re.findall(r'<td(?: class="g-(\w+)")?', rows[1][1]), strict=True))
    assert ex02["BE-02"] == ex02["ACL-01"] == "failed" and ex02["GRP-01"] == "passed"
    assert header[0] == "ACL-01"  # requirements with failures come first


def test_one_row_per_requirement_and_server_with_its_columns(faulty_report):
    results = json.loads((faulty_report.reports / "latest.json").read_text())
    rows = table_rows(faulty_report)
    key = lambda row: (row["outcome"], row["requirement"], row["server"])  # noqa: E731
    assert sorted(map(key, rows), key=str) == sorted(map(key, results["rows"]), key=str)
    for row in rows:
        if "html" in row:
            cells = re.findall(r"<td[^>]*>.*?</td>", row["html"].split("</tr>")[0])
            assert (len(cells) == 4 and cells[0] == '<td class="col-result">Failed</td>') or "Not checked" in cells[0]
            assert re.fullmatch(r'<td class="col-requirement"><b>[A-Z]+-\d+</b> .+</td>', cells[1])
            assert cells[2].startswith('<td class="col-server">') and cells[3].startswith('<td class="col-severity">')
            assert "excomp-log" not in row["html"]  # pytest's traceback is noise here: the evidence says it
    assert "Requirement</th>" in html_of(faulty_report) and "Duration</th>" not in html_of(faulty_report)


def test_failing_rows_show_evidence_and_fix_with_real_names(faulty_report):
    (row,) = [r for r in table_rows(faulty_report) if (r["outcome"], r["requirement"], r["server"]) == (
        "failed", "BE-02", "EX02")]  # fmt: skip
    extra = row["html"]
    assert "<b>Evidence</b>" in extra and "<b>Fix</b>" in extra
    assert "ex02.lab.contoso.test" in extra and "netsh http update sslcert ipport=0.0.0.0:444" in extra
    article = "https://learn.microsoft.com/en-us/archive/blogs/miguelo/exchange-2013-clients-not-able-to-connect-using-outlook-anywhere"
    title = "Exchange 2013 Clients not able to connect using Outlook Anywhere"
    link = f'<a href="{article}" rel="noopener" target="_blank">{title}</a>'
    assert f"Source: {link} (Mikhael Ortiz, Microsoft Learn blog archive)" in extra


def test_failures_open_expanded_and_the_rest_collapsed(faulty_report):
    html = html_of(faulty_report)
    # pytest-html's table holds the failing rows, open (it folds only what render_collapsed names: passed).
    data = report_data(faulty_report.reports / "latest.html")
    assert "failed" not in data["renderCollapsed"] and "error" not in data["renderCollapsed"]
    assert re.search(r'<p id="counts">4 failed, 5 error, 1 waived', html)
    # The other rows are the summary's, in closed sections that say the outcomes in the suite's words.
    sections = dict(re.findall(r'<details class="excomp-rows" id="rows-(\w+)"[^>]*?( open)?>', html))
    assert sections == {"waived": "", "passed": "", "not_applicable": ""}
    for label in ("1 Waived", "Passed", "Not applicable"):
        assert re.search(rf"<summary>\d* ?{label}</summary>", html), label
    rows = table_rows(faulty_report)
    in_table = [row for row in rows if "html" in row]
    assert {row["outcome"] for row in in_table} == {"failed", "error"}
    assert len(in_table) == 9 and all('<div class="excomp-row' in row["html"] for row in in_table)  # evidence
    (waived,) = [row for row in rows if row["outcome"] == "waived"]
    assert "Waived</b> until 2099-12-31, approved by CAB &lt;change board&gt;" in waived["extra"]
    errors = [row for row in in_table if row["outcome"] == "error"]
    assert errors and all("<b>Not checked</b>" in row["html"] for row in errors)
    assert all(row["extra"] is None for row in rows if row["outcome"] == "passed")  # the short form, made on opening


def test_waivers_and_fix_plan_sections(faulty_report):
    html = html_of(faulty_report)
    waivers = re.search(r'<details class="excomp-section" id="waivers" ?(open)?>(.*?)</details>', html, re.S).group(2)
    assert "1 applied" in waivers and f"EWS off on purpose {ESCAPED}" in waivers and "2099-12-31" in waivers
    plan = re.search(r'<details class="excomp-section" id="fix-plan">(.*?)</details>', html, re.S).group(1)
    assert "<h4>EX02</h4>" in plan and "Remove-ADGroupMember -Identity &#x27;" not in plan
    assert f"Remove-ADGroupMember -Identity &quot;Server Operators {ESCAPED}&quot;" in plan
