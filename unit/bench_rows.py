"""The error path costs what the pass path does: 1,000 rows that could not be checked (every server's WinRM and
TLS unreachable) against 1,000 passing rows, each judged by a real `pytest tests_env --org-snapshot FILE`.

    python3 unit/bench_rows.py [--servers 200] [--rounds 3]

Prints, for each org, pytest's own session time (collection and judging: the "in N s" of its last line) and the
wall time of the whole run (interpreter start and the reports included), the median of the rounds. Not a test: a
figure to quote, on whatever machine runs it. The five requirements judged are the ones that need a server's
probe or handshake (AUTH-02, BE-01, BE-02, BE-03, GATE-01), so both orgs give the same rows, one per requirement
and server.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

UNIT = Path(__file__).resolve().parent
sys.path.insert(0, str(UNIT))

import exchange_compliance  # noqa: E402
from conftest import build_org  # noqa: E402
from exchange_compliance import snapshot  # noqa: E402
from exchange_compliance.facts import OrgFacts, Unavailable  # noqa: E402

# The checkout whose package is imported (PYTHONPATH decides): its tests_env, conftest and pyproject run, so the
# same script measures another checkout's code, e.g. main's before a change.
CHECKOUT = Path(exchange_compliance.__file__).resolve().parents[1]
TESTS_ENV = CHECKOUT / "tests_env"

TESTS = [
    f"{TESTS_ENV}/test_auth_certificate.py::test_auth_certificate_is_on_the_server_with_its_private_key",
    f"{TESTS_ENV}/test_backend_site.py",
    f"{TESTS_ENV}/test_cu_gate.py::test_no_iis_bound_certificate_has_expired",
]


def unreachable(facts: OrgFacts) -> OrgFacts:
    """Every server's probe and handshake failed, the way a wrong WinRM password or a firewall makes them."""
    probes = {name: Unavailable("winrm", name, "Connection refused (port 5986)") for name in facts.checked}
    handshakes = {name: Unavailable("tls", name, "the handshake failed: Connection refused") for name in facts.checked}
    return replace(facts, probes=probes, handshakes=handshakes)


def judge(facts: OrgFacts, folder: Path) -> tuple[float, float, str]:
    """(pytest's session seconds, wall seconds, pytest's counts line) of one run."""
    evidence = snapshot.write(facts, folder / f"{facts.org}.json")
    command = [sys.executable, "-m", "pytest", *TESTS, "--org-snapshot", str(evidence), "-q"]
    command += ["--reports-dir", str(folder / "reports"), "-o", f"cache_dir={folder / 'cache'}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=CHECKOUT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    counts = next((line for line in reversed(done.stdout.splitlines()) if re.search(r" in [\d.]+s", line)), "")
    session = re.search(r" in ([\d.]+)s", counts)
    if done.returncode not in (0, 1, 6) or session is None:
        raise SystemExit(f"the run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return float(session.group(1)), wall, counts.strip("= ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=200, help="Exchange servers in the org (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each org; the median is shown (default 3)")
    options = parser.parse_args()
    healthy = build_org(options.servers)
    orgs = {"passing": healthy, "unreachable": unreachable(healthy)}
    figures: dict[str, list[tuple[float, float, str]]] = {name: [] for name in orgs}
    with tempfile.TemporaryDirectory() as temporary:
        for round_number in range(options.rounds):
            for name, facts in orgs.items():  # alternated, so a busy moment of the machine hits both
                folder = Path(temporary) / f"{name}-{round_number}"
                folder.mkdir()
                figures[name].append(judge(replace(facts, org=name), folder))
    print(f"{CHECKOUT}: {options.servers} Exchange servers, 5 requirements each, median of {options.rounds} runs:")
    for name, runs in figures.items():
        session = statistics.median(run[0] for run in runs)
        wall = statistics.median(run[1] for run in runs)
        print(f"  {name:<12} pytest {session:6.2f} s   wall {wall:6.2f} s   ({runs[-1][2]})")


if __name__ == "__main__":
    main()
