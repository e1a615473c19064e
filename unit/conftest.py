"""Shared by the report, waiver, gate and exit-code tests: a hand-made org, and runs of tests_env against it.

`build_org` makes OrgFacts from the factories the judge tests share (factories.py: certificates, and directory
rights recorded from Samba), healthy unless faults are planted; `run_suite` runs the real
`pytest tests_env --org-snapshot FILE` in a subprocess, as an admin or a scheduler would, and returns its exit
status, output and the reports directory. The factories are imported where they are used: were they to break,
these tests would fail, not the collection of every test under unit/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from html import unescape
from pathlib import Path

# Imported once, before any test: pytester takes the modules a test imported out of sys.modules when the test ends,
# and cryptography's x509 classes imported again are not the ones its Rust bindings return (a certificate made in a
# later test would have no SubjectAlternativeName extension, by isinstance).
import cryptography.x509  # noqa: F401
import pytest

from exchange_compliance import snapshot
from exchange_compliance.facts import ExchangeServer, Handshake, JudgingSettings, OrgFacts, Unavailable, Version

# pytest-benchmark and hypothesis are kept out of tests_env runs (pyproject.toml's addopts): loaded here, by module.
pytest_plugins = ["pytester", "pytest_benchmark.plugin", "_hypothesis_pytestplugin"]

REPO = Path(__file__).resolve().parents[1]
TESTS_ENV = REPO / "tests_env"
ORG = "contoso-unit"  # no orgs/contoso-unit.* exists, so nothing in the repo changes what these runs see
AUTH_CN = "Microsoft Exchange Server Auth Certificate"
# Markup in names from AD: if the report ever rendered it, the browser would run it and retitle the page.
MARKUP = "<img src=x onerror=document.title=1337>"
# Every fault a test can plant, by name: "fault:SERVER" (an org fault takes no server).
FAULTS = (
    "backend-cert",  # BE-02/BE-03 (critical): 444 bound to another server's certificate
    "no-auth-cert",  # AUTH-02 (critical): the Auth certificate missing from the server's store
    "ews-http",  # EWS-01 (medium): an http InternalUrl
    "nested-admins",  # ACL-01 (critical): the computer nested into Domain Admins through a group named with markup
    "unreachable",  # every probe-based row an error: WinRM and TLS failed
)


def build_org(
    n: int = 4,
    faults: tuple[str, ...] = (),
    *,
    org: str = ORG,
    version: str = "15.1.2507.6",
    rename: bool | str = False,
    group: str = f"Server Operators {MARKUP}",
) -> OrgFacts:
    """EX01..EXn (Mailbox + Client Access, Exchange `version`) and EDGE1, healthy but for `faults`;
    `rename` gives the last EXn a name with markup in it, or the name it is (its host name stays); `group` names
    the group that nested-admins nests the computer into Domain Admins through."""
    from factories import NOW, acl_directory, auth_config, ews, probe, renamed, store_cert, thumb

    planted: dict[str, set[str]] = {}
    for fault in faults:
        name, _, server = fault.partition(":")
        assert name in FAULTS, name
        planted.setdefault(server, set()).add(name)

    def has(server: ExchangeServer, fault: str) -> bool:
        return fault in planted.get(server.host_name.upper(), set())  # by host name: a renamed server keeps them

    nested = [s for s, names in planted.items() if "nested-admins" in names]
    directory = acl_directory(
        n=n,
        member_of={s: ("ES", "ETS", "SOT") for s in nested},
        nesting={"SOT": ("DA",)},
        names={"SOT": group},
    )
    if rename:
        directory = renamed(directory, f"EX{n:02d}", rename if isinstance(rename, str) else f"EX{n:02d}{MARKUP}")
    major, minor, build, revision = (int(part) for part in version.split("."))
    servers = tuple(replace(s, version=Version(major, minor, build, revision)) for s in directory.servers)
    auth = _auth_certificate()
    vdirs = tuple(
        ews(s.name, f"{'http' if has(s, 'ews-http') else 'https'}://{s.fqdn}/EWS/Exchange.asmx", None)
        for s in servers
        if not s.is_edge
    )
    directory = replace(directory, servers=servers, auth_config=auth_config(thumb(auth)), virtual_directories=vdirs)
    probes: dict = {}
    handshakes: dict = {}
    for s in servers:
        if has(s, "unreachable"):
            probes[s.name] = Unavailable("winrm", s.name, "connection refused on 5986")
            handshakes[s.name] = Unavailable("tls", s.name, "connection refused on 444")
            continue
        if s.is_edge:
            probes[s.name] = replace(probe(), computer_name=s.name)
            continue
        own = _self_signed(s.host_name)
        bound = _self_signed("other") if has(s, "backend-cert") else own
        store = [store_cert(own, friendly_name="Microsoft Exchange"), store_cert(bound)]
        if not has(s, "no-auth-cert"):
            store.append(store_cert(auth))
        probes[s.name] = replace(probe(*store, backend=thumb(bound), frontend=thumb(own)), computer_name=s.name)
        handshakes[s.name] = Handshake(s.fqdn, "127.0.0.1", 444, bound, "TLSv1.2")  # type: ignore[arg-type]
    settings = JudgingSettings(hybrid=False, auth_certificate_warning_days=60)
    return OrgFacts(org, NOW, directory, tuple(s.name for s in servers), probes, handshakes, settings)


def _auth_certificate() -> bytes:
    from factories import NOW, make_cert

    return _cached("auth", lambda: make_cert(AUTH_CN, None, not_before=NOW - timedelta(days=365)))


def _self_signed(name: str) -> bytes:
    from factories import exchange_self_signed

    return _cached(name, lambda: exchange_self_signed(name))


_CERTS: dict[str, bytes] = {}


def _cached(name: str, make: object) -> bytes:
    # One certificate per name for the whole session: a 200-server org is built in well under a second.
    if name not in _CERTS:
        _CERTS[name] = make()  # type: ignore[operator]
    return _CERTS[name]


def report_data(html: Path) -> dict:
    """The data pytest-html builds its results table from (a JSON blob in an attribute): tests by node ID."""
    blob = re.search(r'data-jsonblob="([^"]*)"', html.read_text(encoding="utf-8"))
    assert blob is not None, f"{html} has no pytest-html data"
    return json.loads(unescape(blob.group(1)))


def report_rows(html: Path) -> list[dict]:
    """Every row of an HTML report, by outcome, requirement and server (None: the org). A row of pytest-html's
    table (failed, not checked) has its markup (`html`: cells, evidence, fix, log); a row the summary's script
    makes when its section is opened (waived, passed, not applicable) has its data (`message`, and `extra`: the
    evidence markup it is given, or None for the short form)."""
    rows = []
    for tests in report_data(html)["tests"].values():
        for test in tests:
            cells = "".join(test["resultsTableRow"])
            requirement = re.search(r'<td class="col-requirement"><b>([^<]*)</b>', cells)
            if requirement is None:  # a check that broke outside any requirement
                continue
            server = unescape(re.search(r'<td class="col-server">([^<]*)</td>', cells).group(1))
            outcome = "error" if 'data-outcome="Not checked"' in cells else test["result"].lower()
            extras = "".join(extra["content"] for extra in test["extras"] if extra["format_type"] == "html")
            server = None if server == "(org)" else server
            markup = cells + extras + test["log"]
            rows.append({"outcome": outcome, "requirement": requirement.group(1), "server": server, "html": markup})
    text = html.read_text(encoding="utf-8")
    data = re.search(r'<script type="application/json" id="excomp-data">(.*?)</script>', text, re.S)
    assert data is not None, f"{html} has no row data"
    found = json.loads(data.group(1))
    for outcome, items in found["rows"].items():
        for kind, server, message, extra in items:
            requirement = found["kinds"][kind][0]
            rows.append({"outcome": outcome, "requirement": requirement, "server": server, "message": message,
                         "extra": extra})  # fmt: skip
    return rows


def judged_run(
    rows: list, *, org: str = ORG, unreachable: str | None = None, changes: object = None, expected: int | None = None
) -> object:
    """A JudgedRun made in-process, for what reads one (latest.prom, notification): `rows` are results.Row;
    `expected`, how many rows a run of every requirement gives (more than `rows`: a partial run)."""
    from datetime import UTC, datetime

    from exchange_compliance.plugin.run_verdict import JudgedRun, judge_rows

    verdict = judge_rows(rows, "high", False, [], unreachable, expected)
    return JudgedRun(
        org_name=org,
        display_name=None,
        started=datetime(2026, 11, 22, 2, 30, tzinfo=UTC),
        duration=12.5,
        target=None,
        facts=None,
        source=None,
        rows=rows,
        verdict=verdict,
        line=f"{org}: {verdict.line()}",
        waivers=[],
        changes=changes,  # type: ignore[arg-type]
        fix_plan=None,
    )


# A live org whose only domain controller is a closed loopback port: refused at once. The credentials it names:
CREDENTIALS = {"T_LDAP_USER": "u@contoso.test", "T_LDAP_PASSWORD": "pw", "T_WINRM_USER": "u", "T_WINRM_PASSWORD": "pw"}


def live_org(folder: Path, extra: str = "", name: str = "prod") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        '[directory]\nservers = ["127.0.0.1"]\nport = 1\nuser_env = "T_LDAP_USER"\npassword_env = "T_LDAP_PASSWORD"\n'
        'timeout_seconds = 2\n\n[winrm]\nuser_env = "T_WINRM_USER"\npassword_env = "T_WINRM_PASSWORD"\n' + extra
    )
    return path


@dataclass
class SuiteRun:
    ret: int
    stdout: str
    stderr: str
    reports: Path  # reports/<org>/


def suite_command(workdir: Path, facts: OrgFacts | None, *args: str) -> list[str]:
    """`python -m pytest tests_env --org-snapshot <workdir>/facts.json --reports-dir <workdir>/reports ARGS`, with
    pytest's cache (--lf, --ff) in <workdir>/reports/.pytest_cache, as a run has it in reports/: never the
    repository's."""
    command = [sys.executable, "-m", "pytest", str(TESTS_ENV), "--reports-dir", str(workdir / "reports"), *args]
    command += ["-o", f"cache_dir={workdir / 'reports' / '.pytest_cache'}"]
    if facts is not None:
        command[4:4] = ["--org-snapshot", str(snapshot.write(facts, workdir / "facts.json"))]
    return command


def run_suite(workdir: Path, facts: OrgFacts | None, *args: str, timeout: float = 300) -> SuiteRun:
    """A run for a module-scoped fixture (pytester is per test): one run, many assertions on its outputs."""
    done = subprocess.run(
        suite_command(workdir, facts, *args), cwd=workdir, capture_output=True, text=True, timeout=timeout
    )
    return SuiteRun(done.returncode, done.stdout, done.stderr, workdir / "reports" / (facts.org if facts else ORG))


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run tests_env in a subprocess from the pytester directory: `suite(facts, *args, env={...})`."""

    def run(facts: OrgFacts | None, *args: str, env: dict[str, str] | None = None) -> SuiteRun:
        with monkeypatch.context() as patched:  # this run's environment only
            for name, value in (env or {}).items():
                patched.setenv(name, value)
            done = pytester.run(*suite_command(pytester.path, facts, *args), timeout=300)
        org = facts.org if facts is not None else ORG
        return SuiteRun(done.ret, done.stdout.str(), done.stderr.str(), pytester.path / "reports" / org)

    return run


@pytest.fixture(scope="session")
def faulty_report(tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """One run the HTML and browser tests read: failures, an unreachable server, a waiver, markup in AD names."""
    workdir = tmp_path_factory.mktemp("faulty-report")
    (workdir / "waivers.toml").write_text(
        f'[[waiver]]\nrequirement = "EWS-01"\nserver = "EX04{MARKUP}"\njustification = "EWS off on purpose {MARKUP}"\n'
        'expires = 2099-12-31\napproved_by = "CAB <change board>"\n'
    )
    faults = ("backend-cert:EX02", "nested-admins:EX02", "ews-http:EX03", "ews-http:EX04", "unreachable:EX01")
    run = run_suite(workdir, build_org(4, faults, rename=True), "--waivers", str(workdir / "waivers.toml"))
    assert run.ret == 1, run.stdout + run.stderr
    return run


@pytest.fixture(scope="session", autouse=True)
def _no_lab_left_running():
    """The lab org that lab tests brought up is stopped when the test session ends: no processes are left."""
    yield
    from lab_org import release_shared_lab

    release_shared_lab()
