"""Waivers: orgs/<org>.waivers.toml acknowledges a finding until a date; a bad file stops the run before any test."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from conftest import build_org
from exchange_compliance.config import ConfigError
from exchange_compliance.plugin import waivers
from exchange_compliance.plugin.results import Row
from exchange_compliance.plugin.waivers import Waiver

TODAY = date(2026, 3, 1)
VALID = """
[[waiver]]
requirement = "EWS-01"
server = "EX04"
justification = "EX04 is being decommissioned (CHG-1234)"
expires = 2026-03-31
approved_by = "J. Smith, CAB"

[[waiver]]
requirement = "AUTH-04"
server = "all"
justification = "renewal scheduled"
expires = 2026-02-28
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prod.waivers.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        waivers.load(write(tmp_path, text))
    return str(caught.value)


def row(requirement: str = "EWS-01", server: str | None = "EX04", outcome: str = "failed") -> Row:
    return Row.from_dict(
        {
            "requirement": requirement,
            "server": server,
            "outcome": outcome,
            "severity": "medium",
            "details": {"found": 1},
        }
    )


def waiver(requirement: str = "EWS-01", server: str = "EX04", expires: date = TODAY, number: int = 1) -> Waiver:
    return Waiver(number, requirement, server, "because", expires, "J. Smith")


# --- the file --------------------------------------------------------------------------------------------------


def test_valid_file_is_read(tmp_path):
    first, second = waivers.load(write(tmp_path, VALID))
    assert first == Waiver(
        1, "EWS-01", "EX04", "EX04 is being decommissioned (CHG-1234)", date(2026, 3, 31), "J. Smith, CAB"
    )
    assert (second.server, second.approved_by, second.label) == ("all", "", "waiver #2 (AUTH-04 on every server)")


def test_empty_file_has_no_waivers(tmp_path):
    assert waivers.load(write(tmp_path, "# none yet\n")) == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('justification = "EX04 is being decommissioned (CHG-1234)"\n', ""), "justification: required key is missing"),
        (("expires = 2026-03-31\n", ""), "expires: required key is missing"),
        (("expires = 2026-03-31", 'expires = "2026-03-31"'), "expires: expected a date"),
        (("expires = 2026-03-31", "expires = 2026-03-31T10:00:00"), "expected a date without a time"),
        (('requirement = "EWS-01"', 'requirement = "EWS-1"'), "requirement: 'EWS-1' is not in the requirement catalog"),
        (('server = "EX04"', 'server = ""'), "server: must not be empty"),
        (('justification = "EX04 is being decommissioned (CHG-1234)"', 'justification = "  "'), "must not be empty"),
        (('approved_by = "J. Smith, CAB"', 'approved = "J. Smith"'), "approved: unknown key"),
    ],
)
def test_malformed_entry_is_named(tmp_path, change, message):
    text = VALID.replace(*change, 1)
    found = error_of(tmp_path, text)
    assert message in found
    assert found.startswith(f"{tmp_path / 'prod.waivers.toml'}: [waiver #1 (")


def test_org_requirement_needs_all(tmp_path):
    text = VALID.replace('server = "all"', 'server = "EX01"')
    assert 'AUTH-04 is checked once for the org: use "all"' in error_of(tmp_path, text)


def test_duplicate_waiver_is_refused(tmp_path):
    text = VALID + VALID.split("[[waiver]]")[1].join(["[[waiver]]", ""])
    assert "waiver #3 (EWS-01 on EX04): the same requirement and server as waiver #1" in error_of(tmp_path, text)


def test_not_toml_and_wrong_shape(tmp_path):
    assert "not valid TOML" in error_of(tmp_path, "[[waiver]\n")
    assert "expected [[waiver]] tables" in error_of(tmp_path, '[waiver]\nrequirement = "EWS-01"\n')
    assert "[] waivers: unknown key" in error_of(tmp_path, "[[waivers]]\n")


def test_waivers_file_not_in_utf8_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "prod.waivers.toml"
    data = VALID.replace("J. Smith", "J. M\u00fcller").encode("cp1252")  # as a Windows editor saves it
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        waivers.load(path)
    byte = data.index("\u00fc".encode("cp1252"))
    assert str(caught.value) == f"{path}: not UTF-8 text (byte {byte}): save it as UTF-8"


def test_locate_prefers_the_option_and_needs_it_to_exist(tmp_path):
    default = tmp_path / "prod.waivers.toml"
    assert waivers.locate(None, default) is None
    default.write_text("")
    assert waivers.locate(None, default) == default
    with pytest.raises(ConfigError, match=r"--waivers nope\.toml: no such file"):
        waivers.locate("nope.toml", default)


# --- applying them -----------------------------------------------------------------------------------------------


def test_waiver_turns_a_failure_into_waived_and_keeps_the_evidence():
    waived = waivers.apply(row(), (waiver(),), TODAY)
    assert waived.outcome == "waived"
    assert waived.details["waiver"]["justification"] == "because"
    assert waived.details["waived_outcome"] == "failed" and waived.details["found"] == 1


def test_waiver_covers_errors_and_leaves_passes_alone():
    assert waivers.apply(row(outcome="error"), (waiver(),), TODAY).outcome == "waived"
    passed = row(outcome="passed")
    assert waivers.apply(passed, (waiver(),), TODAY) is passed


def test_expiry_day_is_included_and_the_day_after_is_not():
    assert waivers.apply(row(), (waiver(expires=TODAY),), TODAY).outcome == "waived"
    expired = waivers.apply(row(), (waiver(expires=TODAY - timedelta(days=1)),), TODAY)
    assert expired.outcome == "failed"
    assert expired.details["expired_waiver"]["expires"] == (TODAY - timedelta(days=1)).isoformat()


def test_server_match_is_case_insensitive_and_all_covers_every_server_and_the_org():
    assert waivers.apply(row(server="ex04"), (waiver(),), TODAY).outcome == "waived"
    assert waivers.apply(row(server="EX05"), (waiver(),), TODAY).outcome == "failed"
    assert waivers.apply(row(server="EX05"), (waiver(server="all"),), TODAY).outcome == "waived"
    org_row = row("AUTH-03", None)
    assert waivers.apply(org_row, (waiver("AUTH-03", "all"),), TODAY).outcome == "waived"


def test_a_named_server_wins_over_all():
    found = waivers.apply(row(), (waiver(server="all", number=1), waiver(number=2)), TODAY)
    assert found.details["waiver"]["server"] == "EX04"


def test_status_of_each_waiver():
    rows = [
        waivers.apply(row(), (waiver(),), TODAY),
        row("BE-01", "EX01", "passed"),
        row("ACL-01", "EX02", "failed"),
    ]
    yesterday = TODAY - timedelta(days=1)
    listed = (waiver(), waiver("BE-01", "EX01", number=2), waiver("BE-01", "EX99", number=3))
    found = waivers.status((*listed, waiver("ACL-01", "all", yesterday, 4)), rows, TODAY)
    assert [(s.waiver.number, s.status) for s in found] == [
        (1, "applied"),
        (2, "not needed"),
        (3, "matches nothing"),
        (4, "expired"),
    ]
    assert found[0].as_dict()["rows"] == ["EWS-01 on EX04"] and found[3].rows == ("ACL-01 on EX02",)


# --- in a run ----------------------------------------------------------------------------------------------------


def waivers_file(tmp_path: Path, *entries: tuple[str, str, date]) -> Path:
    text = "".join(
        f'[[waiver]]\nrequirement = "{r}"\nserver = "{s}"\njustification = "known <b>finding</b>"\n'
        f'expires = {e.isoformat()}\napproved_by = "CAB"\n\n'
        for r, s, e in entries
    )
    return write(tmp_path, text)


def test_waived_failure_does_not_fail_the_run_and_shows_as_waived(suite, tmp_path):
    today = date.today()
    path = waivers_file(
        tmp_path,
        ("BE-02", "EX02", today),
        ("BE-03", "EX02", today + timedelta(days=30)),
        ("EWS-01", "EX03", today - timedelta(days=1)),
        ("GRP-01", "EX99", today + timedelta(days=30)),
    )
    run = suite(build_org(3, ("backend-cert:EX02", "ews-http:EX03")), "--waivers", str(path))
    assert run.ret == 0, run.stdout  # EWS-01 (medium) still fails, under the default threshold of high
    results = json.loads((run.reports / "latest.json").read_text())
    by_key = {(r["requirement"], r["server"]): r for r in results["rows"]}
    assert by_key["BE-02", "EX02"]["outcome"] == "waived" and by_key["BE-03", "EX02"]["outcome"] == "waived"
    assert by_key["EWS-01", "EX03"]["outcome"] == "failed"
    assert by_key["EWS-01", "EX03"]["details"]["expired_waiver"]["expires"] == (today - timedelta(1)).isoformat()
    statuses = {(w["requirement"], w["server"]): w["status"] for w in results["waivers"]}
    assert statuses == {
        ("BE-02", "EX02"): "applied",
        ("BE-03", "EX02"): "applied",
        ("EWS-01", "EX03"): "expired",
        ("GRP-01", "EX99"): "matches nothing",
    }
    assert "2 waived" in run.stdout
    assert "waiver #3 (EWS-01 on EX03) expired" in run.stdout
    assert "waiver #4 (GRP-01 on EX99) matches nothing" in run.stdout
    html = (run.reports / "latest.html").read_text()
    assert "known &lt;b&gt;finding&lt;/b&gt;" in html and "known <b>finding" not in html


def test_the_org_default_waivers_file_is_found_beside_the_snapshot_org(suite, pytester):
    # Without --waivers the file is orgs/<org>.waivers.toml under the rootdir (here: the repo, so use a path org).
    org_dir = pytester.path / "orgs"
    org_dir.mkdir()
    waivers_file(org_dir, ("BE-02", "EX02", date.today()))
    (org_dir / "prod.waivers.toml").rename(org_dir / "contoso-unit.waivers.toml")
    run = suite(build_org(2, ("backend-cert:EX02",)), "--rootdir", str(pytester.path))
    rows = json.loads((run.reports / "latest.json").read_text())["rows"]
    assert {r["outcome"] for r in rows if r["requirement"] == "BE-02" and r["server"] == "EX02"} == {"waived"}


def test_malformed_waivers_file_stops_the_run_before_any_test(suite, tmp_path):
    path = write(tmp_path, VALID.replace("expires = 2026-03-31\n", ""))
    run = suite(build_org(2), "--waivers", str(path))
    assert run.ret == 4
    assert f"{path}: [waiver #1 (EWS-01 on EX04)] expires: required key is missing" in run.stderr
    assert "passed" not in run.stdout and not (run.reports / "latest.json").exists()
