"""The suite at scale, measured in one run that prints one JSON line:

    ip netns exec NAME python3 unit/bench_scale.py --servers 200 [--repeat 3] [--keep-lab]

It brings the lab org up with N servers answering 150 ms after each request and running the probe for 2 s, as
Windows spends them starting PowerShell and loading WebAdministration (one server in 50 unreachable and one in 50
without the Auth certificate, so that the report has failing rows), then runs the suite as an admin does and
measures:

- `probe_one_server_s` (T): collecting one server alone (its probe and its handshake on 444), as the suite does;
- `collection_s`: the whole collection of `pytest tests_env --org lab` with default settings, `ldap_s` and
  `probing_s` within it, `probing_over_t`, and `goal_collection_s` (2 T + the LDAP time);
- `client_cpu_ms_per_server`: the suite process's CPU time while probing, per server;
- `judge_report_ms_per_row`: `pytest tests_env --org-snapshot` of that run's evidence file, from start to exit,
  per row, serial and with `-n 2`;
- `report_open_s`: the report from navigation to its load event in headless Chromium (unit/test_report_browser's
  measure), and `report_open_ratio` against a 6-server report of the same org measured in the same run;
- `peak_rss_mb`: the peak RSS of the suite's process, in the live run and in the serial replay;
- the same in the steady state of nightly runs (`*_30_runs_kept`): a live run and a serial replay whose reports
  directory holds 29 earlier runs of the org (copies of the first live run's results), which each run reads.

With `--repeat K` every measure but the lab's start is taken K times and the median printed. Lab runs need root
and a network namespace of their own (the lab binds fixed loopback addresses and ports).

Loaded into the suite's own run as a pytest plugin (`-p bench_scale`, with BENCH_SCALE_OUT naming a file), the
module times the collection there: nothing of the suite is changed for the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNIT = Path(__file__).resolve().parent
REPO = UNIT.parent
LAB_ROOT = REPO / ".lab"
OUT_VARIABLE = "BENCH_SCALE_OUT"
LATENCY_MS = 150
PROBE_SECONDS = 2.0
VERSIONS = ("15.2.1544.4", "15.1.2507.6", "15.0.1497.2")
SMALL = 6  # servers of the report the large one is compared with
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- in the suite's run: the collection timed (pytest -p bench_scale) ---------------------------------------------


def pytest_configure(config: object) -> None:
    out = os.environ.get(OUT_VARIABLE)
    if not out or hasattr(config, "workerinput"):
        return
    from exchange_compliance import collect

    measured: dict[str, float] = {}
    servers, org = collect.collect_servers, collect.collect_org

    def collect_servers(*args: object, **kwargs: object) -> object:
        wall, cpu = time.monotonic(), time.process_time()
        try:
            return servers(*args, **kwargs)  # type: ignore[operator]
        finally:
            measured.update(probing_s=time.monotonic() - wall, probing_cpu_s=time.process_time() - cpu)

    def collect_org(*args: object, **kwargs: object) -> object:
        wall = time.monotonic()
        try:
            return org(*args, **kwargs)  # type: ignore[operator]
        finally:
            measured["collection_s"] = time.monotonic() - wall
            measured["ldap_s"] = measured["collection_s"] - measured.get("probing_s", 0.0)
            Path(out).write_text(json.dumps(measured))

    collect.collect_servers = collect_servers  # type: ignore[assignment]
    collect.collect_org = collect_org  # type: ignore[assignment]


# --- the benchmark ------------------------------------------------------------------------------------------------


def scenario_text(count: int) -> str:
    """N servers of mixed versions and roles; every 50th from the 8th unreachable, from the 24th without the Auth
    certificate in its store (AUTH-02 fails there)."""
    blocks = []
    for index in range(count):
        lines = [
            "[[servers]]",
            f'name = "EX{index + 1:03d}"',
            f'version = "{VERSIONS[index % 3]}"',
            'roles = ["Mailbox", "ClientAccess"]' if index % 5 else 'roles = ["Mailbox"]',
            f"latency_ms = {LATENCY_MS}",
            f"probe_seconds = {PROBE_SECONDS}",
        ]
        if index % 50 == 7:
            lines.append("unreachable = true")
        elif index % 50 == 23:
            lines.append('store = ["exchange"]')
        blocks.append("\n".join(lines))
    return f'description = "bench_scale: {count} servers"\n\n' + "\n\n".join(blocks) + "\n"


def run_measured(command: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict:
    """Run a command to its end: its exit status, wall time, peak RSS and output."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"bench_scale: {' '.join(command[:6])} ran past {timeout} s")
            time.sleep(0.02)
        wall = time.monotonic() - started
        output.seek(0)
        text = output.read().decode(errors="replace")
    return {
        "status": os.waitstatus_to_exitcode(status),
        "wall_s": wall,
        "rss_mb": usage.ru_maxrss / 1024,
        "output": text,
    }


def suite(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "tests_env", "-q", "-p", "no:cacheprovider", *arguments]


def suite_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(UNIT)]), **extra}


def rows_of(reports: Path) -> int:
    return len(json.loads((reports / "latest.json").read_text())["rows"])


def keep_earlier_runs(results: Path, folder: Path, count: int = 29) -> Path:
    """`folder` holding `count` earlier runs of the org: the results document `results` once a day before."""
    from datetime import UTC, datetime, timedelta

    document = json.loads(results.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    first = datetime.now(UTC) - timedelta(days=count + 1)
    for day in range(count):
        started = first + timedelta(days=day)
        document["started"] = started.isoformat()
        (folder / f"{started:%Y%m%d-%H%M%S}.json").write_text(json.dumps(document, indent=1))
    return folder


def one_server_seconds() -> float:
    """T: the suite's collection of one healthy server (its probe and its 444 handshake at once, as for every
    server of an org), after reading the directory to find it."""
    from exchange_compliance.collect import collect_servers
    from exchange_compliance.collect.directory import DirectoryReader
    from exchange_compliance.collect.ldap import close, open_connection
    from exchange_compliance.config import load_org_config

    config = load_org_config(REPO / "orgs" / "lab.toml")
    bound = open_connection(config, config.directory_credentials())
    try:
        directory = DirectoryReader(bound.connection, config.directory.base_dn).read()
    finally:
        close(bound.connection)
    server = next(s for s in directory.servers if s.name == "EX002")
    timings = []
    for _ in range(4):  # the first pays for the lab's first connections: left out
        started = time.monotonic()
        probes, handshakes = collect_servers((server,), config, config.winrm_credentials())
        timings.append(time.monotonic() - started)
        assert not hasattr(probes["EX002"], "reason") and not hasattr(handshakes["EX002"], "reason"), probes
    return statistics.median(timings[1:])


def small_facts(facts_file: Path, target: Path) -> Path:
    """The same org's evidence with SMALL servers checked: the two first with a fault and healthy ones."""
    from dataclasses import replace

    from exchange_compliance import snapshot

    facts = snapshot.read(facts_file)
    checked = list(facts.checked)
    faulty = [checked[7], checked[23]] if len(checked) > 23 else []
    chosen = faulty + [name for name in checked if name not in faulty][: SMALL - len(faulty)]
    return snapshot.write(replace(facts, checked=tuple(sorted(chosen))), target)


def open_seconds(report: Path, folder: Path) -> float | None:
    sys.path.insert(0, str(UNIT))
    from test_report_browser import CHROMIUM
    from test_report_browser import open_seconds as measure

    if not Path(CHROMIUM).is_file():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return measure(report, folder, attempts=3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="take every measure this many times; print medians")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab running afterwards")
    arguments = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_scale: the lab needs root (port 444, Samba); run it in a network namespace", file=sys.stderr)
        return 2
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from exchange_compliance.lab import control

    count, load_start = arguments.servers, os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    scenario = work / "scenario.toml"
    scenario.write_text(scenario_text(count))
    started = time.monotonic()
    control.up(LAB_ROOT, scenario_file=scenario, say=lambda _message: None)
    lab_up = time.monotonic() - started
    control.load_credentials(LAB_ROOT)
    samples: dict[str, list[float]] = {}

    def keep(name: str, value: float | None) -> None:
        if value is not None:
            samples.setdefault(name, []).append(value)

    try:
        for attempt in range(arguments.repeat):
            keep("probe_one_server_s", one_server_seconds())
            out = work / f"collection-{attempt}.json"
            live = run_measured(
                suite("--org", "lab", "--reports-dir", str(work / f"live-{attempt}"), "-p", "bench_scale"),
                env=suite_env(**{OUT_VARIABLE: str(out)}),
            )
            if live["status"] not in (0, 1) or not out.exists():
                print(live["output"][-3000:], file=sys.stderr)
                raise SystemExit(f"bench_scale: the live run ended with status {live['status']}")
            collected = json.loads(out.read_text())
            for name in ("collection_s", "ldap_s", "probing_s"):
                keep(name, collected[name])
            keep("client_cpu_ms_per_server", collected["probing_cpu_s"] * 1000 / count)
            keep("peak_rss_mb_live", live["rss_mb"])
            reports = work / f"live-{attempt}" / "lab"
            rows = rows_of(reports)
            facts = reports / "latest-facts.json"
            kept = keep_earlier_runs(reports / "latest.json", work / f"kept-{attempt}" / "lab").parent
            again = run_measured(suite("--org", "lab", "--reports-dir", str(kept)), env=suite_env())
            assert again["status"] in (0, 1), again["output"][-3000:]
            keep("peak_rss_mb_live_30_runs_kept", again["rss_mb"])
            kept_replay = keep_earlier_runs(reports / "latest.json", work / f"kept-replay-{attempt}" / "lab").parent
            replay = run_measured(
                suite("--org-snapshot", str(facts), "--reports-dir", str(kept_replay)), env=suite_env()
            )
            assert replay["status"] in (0, 1), replay["output"][-3000:]
            keep("judge_report_ms_per_row_serial_30_runs_kept", replay["wall_s"] * 1000 / rows)
            keep("peak_rss_mb_replay_30_runs_kept", replay["rss_mb"])
            for label, extra in (("serial", ()), ("xdist_2", ("-n", "2"))):
                replay = run_measured(
                    suite("--org-snapshot", str(facts), "--reports-dir", str(work / f"{label}-{attempt}"), *extra),
                    env=suite_env(),
                )
                assert replay["status"] in (0, 1), replay["output"][-3000:]
                assert rows_of(work / f"{label}-{attempt}" / "lab") == rows
                keep(f"judge_report_ms_per_row_{label}", replay["wall_s"] * 1000 / rows)
                if label == "serial":
                    keep("peak_rss_mb_replay", replay["rss_mb"])
            small = small_facts(facts, work / f"small-{attempt}.json")
            replay = run_measured(
                suite("--org-snapshot", str(small), "--reports-dir", str(work / f"small-{attempt}")), env=suite_env()
            )
            assert replay["status"] in (0, 1), replay["output"][-3000:]
            small_report = work / f"small-{attempt}" / "lab" / "latest.html"
            keep("report_open_s", open_seconds(reports / "latest.html", work / f"browser-{attempt}"))
            keep("report_open_6_servers_s", open_seconds(small_report, work / f"browser-small-{attempt}"))
            keep("report_mb", (reports / "latest.html").stat().st_size / 1e6)
    finally:
        if not arguments.keep_lab:
            control.down(LAB_ROOT, say=lambda _message: None)

    def median(name: str, digits: int = 2) -> float | None:
        return round(statistics.median(samples[name]), digits) if name in samples else None

    t, ldap = median("probe_one_server_s"), median("ldap_s")
    opened, small_opened = median("report_open_s", 3), median("report_open_6_servers_s", 3)
    result = {
        "servers": count,
        "rows": rows,
        "repeat": arguments.repeat,
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30)},
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "latency_ms": LATENCY_MS,
        "probe_seconds": PROBE_SECONDS,
        "lab_up_s": round(lab_up, 1),
        "probe_one_server_s": t,
        "collection_s": median("collection_s"),
        "ldap_s": ldap,
        "probing_s": median("probing_s"),
        "probing_over_t": round(median("probing_s") / t, 2) if t else None,  # type: ignore[operator]
        "goal_collection_s": round(2 * t + ldap, 2) if t is not None and ldap is not None else None,
        "client_cpu_ms_per_server": median("client_cpu_ms_per_server", 1),
        "judge_report_ms_per_row": {
            "serial": median("judge_report_ms_per_row_serial"),
            "xdist_2": median("judge_report_ms_per_row_xdist_2"),
            "serial_30_runs_kept": median("judge_report_ms_per_row_serial_30_runs_kept"),
        },
        "report_open_s": opened,
        "report_open_6_servers_s": small_opened,
        "report_open_ratio": round(opened / small_opened, 2) if opened and small_opened else None,
        "report_mb": median("report_mb"),
        "peak_rss_mb": {
            "live": median("peak_rss_mb_live", 0),
            "replay": median("peak_rss_mb_replay", 0),
            "live_30_runs_kept": median("peak_rss_mb_live_30_runs_kept", 0),
            "replay_30_runs_kept": median("peak_rss_mb_replay_30_runs_kept", 0),
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
