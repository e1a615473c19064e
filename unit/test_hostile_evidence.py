"""Hostile evidence files (--org-snapshot): whatever their shape, one line naming the file and what is wrong with
it, exit 4, and nothing written: never a RecursionError, a ValueError from int(), or error rows judged from
settings nobody checked."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import TESTS_ENV, build_org
from exchange_compliance import snapshot


def document() -> dict:
    return json.loads(snapshot.dumps(build_org(2)))


def run_evidence(pytester: pytest.Pytester, text: str) -> tuple[str, Path]:
    """`pytest tests_env --org-snapshot FILE` on `text`: exit 4 with one error line (returned, with the file), and
    nothing written: not even reports/."""
    evidence = pytester.path / "evidence.json"
    evidence.write_text(text)
    before = sorted(path.name for path in pytester.path.iterdir())
    done = pytester.run(
        sys.executable, "-m", "pytest", str(TESTS_ENV), "--org-snapshot", str(evidence),
        "--reports-dir", str(pytester.path / "reports"), timeout=300,
    )  # fmt: skip
    output = done.stdout.str() + done.stderr.str()
    assert done.ret == 4, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    errors = [line for line in done.stderr.lines if line.startswith("ERROR: ")]
    assert len(errors) == 1 and errors[0].isprintable(), output
    assert sorted(path.name for path in pytester.path.iterdir() if path.name not in ("stdout", "stderr")) == before
    return errors[0], evidence


def test_an_evidence_file_nested_200000_deep_is_one_line(pytester):
    facts = "[" * 200_000 + "]" * 200_000
    line, evidence = run_evidence(pytester, f'{{"format": "{snapshot.FORMAT}", "facts": {facts}}}')
    assert line == f"ERROR: {evidence}: not an evidence file: nested too deeply"


def test_an_integer_too_long_to_read_is_one_line(pytester):
    text = snapshot.dumps(build_org(2)).replace('"roles": 6', '"roles": ' + "6" * 5000, 1)
    line, evidence = run_evidence(pytester, text)
    assert line == f"ERROR: {evidence}: not an evidence file: an integer too long to read"


def test_100_mb_of_whitespace_is_one_line(pytester):
    started = time.monotonic()
    line, evidence = run_evidence(pytester, " " * 100_000_000)
    assert line == f"ERROR: {evidence}: not JSON: Expecting value: line 1 column 100000001 (char 100000000)"
    print(f"100 MB of whitespace refused in {time.monotonic() - started:.2f} s (the whole run)")


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("auth_certificate_warning_days", "sixty", "expected int, got 'sixty'"),
        ("auth_certificate_warning_days", 10**20, "100000000000000000000 is out of range 0..3650"),
        ("auth_certificate_warning_days", True, "expected int, got True"),
        ("auth_certificate_warning_days", None, "expected int, got None"),
        ("hybrid", "yes", "expected bool, got 'yes'"),
    ],
)
def test_judging_settings_are_checked_when_the_file_is_read_not_judged_into_error_rows(pytester, key, value, says):
    evidence = document()
    evidence["facts"]["settings"][key] = value
    line, path = run_evidence(pytester, json.dumps(evidence))
    assert line == f"ERROR: {path}.settings.{key}: {says}"


@pytest.mark.parametrize("value", [float("inf"), float("nan"), True, 1.5, "6"])
def test_a_number_of_the_facts_that_is_not_a_whole_number_is_one_line(pytester, value):
    evidence = document()
    evidence["facts"]["directory"]["servers"][0]["roles"] = value
    line, path = run_evidence(pytester, json.dumps(evidence))
    assert line.startswith(f"ERROR: {path}.directory.servers[0].roles: expected int, got ")


def test_a_name_with_control_characters_in_a_key_is_shown_escaped(pytester):
    evidence = document()
    evidence["facts"]["probes"]["EX01\n\x1b[2JRemove-Item"] = "not a probe"
    line, path = run_evidence(pytester, json.dumps(evidence))
    assert line == f"ERROR: {path}.probes['EX01\\n\\x1b[2JRemove-Item']: expected an object"


def test_a_200_server_evidence_file_reads_back(tmp_path):
    facts = build_org(200)
    started = time.monotonic()
    path = snapshot.write(facts, tmp_path / "facts.json")
    written = time.monotonic() - started
    started = time.monotonic()
    assert snapshot.read(path) == facts
    print(
        f"200 servers: {path.stat().st_size / 1e6:.1f} MB of evidence written in {written:.2f} s, "
        f"read in {time.monotonic() - started:.2f} s"
    )
