"""Bringing the lab org up and down: a Samba DC plus the lab Exchange servers, from a scenario.

State lives under the lab root (default ./.lab, ignored by git). `down` stops only the processes `up`
started, by the ids it recorded, after checking they are still those processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from . import prerequisites
from .layout import AUDIT_ACCOUNT, DC_ADDRESS, DC_HOST, DOMAIN, NETBIOS_DOMAIN, REALM, LabLayout, server_address
from .scenario import Scenario, ScenarioError, generated_servers, load_scenario

Say = Callable[[str], None]
SERVERS_READY_SECONDS = 60


class LabError(Exception):
    pass


def _alive(pid: int, marker: str) -> bool:
    """Is `pid` running and still the process we started (its command line carries `marker`)?"""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in command_line


def status(root: Path) -> dict | None:
    """The running lab's state, or None when it is not (fully) running."""
    layout = LabLayout(root)
    try:
        state = json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return None
    processes = state.get("processes", {})
    if processes and all(_alive(p["pid"], p["marker"]) for p in processes.values()):
        return state
    return None


def _stop(pid: int, marker: str, seconds: float = 10) -> None:
    if not _alive(pid, marker):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _alive(pid, marker):
        time.sleep(0.1)
    if _alive(pid, marker):
        os.kill(pid, signal.SIGKILL)


def down(root: Path, say: Say = print) -> None:
    from .directory import stop_directory

    layout = LabLayout(root)
    try:
        state = json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        state = {}
    for name, process in state.get("processes", {}).items():
        if name != "directory":
            _stop(process["pid"], process["marker"])
    stop_directory(layout)
    layout.state_file.unlink(missing_ok=True)
    say("lab is down")


def _scenario(
    name: str | None, path: str | Path | None, servers: int | None, latency_ms: int, probe_seconds: float
) -> Scenario:
    try:
        scenario = load_scenario(name, path)
    except (OSError, ScenarioError) as exc:
        raise LabError(str(exc)) from None
    if servers:
        scenario = dataclasses.replace(scenario, servers=generated_servers(servers, latency_ms, probe_seconds))
    return scenario


def up(
    root: Path,
    scenario_name: str | None = None,
    scenario_file: str | Path | None = None,
    servers: int | None = None,
    say: Say = print,
    *,
    latency_ms: int = 0,
    probe_seconds: float = 0.0,
) -> dict:
    """Bring the lab up from a scenario; `servers` replaces its servers with that many generated ones, each
    answering after `latency_ms` and running the probe for `probe_seconds`."""
    from .certs import issue_certificates
    from .directory import AuthValues, DirectoryError, start_directory
    from .servers import write_server_state

    # Before anything starts: a missing package is one line naming it, not a Samba traceback from halfway.
    absent = prerequisites.missing(("lab",))
    if absent:
        raise LabError("\n".join(prerequisites.line(p) for p in absent))
    scenario = _scenario(scenario_name, scenario_file, servers, latency_ms, probe_seconds)
    layout = LabLayout(root)
    if layout.state_file.exists():
        down(root, say=lambda _message: None)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    now = datetime.now(UTC)
    # Meets AD's default complexity rules; new for every up, never written in a config.
    password = f"Lab-{secrets.token_urlsafe(18)}-9a"

    certificates = issue_certificates(scenario, now, layout.certs_dir, key_cache=layout.cache_dir / "rsa-keys")
    current, previous, upcoming = certificates.auth_thumbprints()
    effective = scenario.auth.next_effective_days
    auth = AuthValues(current, previous, upcoming, now + timedelta(days=effective) if effective is not None else None)
    say(f"starting the directory ({DC_HOST}) for scenario {scenario.name!r}")
    try:
        directory = start_directory(scenario, layout, auth, AUDIT_ACCOUNT, password)
    except DirectoryError as exc:
        raise LabError(str(exc)) from None
    write_server_state(scenario, certificates, layout, (NETBIOS_DOMAIN, AUDIT_ACCOUNT, password))

    ready = layout.state_dir / "servers.ready"
    ready.unlink(missing_ok=True)
    marker = "exchange_compliance.lab.servers"
    with open(layout.state_dir / "servers.log", "ab") as log:
        servers_process = subprocess.Popen(
            [sys.executable, "-m", marker, str(root)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + SERVERS_READY_SECONDS
    while not ready.exists():
        if servers_process.poll() is not None or time.monotonic() > deadline:
            log_tail = (layout.state_dir / "servers.log").read_text(errors="replace")[-600:]
            _stop(servers_process.pid, marker)
            raise LabError(f"the lab servers did not start: {log_tail}")
        time.sleep(0.05)

    hosts = [f"{DC_ADDRESS} {DC_HOST} dc01"]
    hosts += [f"{server_address(i)} {s.fqdn} {s.name.lower()}" for i, s in enumerate(scenario.servers)]
    layout.hosts_file.write_text("\n".join(hosts) + "\n")
    layout.credentials_file.write_text("")
    layout.credentials_file.chmod(0o600)
    layout.credentials_file.write_text(
        f"EXCOMP_LAB_USER={AUDIT_ACCOUNT}@{DOMAIN}\n"
        f"EXCOMP_LAB_WINRM_USER={NETBIOS_DOMAIN}\\{AUDIT_ACCOUNT}\n"
        f"EXCOMP_LAB_PASSWORD={password}\n"
    )
    layout.kerberos_file.write_text(
        f"EXCOMP_LAB_KEYTAB={layout.audit_keytab}\nEXCOMP_LAB_PRINCIPAL={AUDIT_ACCOUNT}@{REALM}\n"
    )
    state = {
        "scenario": scenario.name,
        "servers": [
            {"name": s.name, "fqdn": s.fqdn, "address": server_address(i)} for i, s in enumerate(scenario.servers)
        ],
        "started": now.isoformat(),
        "processes": {
            "directory": {"pid": directory.pid, "marker": "samba"},
            "servers": {"pid": servers_process.pid, "marker": marker},
        },
    }
    layout.state_file.write_text(json.dumps(state, indent=1))
    say(f"lab is up: scenario {scenario.name!r}, {len(scenario.servers)} servers, in {time.monotonic() - started:.1f}s")
    return state


def load_credentials(root: Path, kerberos: bool = False) -> None:
    """Put the lab's credentials in this process's environment, where orgs/lab.toml says they are; with
    `kerberos`, only the keytab's path and the principal (orgs/lab-kerberos.toml), and no password at all."""
    layout = LabLayout(root)
    if kerberos:
        for line in layout.credentials_file.read_text().splitlines():
            os.environ.pop(line.partition("=")[0], None)
    source = layout.kerberos_file if kerberos else layout.credentials_file
    for line in source.read_text().splitlines():
        name, _, value = line.partition("=")
        if name:
            os.environ[name] = value


def ensure_lab(root: Path, say: Say = print, scenario_name: str | None = None, kerberos: bool = False) -> dict:
    """The lab as it runs, or brought up (scenario `healthy` unless named) when it does not; its credentials in
    the environment (`kerberos`: the keytab's path and the principal only)."""
    state = status(root)
    if state is None:
        scenario_name = scenario_name or os.environ.get("EXCOMP_LAB_SCENARIO") or "healthy"
        say(f"the lab org is not running: bringing it up with scenario {scenario_name!r}")
        state = up(root, scenario_name=scenario_name, say=say)
    else:
        say(f"using the running lab org (scenario {state['scenario']!r}, {len(state['servers'])} servers)")
    load_credentials(root, kerberos)
    return state
