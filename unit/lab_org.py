"""Running the real suite against the lab org, as an admin would: `pytest tests_env --org lab`.

The lab is the project's one running org (fixed loopback addresses and ports), so tests take it over:
each brings it up with the scenario it needs, from the provisioned-directory cache in a few seconds. So lab
tests run one at a time (not under xdist).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exchange_compliance.lab import control

REPO = Path(__file__).resolve().parents[1]
LAB_ROOT = REPO / ".lab"

needs_lab = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab org needs root: port 444 and a Samba DC"),
    pytest.mark.skipif(shutil.which("samba") is None, reason="the lab org needs Samba: run scripts/setup"),
]


def lab_up(scenario: str | None = None, servers: int | None = None) -> dict:
    """The lab running `scenario` (restarted only when it runs another one), its credentials in os.environ."""
    state = control.status(LAB_ROOT)
    wanted = scenario or "healthy"
    if state is None or state["scenario"] != wanted or servers is not None or len(state["servers"]) == 0:
        state = control.up(LAB_ROOT, scenario_name=wanted, servers=servers, say=lambda _message: None)
    control.load_credentials(LAB_ROOT)
    return state


def run_suite(
    reports: Path, *arguments: str, org: str = "lab", env: dict[str, str] | None = None
) -> tuple[int, dict, str]:
    """`pytest tests_env --org ORG` in a subprocess (environment `env`, default ours); its exit status,
    latest.json and output."""
    command = [sys.executable, "-m", "pytest", "tests_env", "--org", org, "-q", "-o", f"cache_dir={reports / '.cache'}"]
    command += ["--reports-dir", str(reports), *arguments]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    output = finished.stdout + finished.stderr
    latest = reports / Path(org).stem / "latest.json"
    results = json.loads(latest.read_text()) if latest.exists() else {}
    return finished.returncode, results, output


def lab_org_config(path: Path, *changes: tuple[str, str]) -> Path:
    """orgs/lab.toml written to `path`, its lab paths made absolute and each (old, new) of `changes` replaced."""
    text = (REPO / "orgs" / "lab.toml").read_text().replace('"../.lab/', f'"{LAB_ROOT}/')
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def outcomes(results: dict, *wanted: str) -> set[tuple[str, str | None]]:
    """(requirement, server) of every row whose outcome is one of `wanted`."""
    return {(row["requirement"], row["server"]) for row in results["rows"] if row["outcome"] in wanted}


def row(results: dict, requirement: str, server: str | None) -> dict:
    return next(r for r in results["rows"] if r["requirement"] == requirement and r["server"] == server)


def release_shared_lab() -> None:
    """Stop the shared lab org, for tests that start a DC of their own on the same ports."""
    if control.status(LAB_ROOT) is not None:
        control.down(LAB_ROOT, say=lambda _message: None)
