"""Benchmarks (pytest-benchmark) for the access check at scale: 200 servers, each checked as caller against every
server object (ACL-01: 40,000 checks), with 5 callers failing, and with all 200 failing on every object (the
failure path: evidence and fix). Run explicitly; the file name keeps it out of a plain `pytest unit/` run:

    pytest unit/bench_acl.py --benchmark-only -s
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from exchange_compliance.facts import Directory, ExchangeServer, Principal
from exchange_compliance.judge.access import check_right, computer_account, principal_token
from exchange_compliance.judge.memo import clear_caches
from exchange_compliance.judge.rights import (
    TOKEN_SERIALIZATION,
    exchange_servers_hold_right,
    token_serialization_not_denied,
)
from exchange_compliance.judge.security_descriptor import parse_descriptor

FIXTURE = json.loads((Path(__file__).parent / "data" / "descriptors.json").read_text())
DOMAIN = FIXTURE["domain_sid"]
TS = FIXTURE["guids"]["TS"]
BASE = "DC=lab,DC=contoso,DC=test"
SERVERS = "CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,CN=Contoso"
N = 200


def distinct_descriptor(case: str, i: int) -> bytes:
    """The recorded bytes with the owner's last sub-authority changed: 200 distinct descriptors, so the parse cache
    cannot fold them into one (real server objects differ at least in their explicit ACEs)."""
    data = bytearray.fromhex(FIXTURE["cases"][case]["hex"])
    owner = struct.unpack_from("<I", data, 4)[0]
    last = owner + 8 + 4 * (data[owner + 1] - 1)
    struct.pack_into("<I", data, last, 100000 + i)
    return bytes(data)


def build(trusted_subsystem_in_domain_admins: bool = False) -> Directory:
    """200 servers; with `trusted_subsystem_in_domain_admins` (KB 2898571's worst case) every caller is denied on every
    object by the deny for Domain Admins that each object inherits from the organization container."""

    def group(name: str, rid: int, *member_of: str) -> Principal:
        return Principal(
            f"CN={name},OU=Groups,{BASE}", f"{DOMAIN}-{rid}", name, tuple(f"CN={g},OU=Groups,{BASE}" for g in member_of)
        )

    groups = [
        group("Exchange Servers", 1117),
        group("Exchange Trusted Subsystem", 1118, *(("Domain Admins",) if trusted_subsystem_in_domain_admins else ())),
        group("Server Operators Team", 1200, "Domain Admins"),
        group("Domain Admins", 512),
    ]
    servers, computers = [], {}
    for i in range(N):
        name = f"EX{i:03d}"
        case = "server_explicit_deny" if i % 50 == 7 else "server_default"  # a few objects deny the team
        servers.append(ExchangeServer(name, f"CN={name},{SERVERS}", None, 6, None, None, distinct_descriptor(case, i)))
        teams = ("Server Operators Team",) if i % 40 == 3 else ()  # 5 callers nested into Domain Admins
        member_of = tuple(
            f"CN={g},OU=Groups,{BASE}" for g in ("Exchange Servers", "Exchange Trusted Subsystem", *teams)
        )
        computers[name] = Principal(
            f"CN={name},CN=Computers,{BASE}", f"{DOMAIN}-{5000 + i}", name, member_of, "computer", None, f"{DOMAIN}-515"
        )
    return Directory(
        domain_dn=BASE,
        configuration_dn=f"CN=Configuration,{BASE}",
        org_name="Contoso",
        org_dn="CN=Contoso",
        org_security_descriptor=None,
        well_known_groups={"exchange_servers": groups[0].dn, "exchange_trusted_subsystem": groups[1].dn},
        extended_rights={TOKEN_SERIALIZATION: TS, "ms-Exch-EPI-Impersonation": FIXTURE["guids"]["IMP"]},
        servers=tuple(servers),
        computers=computers,
        groups={g.dn: g for g in groups},
        auth_config=None,
        virtual_directories=(),
        domain_sid=DOMAIN,
    )


@pytest.fixture(scope="module")
def directory() -> Directory:
    return build()


def test_acl01_all_callers_cold(benchmark: BenchmarkFixture, directory: Directory) -> None:
    """The whole ACL-01 row set from nothing cached: 200 parses, 200 tokens, 40,000 checks, 5 failing callers."""

    def run() -> list:
        return [token_serialization_not_denied(directory, server) for server in directory.servers]

    verdicts = benchmark.pedantic(run, setup=clear_caches, rounds=15, iterations=1, warmup_rounds=1)
    assert sum(not v.met for v in verdicts) == 5  # EX003, EX043, ... (in the team, so in Domain Admins)


def test_acl01_all_callers_denied_everywhere_cold(benchmark: BenchmarkFixture) -> None:
    """Exchange Trusted Subsystem in Domain Admins: all 200 callers denied on all 200 objects through the inherited
    organization-level deny, so every row takes the failure path (evidence and fix for 200 objects each)."""
    directory = build(trusted_subsystem_in_domain_admins=True)

    def run() -> list:
        return [token_serialization_not_denied(directory, server) for server in directory.servers]

    verdicts = benchmark.pedantic(run, setup=clear_caches, rounds=5, iterations=1, warmup_rounds=1)
    assert not any(v.met for v in verdicts)
    # What the report and latest.json carry: one ACE's summary per row, not 200 object lines.
    lines = sum(len(v.evidence.splitlines()) + len(v.fix.splitlines()) for v in verdicts)
    details = sum(len(json.dumps(v.details)) for v in verdicts)
    benchmark.extra_info.update(report_lines=lines, details_bytes=details)
    print(f"\nover 200 rows: {lines} lines of evidence and fix, {details:,} bytes of details")
    # Per row: the ACE, the chain, the summary line; the cut, restart, gpresult, the confirmation, and the other way
    # out (removing the deny where it is set) in two comment lines. A row lists every object only when few deny.
    assert lines <= 12 * N


def test_check_right_40000_warm(benchmark: BenchmarkFixture, directory: Directory) -> None:
    """Only the checks: descriptors parsed and tokens built beforehand."""
    descriptors = [parse_descriptor(s.security_descriptor or b"", s.dn) for s in directory.servers]
    tokens = [principal_token(directory, computer_account(directory, s.name)) for s in directory.servers]

    def run() -> int:
        return sum(check_right(d, t, TS).outcome == "denied" for t in tokens for d in descriptors)

    denied = benchmark(run)
    assert denied == 5 * N  # the 5 nested callers are denied everywhere


def test_acl02_all_servers_cold(benchmark: BenchmarkFixture, directory: Directory) -> None:
    def run() -> list:
        return [exchange_servers_hold_right(directory, s, TOKEN_SERIALIZATION) for s in directory.servers]

    verdicts = benchmark.pedantic(run, setup=clear_caches, rounds=15, iterations=1, warmup_rounds=1)
    assert all(v.met for v in verdicts)
