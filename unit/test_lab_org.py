"""The whole path on the lab org: discovery, probes, the requirements, the reports, parallel runs, replay."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab_org import LAB_ROOT, REPO, lab_org_config, lab_up, needs_lab, outcomes, row, run_suite

from exchange_compliance.collect import collect_org
from exchange_compliance.config import load_org_config
from exchange_compliance.facts import ServerProbe
from exchange_compliance.judge.certificates import thumbprint_of
from exchange_compliance.lab import control
from exchange_compliance.lab.scenario import load_scenario
from exchange_compliance.names import normalize_thumbprint

pytestmark = needs_lab

SEEDS_FAILURES = {
    ("ACL-01", "EX02"),  # KB 2898571
    ("AUTH-02", "EX03"),  # KB 4036163 (Exchange 2016 CU6)
    ("BE-02", "EX04"),  # Exchange 2013 Clients not able to connect using Outlook Anywhere
    ("BE-03", "EX04"),
    ("ACL-02", "EX05"),  # O365 Hybrid Wizard - Hybrid Agent Fails to Validate
    ("ACL-03", "EX05"),
    ("EWS-01", "EX06"),  # the same article
    ("AUTH-03", None),  # Exchange Server OWA and ECP not working
    ("AUTH-04", None),
}


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    lab_up("seeds")
    reports = tmp_path_factory.mktemp("reports")
    status, results, output = run_suite(reports)
    return status, results, output, reports


def test_seeds_fail_exactly_where_each_article_planted_its_fault(seeds_run):
    status, results, output, _ = seeds_run
    assert status == 1, output
    assert outcomes(results, "failed") == SEEDS_FAILURES
    assert outcomes(results, "error") == set()
    assert all(r["outcome"] == "passed" for r in results["rows"] if r["requirement"] == "GRP-01")


def test_kb_2898571_shows_the_chain_and_the_link_to_cut(seeds_run):
    _, results, _, _ = seeds_run
    acl01 = row(results, "ACL-01", "EX02")
    assert (
        acl01["severity"] == "critical"
        and acl01["source"].startswith("Error occurs in EMS, EAC, ECP, OWA")
        and "KB 2898571" in acl01["source"]
    )
    assert "EX02$ → Server Operators Team → Domain Admins" in acl01["message"]
    assert "(OD;CIID;CR;06386f89-befb-4e48-baa1-559fd9221f78;;" in acl01["message"]
    assert 'Remove-ADGroupMember -Identity "Server Operators Team" -Members "EX02$"' in acl01["fix"]
    assert "restart EX02" in acl01["fix"] and "gpresult /scope computer /r" in acl01["fix"]


def test_hybrid_agent_fix_names_the_real_domain_and_group(seeds_run):
    _, results, _, _ = seeds_run
    fix = row(results, "ACL-02", "EX05")["fix"]
    assert '-User "LAB\\Exchange Servers"' in fix and "EX05" in fix and "iisreset" in fix
    assert "protected" in row(results, "ACL-02", "EX05")["message"].lower()


def test_back_end_444_evidence_shows_the_presented_certificate_and_host_names(seeds_run):
    _, results, _, _ = seeds_run
    message = row(results, "BE-02", "EX04")["message"]
    assert "mail.contoso.com" in message and "ex04.lab.contoso.test" in message.lower()


def test_report_files_are_written_with_timestamped_copies(seeds_run):
    _, results, _, reports = seeds_run
    folder = reports / "lab"
    html = (folder / "latest.html").read_text()
    assert "ACL-01" in html and "Server Operators Team" in html
    assert (folder / "latest-facts.json").exists()
    assert len(list(folder.glob("2*.json"))) >= 2  # results and facts, timestamped
    assert results["servers"] == ["EX01", "EX02", "EX03", "EX04", "EX05", "EX06"]


def test_parallel_run_judges_the_same(seeds_run, tmp_path):
    _, serial, _, _ = seeds_run
    status, parallel, output = run_suite(tmp_path, "-n", "4")
    assert status == 1, output

    def comparable(results):
        return sorted((r["requirement"], r["server"], r["outcome"], r["message"], r["fix"]) for r in results["rows"])

    # The same facts are judged (collected once, handed to the workers): the rows are identical but the
    # time of collection, which certificate ages are judged against.
    assert [r[:3] for r in comparable(parallel)] == [r[:3] for r in comparable(serial)]
    assert len(parallel["rows"]) == len(serial["rows"])


@pytest.mark.parametrize("workers", [None, "4"])
def test_evidence_file_replays_to_the_same_rows_serial_or_parallel(seeds_run, tmp_path, workers):
    _, results, _, reports = seeds_run
    facts = reports / "lab" / "latest-facts.json"
    parallel = ("-n", workers) if workers else ()
    command_status, replayed, output = run_suite(tmp_path, "--org-snapshot", str(facts), *parallel)
    assert command_status == 1, output
    keep = ("requirement", "server", "outcome", "message", "fix")
    assert [{k: r[k] for k in keep} for r in replayed["rows"]] == [{k: r[k] for k in keep} for r in results["rows"]]


def test_healthy_org_passes_everywhere(tmp_path):
    lab_up("healthy")
    status, results, output = run_suite(tmp_path)
    assert status == 0, output
    assert outcomes(results, "failed", "error") == set()
    edge_rows = [r for r in results["rows"] if r["server"] == "EDGE01"]
    assert edge_rows and {r["outcome"] for r in edge_rows} <= {"passed", "not_applicable"}
    assert outcomes(results, "not_applicable") and all(s == "EDGE01" for _, s in outcomes(results, "not_applicable"))


def collect():
    config = load_org_config(REPO / "orgs" / "lab.toml")
    return collect_org(config)


def test_discovery_finds_exactly_the_scenarios_servers_and_probes_each():
    lab_up("seeds")
    scenario = load_scenario("seeds")
    facts = collect()
    directory = facts.directory
    assert [s.name for s in directory.servers] == [s.name for s in scenario.servers]
    for spec in scenario.servers:
        server = directory.server(spec.name)
        assert server.fqdn == spec.fqdn
        assert str(server.version) == spec.version
        assert set(server.role_names) == set(spec.roles)
        assert spec.name in directory.computers
        probe = facts.probes[spec.name]
        assert isinstance(probe, ServerProbe), probe
        assert probe.computer_name == spec.name
        # What 444 presents on the wire is the certificate the binding names.
        (bound,) = [b.certificate_hash for b in probe.ssl_bindings if b.ip_port == "0.0.0.0:444"]
        assert normalize_thumbprint(thumbprint_of(facts.handshakes[spec.name].der)) == bound


def test_unreachable_server_is_an_error_on_its_own_rows_only(tmp_path):
    lab_up("unreachable")
    started = time.monotonic()
    status, results, output = run_suite(tmp_path)
    assert time.monotonic() - started < 60
    assert status == 1, output
    errors = outcomes(results, "error")
    assert errors and {server for _, server in errors} == {"EX02"}
    assert outcomes(results, "failed") == set()
    message = row(results, "BE-01", "EX02")["message"]
    assert message == "could not be checked: WinRM on EX02: Connection refused (port 5986)"
    # The slow server (1.5 s a response) is checked like the others.
    assert {r["outcome"] for r in results["rows"] if r["server"] == "EX03"} == {"passed"}
    assert results["unreachable"] == ["EX02"]


def test_lab_down_stops_the_processes_up_started():
    state = lab_up("healthy")
    pids = [process["pid"] for process in state["processes"].values()]
    control.down(LAB_ROOT, say=lambda _message: None)
    assert control.status(LAB_ROOT) is None
    assert not any(running(pid) for pid in pids)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def test_a_server_past_its_timeout_is_an_error_and_does_not_hold_up_the_others():
    lab_up("unreachable")  # EX03 answers every WinRM message 1.5 s late: about 7 s for the whole probe
    config = dataclasses.replace(load_org_config(REPO / "orgs" / "lab.toml"), server_timeout_seconds=3)
    started = time.monotonic()
    facts = collect_org(config)
    assert time.monotonic() - started < 6
    assert isinstance(facts.probes["EX01"], ServerProbe)
    assert facts.probes["EX03"].reason == "no answer within the server timeout (3 s)"
    assert "Connection refused" in facts.probes["EX02"].reason


def test_a_server_that_never_answers_does_not_keep_a_nightly_run_from_ending(tmp_path):
    # EX02 takes ten minutes over every answer, WinRM and TLS: the run must end with the deadline, not when the
    # last request to EX02 gives up (lab.toml's 30 s read timeout, or never).
    scenario = tmp_path / "hung.toml"
    scenario.write_text('[[servers]]\nname = "EX01"\n\n[[servers]]\nname = "EX02"\nlatency_ms = 600000\n')
    control.up(LAB_ROOT, scenario_file=scenario, say=lambda _message: None)
    control.load_credentials(LAB_ROOT)
    org = lab_org_config(tmp_path / "hung.toml", ("server_timeout_seconds = 60", "server_timeout_seconds = 3"))
    command = [sys.executable, "-m", "pytest", "tests_env", "--org", str(org), "-q", "-o", f"cache_dir={tmp_path}"]
    started = time.monotonic()
    finished = subprocess.run(
        [*command, "--reports-dir", str(tmp_path / "reports")], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    assert finished.returncode == 1, finished.stdout + finished.stderr
    assert elapsed < 20, elapsed
    results = json.loads((tmp_path / "reports" / "hung" / "latest.json").read_text())
    assert results["unreachable"] == ["EX02"]
    assert "no answer within the server timeout (3 s)" in row(results, "BE-01", "EX02")["message"]


def test_include_patterns_that_match_no_server_are_exit_6_not_a_pass(tmp_path):
    # The live path: the DC answers with the lab's servers, and [servers] include leaves none of them to check.
    names = [server["name"] for server in lab_up("healthy")["servers"]]
    org = tmp_path / "nope.toml"
    config = (REPO / "orgs" / "lab.toml").read_text().replace('"../.lab/', f'"{LAB_ROOT}/')
    org.write_text(config + '\n[servers]\ninclude = ["NOPE*"]\n')
    status, results, output = run_suite(tmp_path / "reports", org=str(org))
    assert status == 6, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith(
        "exchange-compliance: nope: NOT CHECKED: the org could not be checked: no server was checked: the [servers] "
        f'patterns (include = ["NOPE*"]) select none of the {len(names)} servers ('
    )
    assert all(name in last for name in names)
    assert results["verdict"]["status"] == "unreachable" and results["rows"] == [] and results["servers"] == []
    evidence = json.loads((tmp_path / "reports" / "nope" / "latest-facts.json").read_text())
    assert evidence["facts"]["include"] == ["NOPE*"] and evidence["facts"]["checked"] == []
