"""Benchmark (pytest-benchmark) for reading the kept history at the start of a run: 30 earlier runs of a 200-server
org (2,000 rows each, about 1.6 MB of JSON per run: a real run of 200 servers writes 1.5 MB), then every row's
failing streak and the trend. Run explicitly; the file name keeps it out of a plain `pytest unit/` run:

    pytest unit/bench_history.py --benchmark-only -s
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from exchange_compliance.plugin import history
from exchange_compliance.plugin.results import SCHEMA

ORG = "contoso"
RUNS, SERVERS, REQUIREMENTS = 30, 200, 10


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("history")
    for day in range(RUNS):
        rows = []
        for server in range(SERVERS):
            for requirement in range(REQUIREMENTS):
                failing = (server + day) % 7 == 0 and requirement < 3
                rows.append(
                    {
                        "requirement": f"REQ-{requirement:02d}",
                        "title": "The certificate bound to 444 is valid and names the server",
                        "server": f"EX{server:03d}",
                        "outcome": "failed" if failing else "passed",
                        "severity": "critical",
                        "message": "IIS 'Exchange Back End' https *:444: certificateHash ABCDEF " * 4,
                        "fix": "netsh http update sslcert ipport=0.0.0.0:444 certhash=ABCDEF appid='{4dc3e181}'" * 2,
                        "source": "Exchange 2013 clients cannot connect (KB 2958434)",
                        "details": {"thumbprint": "ABCDEF" * 6, "names": [f"ex{server:03d}.contoso.com"]},
                        "failing_since": None,
                        "failing_runs": 0,
                    }
                )
        started = f"2026-10-{day + 1:02d}T02:30:00+00:00"
        document = {"schema": SCHEMA, "org": ORG, "started": started, "verdict": {"status": "fail"}, "rows": rows}
        (folder / f"202610{day + 1:02d}-023000.json").write_text(json.dumps(document, indent=1))
    return folder


def test_read_30_runs_of_2000_rows(benchmark: BenchmarkFixture, kept: Path) -> None:
    def run() -> tuple[history.History, dict, list]:
        found = history.read(kept, ORG, "20261101-000000")
        return found, found.streaks(RUNS + 1), found.trend(RUNS + 1, "2026-11-01T02:30:00+00:00", "fail", [])

    found, streaks, trend = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    megabytes = sum(path.stat().st_size for path in kept.glob("*.json")) / 1e6
    print(f"\nhistory: {len(found.runs)} runs, {megabytes:.0f} MB of JSON, {len(streaks)} rows failing")
    assert len(found.runs) == RUNS and len(trend) == RUNS + 1 and streaks
