"""Collecting facts: LDAP to Active Directory, one WinRM probe and one TLS handshake per server."""

from __future__ import annotations

import fnmatch
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ..config import Credentials, OrgConfig
from ..facts import Directory, ExchangeServer, Handshake, OrgFacts, ServerProbe, Unavailable
from ..text import one_line
from . import kerberos
from .directory import DirectoryReader
from .ldap import DirectoryError, Sources, close, open_connection
from .tls import BACKEND_PORT, HandshakeFailed, fetch_certificate
from .winrm import ProbeFailed, check_transport, run_probe, timed_out

Progress = Callable[[str], None]
Fact = ServerProbe | Handshake | Unavailable


@dataclass(frozen=True)
class Job:
    source: str  # "winrm" (the probe) or "tls" (the handshake on 444)
    server: ExchangeServer


def select_servers(servers: tuple[ExchangeServer, ...], config: OrgConfig) -> tuple[ExchangeServer, ...]:
    """The config's include/exclude patterns (fnmatch, case-insensitive, on the name or the FQDN)."""

    def matches(server: ExchangeServer, patterns: tuple[str, ...]) -> bool:
        names = [server.name.lower(), (server.fqdn or "").lower()]
        return any(fnmatch.fnmatchcase(n, p.lower()) for p in patterns for n in names)

    return tuple(
        s for s in servers if (not config.include or matches(s, config.include)) and not matches(s, config.exclude)
    )


def collect_org(config: OrgConfig, progress: Progress = lambda _message: None, *, servers: bool = True) -> OrgFacts:
    """Read the org. Raises ConfigError (missing secret, unusable keytab, missing transport package), KerberosFailed
    (the KDC refused the run's ticket) or DirectoryUnreachable / DirectoryError before touching any server.
    `servers=False` reads the directory alone (which servers there are) and contacts no server: no probe and no
    handshake is in the facts."""
    directory_credentials = config.directory_credentials()
    winrm_credentials = config.winrm_credentials()
    check_transport(config)
    # Before any collecting thread: the ticket's cache becomes the process's default one, which pywinrm uses.
    ticket = kerberos.acquire(config)
    if ticket is not None and ticket.principal:
        progress(f"kerberos: a ticket for {ticket.principal} from {ticket.keytab}")
    started = time.monotonic()
    credentials = ticket if config.directory.auth == "kerberos" else directory_credentials
    bound = open_connection(config, credentials)
    # The global catalog and the DCs of other domains, opened as the read needs them.
    sources = Sources(config, credentials, bound)  # type: ignore[arg-type]
    try:
        reader = DirectoryReader(bound.connection, config.directory.base_dn, sources)
        directory = reader.read()
        searches = f"{reader.round_trips} LDAP round trips"
    except DirectoryError as exc:
        # Which DC broke off or referred matters once there are several; the DC's words never carry the password.
        reason = one_line(str(exc), directory_credentials.password if directory_credentials else None, limit=1000)
        raise DirectoryError(f"{bound.controller}: {reason}") from None
    finally:
        sources.close()
        close(bound.connection)
    directory = replace(directory, domain_controller=bound.controller, skipped_controllers=bound.skipped)
    checked = select_servers(directory.servers, config)
    skipped = f" ({'; '.join(bound.skipped)} skipped)" if bound.skipped else ""
    progress(
        f"directory: {bound.controller}{skipped}: org {directory.org_name!r}, {len(directory.servers)} servers, "
        f"{searches} in {time.monotonic() - started:.1f}s{_forest_note(directory)}; "
        + (f"probing {len(checked)} servers" if servers else f"{len(checked)} to check, none contacted")
    )
    started = time.monotonic()
    probes, handshakes = collect_servers(checked, config, winrm_credentials) if servers else ({}, {})
    facts = OrgFacts(
        org=config.name,
        collected_at=datetime.now(UTC),
        directory=directory,
        checked=tuple(s.name for s in checked),
        probes=probes,
        handshakes=handshakes,
        settings=config.judging_settings(),
        include=config.include,
        exclude=config.exclude,
    )
    if servers:
        progress(f"servers: probed {len(checked)} in {time.monotonic() - started:.1f}s{_failures(facts)}")
    return facts


def _forest_note(directory: Directory) -> str:
    """ ", global catalog gc01:3269" or why not; and each domain that could not be read."""
    catalog = directory.global_catalog or f"none ({directory.global_catalog_unavailable})"
    unread = [f"{d.netbios_name or d.dns_name} not read ({d.unavailable})" for d in directory.domains if d.unavailable]
    return "".join(f", {part}" for part in [f"global catalog {catalog}", *unread])


def _failures(facts: OrgFacts) -> str:
    """What the progress line adds about servers that could not be read: a failure common to every server first,
    since that is the org config's (a password, a CA file, a port), not the servers'."""
    everywhere = facts.same_failure_everywhere()
    if everywhere is not None:
        return f"; every server failed the same way, so check the org config first: {everywhere}"
    return f"; could not read: {facts.unreachable_text(limit=3)}" if facts.unreachable() else ""


def collect_servers(
    servers: tuple[ExchangeServer, ...], config: OrgConfig, credentials: Credentials | None
) -> tuple[dict[str, ServerProbe | Unavailable], dict[str, Handshake | Unavailable]]:
    """The WinRM probe of every server and the TLS handshake of every mailbox server, `max_workers` at a time.

    Each job has its own deadline (server_timeout_seconds from its start): a server past it, or one whose probe
    broke in any way, is Unavailable on its own rows, and every other server is still checked.
    """
    jobs = [Job("winrm", s) for s in servers] + [Job("tls", s) for s in servers if s.is_mailbox]
    done: queue.SimpleQueue[tuple[int, Fact]] = queue.SimpleQueue()
    facts: dict[int, Fact] = {}
    running: dict[int, float] = {}  # job -> its deadline
    waiting = list(reversed(range(len(jobs))))
    timeout = config.server_timeout_seconds
    while waiting or running:
        while waiting and len(running) < config.max_workers:
            index = waiting.pop()
            running[index] = time.monotonic() + timeout
            # A daemon thread, not a ThreadPoolExecutor: the executor's threads are joined at interpreter exit,
            # so one server that never answers kept a nightly run from ever ending. A job past its deadline is
            # abandoned here (a new thread takes its place) and gives up by itself shortly after (run_probe cuts
            # each request to the deadline); if the process ends first, the daemon thread does not hold it.
            threading.Thread(
                target=_run_job,
                args=(jobs[index], index, running[index], config, credentials, done),
                name=f"{jobs[index].source}-{jobs[index].server.name}",
                daemon=True,
            ).start()
        try:
            index, fact = done.get(timeout=max(0.0, min(running.values()) - time.monotonic()))
            if index in running:  # an abandoned job's late answer is dropped: its row already says why
                del running[index]
                facts[index] = fact
        except queue.Empty:
            pass
        now = time.monotonic()
        for index in [i for i, deadline in running.items() if deadline <= now]:
            del running[index]
            job = jobs[index]
            facts[index] = Unavailable(job.source, job.server.name, timed_out(timeout))
    probes: dict[str, ServerProbe | Unavailable] = {}
    handshakes: dict[str, Handshake | Unavailable] = {}
    for index, job in enumerate(jobs):
        target = probes if job.source == "winrm" else handshakes
        target[job.server.name] = facts[index]  # type: ignore[assignment]
    return probes, handshakes


def _run_job(
    job: Job,
    index: int,
    deadline: float,
    config: OrgConfig,
    credentials: Credentials | None,
    done: queue.SimpleQueue[tuple[int, Fact]],
) -> None:
    try:
        fact = _collect(job, deadline, config, credentials)
    except Exception as exc:  # one server's surprise (a proxy's HTML, a pywinrm KeyError) is that server's alone
        fact = Unavailable(job.source, job.server.name, describe(exc))
    done.put((index, fact))


def _collect(job: Job, deadline: float, config: OrgConfig, credentials: Credentials | None) -> Fact:
    server = job.server
    if not server.fqdn:
        return Unavailable(job.source, server.name, "the server object has no FQDN (networkAddress ncacn_ip_tcp)")
    try:
        if job.source == "winrm":
            return run_probe(server.fqdn, config, credentials, deadline)
        # Each socket operation waits at most the TLS timeout, and never past the server's deadline.
        seconds = max(0.1, min(config.tls_timeout_seconds, deadline - time.monotonic()))
        return fetch_certificate(server.fqdn, config.address_of(server.fqdn), seconds, BACKEND_PORT)
    except (ProbeFailed, HandshakeFailed) as exc:
        return Unavailable(job.source, server.name, str(exc))


def describe(exc: BaseException) -> str:
    """`<Type>: <message>`, one line: what an unexpected error says about one server."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else '(no message)'}"
