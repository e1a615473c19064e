"""The lab's directory: a real Samba AD DC carrying Exchange's configuration objects.

The suite discovers everything over LDAPS as in production, so the lab DC must look like an AD forest
with Exchange installed, for every attribute the suite reads. How:

- once per cache key (schema file, Samba version, FORMAT): provision a DC with samba-tool, extend its schema
  with exchange_schema.ldif, give it an LDAPS certificate from a lab CA; keep the tree under layout.cache_dir;
- on every start: copy the cached tree to layout.samba_dir (fresh each up), write the scenario's objects
  offline in one process and one transaction (_samba_worker.py, under the system python that has Samba's
  bindings), export the keytabs of the audit account and of the lab servers' computer accounts from the same
  process, write a krb5.conf for the realm, start `samba` in the foreground as our child in its own session,
  wait for LDAPS, and check that the audit account reads what the suite needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from exchange_compliance.lab import dc_tls, prerequisites
from exchange_compliance.lab.layout import DC_ADDRESS, DC_HOST, DOMAIN, NETBIOS_DOMAIN, REALM, LabLayout
from exchange_compliance.lab.populate import DOMAIN_DN, Dns, build_plan
from exchange_compliance.lab.prerequisites import SYSTEM_PYTHON
from exchange_compliance.lab.scenario import Scenario

FORMAT = 1  # bump when what the cache holds, or how it is built (here or in the worker's schema step), changes
LDAPS_PORT = 636
KDC_PORT = 88
SCHEMA_LDIF = Path(__file__).with_name("exchange_schema.ldif")
WORKER = Path(__file__).with_name("_samba_worker.py")
START_TIMEOUT = 60.0


class DirectoryError(RuntimeError):
    pass


@dataclass(frozen=True)
class DirectoryInfo:
    pid: int  # samba's master process, started by us
    host: str  # layout.DC_HOST
    address: str  # layout.DC_ADDRESS
    ldaps_port: int
    ca_file: Path  # PEM of the CA that signed the LDAPS certificate (a copy at layout.dc_ca_file)
    domain_dn: str


@dataclass(frozen=True)
class AuthValues:
    """What to write in CN=Auth Configuration."""

    current: str | None  # thumbprints, upper-case hex
    previous: str | None
    next: str | None
    next_effective: datetime | None  # UTC


# --- prerequisites and the cache -----------------------------------------------------------------------


def _check_prerequisites() -> None:
    absent = prerequisites.missing(("lab",))
    if absent:
        raise DirectoryError("\n".join(prerequisites.line(p) for p in absent))
    if os.geteuid() != 0:
        raise DirectoryError("the lab DC needs root: samba binds ports 88, 389 and 636")


def samba_version() -> str:
    return subprocess.run(["samba", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def cache_key() -> str:
    digest = hashlib.sha256(f"format {FORMAT}\n{samba_version()}\n".encode())
    digest.update(SCHEMA_LDIF.read_bytes())
    return digest.hexdigest()[:16]


def _last_lines(text: str, count: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


def _write_smb_conf(samba_dir: Path, *, schema_updates: bool = False) -> Path:
    """A minimal DC configuration: only the services the suite talks to, on loopback, logging locally."""
    lines = [
        "[global]",
        "\tnetbios name = DC01",
        f"\trealm = {DOMAIN.upper()}",
        f"\tworkgroup = {NETBIOS_DOMAIN}",
        "\tserver role = active directory domain controller",
        "\tinterfaces = lo",
        "\tbind interfaces only = yes",
        "\tserver services = ldap, kdc",
        f"\tprivate dir = {samba_dir}/private",
        f"\tlock directory = {samba_dir}",
        f"\tstate directory = {samba_dir}/state",
        f"\tcache directory = {samba_dir}/cache",
        f"\tbinddns dir = {samba_dir}/bind-dns",
        f"\tpid directory = {samba_dir}/run",  # not /run/samba: a system samba may use that one
        f"\tlog file = {samba_dir}/samba.log",
        "\tlogging = file",
        "\tlog level = 1 auth_audit:5",
        # As Active Directory: SASL binds (Kerberos) over LDAPS without a security layer, which Samba's default
        # (yes) refuses; without TLS, SASL binds must still be signed or sealed.
        "\tldap server require strong auth = allow_sasl_over_tls",
        "\tmax log size = 10000",
    ]
    if schema_updates:  # only while the cache is built; the running lab DC keeps Samba's default (refused)
        lines.append("\tdsdb:schema update allowed = true")
    path = samba_dir / "etc" / "smb.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run_worker(args: list[str], what: str, stdin: str | None = None) -> str:
    result = subprocess.run([SYSTEM_PYTHON, str(WORKER), *args], input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise DirectoryError(f"{what} failed:\n{_last_lines(result.stderr or result.stdout)}")
    return result.stdout


def _build_cache(target: Path) -> None:
    building = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(building, ignore_errors=True)
    provision = [
        "samba-tool", "domain", "provision", f"--targetdir={building}",
        f"--realm={DOMAIN.upper()}", f"--domain={NETBIOS_DOMAIN}", "--server-role=dc", "--dns-backend=NONE",
        f"--host-name={DC_HOST.split('.')[0]}", f"--adminpass={secrets.token_urlsafe(18)}Aa1!",
        "--option=interfaces=lo", "--option=bind interfaces only=yes",
    ]  # fmt: skip
    result = subprocess.run(provision, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise DirectoryError(f"samba-tool domain provision failed:\n{_last_lines(result.stderr + result.stdout)}")
    try:
        _write_smb_conf(building, schema_updates=True)
        _run_worker(["schema", str(building), str(SCHEMA_LDIF)], "extending the schema")
        _write_smb_conf(building)
        dc_tls.write_dc_tls(building / "private" / "tls", DC_HOST, DC_ADDRESS)
        try:
            building.rename(target)
        except OSError:  # another `lab up` finished the same cache first: use theirs
            if not target.exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def ensure_cache(layout: LabLayout) -> Path:
    """The provisioned, schema-extended DC for this Samba and schema; built (about 8 s) when missing."""
    target = layout.cache_dir / f"samba-dc-{cache_key()}"
    if not target.exists():
        layout.cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in layout.cache_dir.glob("samba-dc-*"):  # ours, for another schema or Samba version
            shutil.rmtree(stale, ignore_errors=True)
        _build_cache(target)
    return target


# --- the process --------------------------------------------------------------------------------------


def _pid_file(layout: LabLayout) -> Path:
    return layout.state_dir / "directory.json"


def _our_samba(layout: LabLayout) -> int | None:
    """The pid we recorded, if that process still runs samba (a recycled pid is not ours)."""
    try:
        pid = json.loads(_pid_file(layout).read_text(encoding="utf-8"))["pid"]
        # samba rewrites its title ("samba: root process"), so look at the executable; and we started it
        # as the leader of its own session.
        executable = Path(os.readlink(f"/proc/{pid}/exe")).name
        leader = os.getsid(pid) == pid
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if executable == "samba" and leader else None


def directory_running(layout: LabLayout) -> bool:
    return _our_samba(layout) is not None


def stop_directory(layout: LabLayout) -> None:
    """Stop the samba we started: the process group of the session it leads (by the recorded pid), which holds
    its workers and nothing else. Returns once they are gone, so the ports are free for the next start."""
    pid = _our_samba(layout)
    if pid is not None:
        for sig, seconds in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + seconds
            while _group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _group_alive(pid):
                break
    _pid_file(layout).unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs; zombies do not count (our own child is reaped here, one
    left by an earlier `lab up` waits for init)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):  # fields: state, ppid, pgrp, ...
            return True
    return False


def _check_port_free() -> None:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((DC_ADDRESS, LDAPS_PORT)) == 0:
            raise DirectoryError(
                f"port {LDAPS_PORT} on {DC_ADDRESS} is busy: something not started by this lab listens there "
                f"(see `ss -ltnp 'sport = :{LDAPS_PORT}'`)"
            )


def _connect(ca_file: Path, user: str, password: str):
    import ldap3  # here, so the module imports without ldap3 for the plan-only unit tests

    server = ldap3.Server(
        DC_ADDRESS,
        port=LDAPS_PORT,
        use_ssl=True,
        tls=ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file), valid_names=[DC_HOST]),
        connect_timeout=2,
    )
    return ldap3.Connection(server, f"{user}@{DOMAIN}", password, auto_bind=True, receive_timeout=10)


def _wait_for_ldaps(process: subprocess.Popen, layout: LabLayout, user: str, password: str):
    from ldap3.core.exceptions import LDAPBindError

    deadline = time.monotonic() + START_TIMEOUT
    log = layout.samba_dir / "samba.log"
    last_error: Exception | None = None
    refused_since: float | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _last_lines(log.read_text(errors="replace")) if log.exists() else "(no log)"
            raise DirectoryError(f"samba exited with status {process.returncode} while starting; {log}:\n{tail}")
        try:
            return _connect(layout.dc_ca_file, user, password)
        except LDAPBindError as exc:  # LDAPS answers; a refusal that lasts is not a slow start
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since > 3:
                raise DirectoryError(f"LDAPS is up but refuses the audit account {user}@{DOMAIN}: {exc}") from None
            last_error = exc
        except Exception as exc:  # not up yet: refused, reset, or closed before the database is open
            last_error = exc
        time.sleep(0.1)
    raise DirectoryError(f"LDAPS on {DC_ADDRESS}:{LDAPS_PORT} did not answer in {START_TIMEOUT:.0f} s: {last_error}")


def _check_audit_access(conn, scenario: Scenario) -> None:
    """The suite reads these as the audit account; fail the up, not the suite, when it cannot."""
    from ldap3 import BASE
    from ldap3.protocol.microsoft import security_descriptor_control

    dns = Dns(scenario.org_name)
    problems = []
    conn.search(dns.org, "(objectClass=*)", BASE, attributes=["nTSecurityDescriptor"],
                controls=security_descriptor_control(sdflags=0x07))  # fmt: skip
    if not conn.entries or not conn.entries[0].entry_raw_attribute("nTSecurityDescriptor"):
        problems.append(f"nTSecurityDescriptor of {dns.org}")
    servers = [
        entry
        for entry in conn.extend.standard.paged_search(
            dns.servers,
            "(objectCategory=msExchExchangeServer)",
            attributes=["nTSecurityDescriptor"],
            controls=security_descriptor_control(sdflags=0x07),
            paged_size=500,
            generator=True,
        )
        if entry["type"] == "searchResEntry" and entry["raw_attributes"].get("nTSecurityDescriptor")
    ]
    if len(servers) != len(scenario.servers):
        problems.append(f"the server objects and their descriptors ({len(servers)} of {len(scenario.servers)})")
    computer = next((s for s in scenario.servers if not s.is_edge), None)
    if computer is not None:
        conn.search(Dns.computer(computer.name), "(objectClass=*)", BASE, attributes=["tokenGroups", "memberOf"])
        if not conn.entries or not conn.entries[0].entry_raw_attribute("tokenGroups"):
            problems.append(f"tokenGroups of {Dns.computer(computer.name)}")
    if problems:
        raise DirectoryError("the audit account cannot read: " + "; ".join(problems))


def start_directory(
    scenario: Scenario, layout: LabLayout, auth: AuthValues, audit_user: str, audit_password: str
) -> DirectoryInfo:
    """Start a fresh lab DC holding `scenario`'s Exchange objects; return once LDAPS serves them."""
    _check_prerequisites()
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    stop_directory(layout)  # a DC of ours left from an earlier up
    _check_port_free()
    cache = ensure_cache(layout)
    shutil.rmtree(layout.samba_dir, ignore_errors=True)
    shutil.copytree(cache, layout.samba_dir, symlinks=True)
    conf = _write_smb_conf(layout.samba_dir)
    plan = build_plan(
        scenario,
        auth_current=auth.current,
        auth_previous=auth.previous,
        auth_next=auth.next,
        auth_next_effective=auth.next_effective,
        audit_user=audit_user,
        audit_password=audit_password,
    )
    keytab_paths = {"audit": layout.audit_keytab, "servers": layout.servers_keytab}
    plan["keytabs"] = [{"path": str(keytab_paths[k]), "principals": v} for k, v in plan["keytabs"].items()]
    _run_worker(["populate", str(layout.samba_dir), "-"], f"populating the directory for {scenario.name}",
                stdin=json.dumps(plan))  # fmt: skip
    write_krb5_conf(layout.krb5_conf)
    shutil.copyfile(layout.samba_dir / "private" / "tls" / "ca.pem", layout.dc_ca_file)
    with open(layout.samba_dir / "samba.stdout", "wb") as output:
        process = subprocess.Popen(
            ["samba", "--foreground", "--no-process-group", "-s", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and process group: stop_directory kills exactly that
        )
    _pid_file(layout).write_text(json.dumps({"pid": process.pid, "samba_dir": str(layout.samba_dir)}))
    try:
        conn = _wait_for_ldaps(process, layout, audit_user, audit_password)
        try:
            _check_audit_access(conn, scenario)
        finally:
            conn.unbind()
    except BaseException:
        stop_directory(layout)
        raise
    return DirectoryInfo(
        pid=process.pid,
        host=DC_HOST,
        address=DC_ADDRESS,
        ldaps_port=LDAPS_PORT,
        ca_file=layout.dc_ca_file,
        domain_dn=DOMAIN_DN,
    )


def write_krb5_conf(path: Path) -> None:
    """The realm as a client outside it needs it: the KDC by address (the lab has no DNS), no reverse lookups
    or canonicalisation of host names (a service ticket is asked for by the name the suite was given)."""
    path.write_text(
        "[libdefaults]\n"
        f"\tdefault_realm = {REALM}\n"
        "\tdns_lookup_kdc = false\n"
        "\tdns_lookup_realm = false\n"
        "\trdns = false\n"
        "\tdns_canonicalize_hostname = false\n"
        "[realms]\n"
        f"\t{REALM} = {{\n\t\tkdc = {DC_ADDRESS}:{KDC_PORT}\n\t}}\n"
        "[domain_realm]\n"
        f"\t.{DOMAIN} = {REALM}\n"
        f"\t{DOMAIN} = {REALM}\n",
        encoding="utf-8",
    )


def render_sddl(descriptor: bytes, domain_sid: str | None = None) -> str:
    """A binary security descriptor as Samba renders it in SDDL (for tests and diagnostics); given the domain
    SID, the domain's well-known groups come out as aliases (DA, EA, SA)."""
    import base64

    args = ["sddl", domain_sid] if domain_sid else ["sddl"]
    return _run_worker(args, "rendering a descriptor", stdin=base64.b64encode(descriptor).decode()).strip()
