"""Collecting facts: LDAP to Active Directory, one WinRM probe and one TLS handshake per server."""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime

from ..config import OrgConfig
from ..facts import ExchangeServer, Handshake, OrgFacts, ServerProbe, Unavailable
from .ldap import DirectoryReader, open_connection
from .tls import HandshakeFailed, fetch_certificate
from .winrm import ProbeFailed, run_probe

Progress = Callable[[str], None]


def select_servers(servers: tuple[ExchangeServer, ...], config: OrgConfig) -> tuple[ExchangeServer, ...]:
    """The config's include/exclude patterns (fnmatch, case-insensitive, on the name or the FQDN)."""

    def matches(server: ExchangeServer, patterns: tuple[str, ...]) -> bool:
        names = [server.name.lower(), (server.fqdn or "").lower()]
        return any(fnmatch.fnmatchcase(n, p.lower()) for p in patterns for n in names)

    return tuple(
        s for s in servers if (not config.include or matches(s, config.include)) and not matches(s, config.exclude)
    )


def collect_org(config: OrgConfig, progress: Progress = lambda _message: None) -> OrgFacts:
    """Read the org. Raises ConfigError (missing secret) or DirectoryUnreachable before touching any server."""
    directory_credentials = config.directory_credentials()
    winrm_credentials = config.winrm_credentials()
    started = time.monotonic()
    connection = open_connection(config, directory_credentials)
    try:
        directory = DirectoryReader(connection, config.directory.base_dn).read()
        searches = connection.usage.search_operations if connection.usage else None
    finally:
        connection.unbind()
    checked = select_servers(directory.servers, config)
    progress(
        f"directory: org {directory.org_name!r}, {len(directory.servers)} servers, {searches} LDAP searches "
        f"in {time.monotonic() - started:.1f}s; probing {len(checked)} servers"
    )

    def probe(server: ExchangeServer) -> ServerProbe | Unavailable:
        if not server.fqdn:
            return Unavailable("winrm", server.name, "the server object has no FQDN (networkAddress ncacn_ip_tcp)")
        try:
            return run_probe(server.fqdn, config, winrm_credentials)
        except ProbeFailed as exc:
            return Unavailable("winrm", server.name, str(exc))

    def handshake(server: ExchangeServer) -> Handshake | Unavailable:
        if not server.fqdn:
            return Unavailable("tls", server.name, "the server object has no FQDN (networkAddress ncacn_ip_tcp)")
        try:
            return fetch_certificate(
                server.fqdn, config.address_of(server.fqdn), config.backend_port, config.tls_timeout_seconds
            )
        except HandshakeFailed as exc:
            return Unavailable("tls", server.name, str(exc))

    started = time.monotonic()
    probes: dict[str, ServerProbe | Unavailable] = {}
    handshakes: dict[str, Handshake | Unavailable] = {}
    # I/O bound: threads. One unreachable server costs its own timeout, never the others' results.
    pool = ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="probe")
    try:
        jobs = {pool.submit(probe, s): (probes, s) for s in checked}
        jobs |= {pool.submit(handshake, s): (handshakes, s) for s in checked if s.is_mailbox}
        waves = math.ceil(len(jobs) / config.max_workers) if jobs else 0
        done, late = wait(jobs, timeout=config.server_timeout_seconds * max(waves, 1))
        for job in done:
            target, server = jobs[job]
            target[server.name] = job.result()
        for job in late:
            target, server = jobs[job]
            source = "winrm" if target is probes else "tls"
            target[server.name] = Unavailable(source, server.name, "no answer within the server timeout")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    failed = sorted({u.server for u in (*probes.values(), *handshakes.values()) if isinstance(u, Unavailable)})
    progress(
        f"servers: probed {len(checked)} in {time.monotonic() - started:.1f}s"
        + (f"; unreachable or failing: {', '.join(failed)}" if failed else "")
    )
    return OrgFacts(
        org=config.name,
        collected_at=datetime.now(UTC),
        directory=directory,
        checked=tuple(s.name for s in checked),
        probes=probes,
        handshakes=handshakes,
        settings=config.judging_settings(),
    )
