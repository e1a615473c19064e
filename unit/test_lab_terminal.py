"""What `pytest tests_env --org lab` prints against the lab org: the seeds scenario's failures in the report's
words (and in well under half the lines it took when pytest printed them), a WinRM password every server rejects
said once as the org config's problem, and --collect-only contacting no server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from lab_org import LAB_ROOT, REPO, lab_org_config, lab_up, needs_lab, run_suite

pytestmark = needs_lab

# `pytest tests_env --org lab` printed 212 lines for the seeds scenario's 9 failures before the terminal spoke
# Exchange: fixture reprs, source lines and `where False = Verdict(...)` for each.
LINES_BEFORE = 212


def suite(reports: Path, *arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`pytest tests_env --org lab` as an admin types it (no -q), its cache beside the reports."""
    command = [sys.executable, "-m", "pytest", "tests_env", "--org", "lab", "--reports-dir", str(reports)]
    command += ["-o", f"cache_dir={reports / '.cache'}", *arguments]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def test_the_seeds_run_prints_each_failure_as_evidence_and_fix_in_under_half_the_lines(tmp_path):
    lab_up("seeds")
    run = suite(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) < LINES_BEFORE / 2, run.stdout
    for python in ("where False", "def test_", "Directory(", "Verdict(", "AssertionError", "FAILED tests_env"):
        assert python not in run.stdout, python
    assert "_ ACL-01 on EX02 (critical): No deny of ms-Exch-EPI-Token-Serialization" in run.stdout
    assert "Evidence: EX02$ is denied ms-Exch-EPI-Token-Serialization on 5 of 6 Exchange server objects" in run.stdout
    assert 'Fix:      Remove-ADGroupMember -Identity "Server Operators Team" -Members "EX02$"' in run.stdout
    assert "_ AUTH-03 for the org (critical): The current Auth certificate has not expired _" in run.stdout
    # pytest-benchmark and hypothesis serve the suite's own tests: not loaded here, no banner.
    assert "benchmark:" not in run.stdout and "hypothesis" not in run.stdout


def test_a_winrm_password_every_server_rejects_is_one_reason_and_the_configs(tmp_path):
    lab_up("healthy")
    wrong = ('password_env = "EXCOMP_LAB_PASSWORD"\nread_timeout', 'password_env = "T_WRONG"\nread_timeout')
    org = lab_org_config(tmp_path / "wrong-winrm.toml", wrong)
    env = {**os.environ, "T_WRONG": "not the password"}
    status, _, output = run_suite(tmp_path / "reports", org=str(org), env=env)
    assert status == 6, output
    reason = "the credentials were rejected (HTTP 401, ntlm): check [winrm] user_env and password_env"
    servers = "WinRM on all 5 servers (EDGE01, EX01, EX02 and 2 more)"
    lines = output.splitlines()
    progress = next(line for line in lines if line.startswith("exchange-compliance: servers: probed 5"))
    assert progress.endswith(f"every server failed the same way, so check the org config first: {servers}: {reason}")
    assert sum(reason in line for line in lines) == 3  # the progress line, the NOT CHECKED section, the verdict
    assert lines[-1].startswith("exchange-compliance: wrong-winrm: NOT CHECKED: the org could not be checked: ")
    assert f"{servers}: {reason}" in lines[-1] and len(lines[-1]) < 300


def test_collect_only_lists_the_lab_rows_and_contacts_no_server(tmp_path):
    lab_up("seeds")
    log = LAB_ROOT / "state" / "servers.log"
    before = log.read_text()
    run = suite(tmp_path, "--co", "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tests_env/test_backend_site.py::test_back_end_site_has_an_https_binding_on_444[EX04]" in run.stdout
    assert "6 to check, none contacted" in run.stdout
    assert log.read_text() == before  # no WinRM request reached a lab server
    assert not (tmp_path / "lab").exists()  # no report, no evidence file


@pytest.mark.parametrize("replay", [False, True], ids=["live", "replayed"])
def test_last_failed_judges_the_nine_failures_again(tmp_path, replay):
    lab_up("seeds")
    first = suite(tmp_path)
    assert first.returncode == 1
    source = ["--org-snapshot", str(tmp_path / "lab" / "latest-facts.json")] if replay else []
    command = [sys.executable, "-m", "pytest", "tests_env", *(source or ["--org", "lab"]), "--lf"]
    command += ["--reports-dir", str(tmp_path / "again"), "-o", f"cache_dir={tmp_path / '.cache'}"]
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "run-last-failure: rerun previous 9 failures" in again.stdout
    assert "9 failed" in again.stdout.splitlines()[-2]
    assert again.stdout.splitlines()[-1].startswith("exchange-compliance: lab: PARTIAL: 9 of 63 rows judged: FAIL: ")
