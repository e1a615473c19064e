"""The lab's Exchange servers on the wire: per server, WinRM over HTTPS on 5986 and the Exchange Back End's TLS
on 444, each on the server's own loopback address.

`lab up` calls write_server_state() and then runs `python -m exchange_compliance.lab.servers LAB_ROOT`, which
serves until SIGTERM and writes state/servers.ready once every listener is bound. The suite cannot tell these
from Windows servers: pywinrm (NTLM or Kerberos, certificate validation) runs the probe and gets what probe.ps1
prints on Windows; the handshake on 444 presents the certificate IIS has bound. Anything else is refused as
Windows would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import resource
import selectors
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spnego.channel_bindings import GssChannelBindings

from ..collect.kerberos import tls_server_end_point
from ..collect.probe import CMD_LINE_LIMIT, PROBE_ARGS_PREFIX, probe_script
from .certs import IssuedCertificate, LabCertificates
from .layout import BACKEND_PORT, DOMAIN, WINRM_PORT, LabLayout, server_address
from .probe_output import ServerState, StoreEntry, render_probe_output, round_trip
from .scenario import Scenario, ServerSpec
from .winrm_http import Endpoint, WinRMHandler
from .wsman import CommandResult, ShellHost

__all__ = ["ServerState", "load_server_state", "render_probe_output", "serve", "write_server_state"]

log = logging.getLogger(__name__)

SERVERS_FILE = "servers.json"
READY_FILE = "servers.ready"
NTLM_USERS_FILE = "ntlm-users"
# Import-Module WebAdministration's first-use progress record: Windows PowerShell writes it to stderr as
# CLIXML over WinRM even when the script succeeds, so a collector must not read stderr as failure.
PROGRESS_CLIXML = (
    '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    '<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.'
    "</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj></Objs>"
)
NOT_RECOGNIZED = "'{0}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
LINE_TOO_LONG = "The command line is too long.\r\n"


# ------------------------------------------------------------------------------------------------ state


def write_server_state(
    scenario: Scenario,
    certs: LabCertificates,
    layout: LabLayout,
    credentials: tuple[str, str, str],
    *,
    addresses: Sequence[str] | None = None,
    now: datetime | None = None,
) -> Path:
    """Write what the server process needs under layout.state_dir; returns the servers file.

    credentials = (NetBIOS domain, user, password): the account NTLM accepts. `addresses` overrides
    layout.server_address(i) (tests use it to stay clear of a running lab).
    """
    now = now or datetime.now(UTC)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.certs_dir.mkdir(parents=True, exist_ok=True)
    _write_private(layout.state_dir / NTLM_USERS_FILE, _ntlm_user_lines(credentials))
    layout.winrm_ca_file.write_bytes(certs.ca.pem)

    written: set[str] = set()

    def keep(cert: IssuedCertificate) -> str:
        # One PEM file per certificate, named by thumbprint: its certificate, then its key for TLS.
        if cert.thumbprint not in written:
            _write_private(layout.certs_dir / f"{cert.thumbprint}.pem", (cert.pem + cert.key_pem).decode())
            written.add(cert.thumbprint)
        return cert.thumbprint

    servers = []
    for index, server in enumerate(scenario.servers):
        address = addresses[index] if addresses is not None else server_address(index)
        state = _server_state(scenario, certs, server, address, now - timedelta(days=2, minutes=37 * index))
        named = [*scenario.store_of(server), server.frontend_certificate, server.backend_certificate]
        for name in [*named, server.presented_certificate]:
            if name and name != "none":
                keep(certs.for_server(server.name, name))
        keep(certs.winrm_for(server.name))
        row = asdict(state)
        row["store"] = [{k: v for k, v in asdict(e).items() if k != "der"} for e in state.store]
        servers.append(row)
    path = layout.state_dir / SERVERS_FILE
    path.write_text(json.dumps({"version": 1, "servers": servers}, indent=1), encoding="utf-8")
    return path


def load_server_state(layout: LabLayout) -> list[ServerState]:
    document = json.loads((layout.state_dir / SERVERS_FILE).read_text(encoding="utf-8"))
    states = []
    for row in document["servers"]:
        store = tuple(
            StoreEntry(der=_der(layout, e["thumbprint"]), **{k: v for k, v in e.items() if k != "der"})
            for e in row["store"]
        )
        states.append(ServerState(**{**row, "store": store}))
    return states


def _server_state(
    scenario: Scenario, certs: LabCertificates, server: ServerSpec, address: str, boot: datetime
) -> ServerState:
    store = tuple(
        StoreEntry(
            der=(cert := certs.for_server(server.name, name)).der,
            thumbprint=cert.thumbprint,
            friendly_name=cert.friendly_name,
            has_private_key=name not in server.no_private_key,
        )
        for name in dict.fromkeys(scenario.store_of(server))
    )
    # Edge Transport servers have no IIS: no sites, no bindings, nothing on 444.
    has_iis = not server.is_edge
    backend = server.backend_certificate if has_iis and server.backend_certificate != "none" else None
    presented = (server.presented_certificate or backend) if backend else None
    in_store = {name: name not in server.no_private_key for name in scenario.store_of(server)}

    def thumb(name: str | None) -> str | None:
        return certs.for_server(server.name, name).thumbprint if name else None

    return ServerState(
        name=server.name,
        fqdn=server.fqdn,
        address=address,
        version=server.version,
        boot=round_trip(boot),
        store=store,
        has_iis=has_iis,
        backend_thumbprint=thumb(backend),
        frontend_thumbprint=thumb(server.frontend_certificate) if has_iis else None,
        presented_thumbprint=thumb(presented),
        # http.sys needs the private key to complete a handshake; a certificate it finds without one fails it.
        presented_has_key=in_store.get(presented, True) if presented else True,
        winrm_thumbprint=certs.winrm_for(server.name).thumbprint,
        latency_ms=server.latency_ms,
        probe_seconds=server.probe_seconds,
        unreachable=server.unreachable,
    )


def _ntlm_user_lines(credentials: tuple[str, str, str]) -> str:
    domain, user, password = credentials
    # Windows accepts the account as DOMAIN\user, dns.domain\user, user@dns.domain, or with no domain.
    forms = [f"{domain}:{user}", f"{DOMAIN}:{user}", f":{user}@{DOMAIN}", f":{user}"]
    return "".join(f"{form}:{password}\n" for form in forms)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _der(layout: LabLayout, thumb: str) -> bytes:
    cert = x509.load_pem_x509_certificate(_pem_path(layout, thumb).read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def _pem_path(layout: LabLayout, thumb: str) -> Path:
    return layout.certs_dir / f"{thumb}.pem"


# ------------------------------------------------------------------------------------------------ commands


def run_command(state: ServerState, command_line: str, skip_cmd_shell: bool) -> CommandResult | None:
    """What the server gives for a command line: the probe's output for the suite's probe, else cmd.exe's refusal."""
    # Every command is logged, so a test can show the suite ran nothing but its read-only probe.
    log.info("%s command: %s", state.name, "probe" if is_probe_command(command_line) else command_line[:200])
    if not skip_cmd_shell and len(command_line) > CMD_LINE_LIMIT:
        return CommandResult("", LINE_TOO_LONG, 1)
    if is_probe_command(command_line):
        return CommandResult(render_probe_output(state), PROGRESS_CLIXML, 0, state.probe_seconds)
    if skip_cmd_shell:
        return None  # CreateProcess finds no such program: a WS-Man fault
    tokens = command_line.split()
    if not tokens:
        return CommandResult("", "", 0)
    return CommandResult("", NOT_RECOGNIZED.format(tokens[0].strip('"')), 1)


def is_probe_command(command_line: str) -> bool:
    """`powershell -NoProfile -NonInteractive -EncodedCommand <probe.ps1>` (names compared as Windows does)."""
    tokens = command_line.split()
    if len(tokens) != 2 + len(PROBE_ARGS_PREFIX):
        return False
    program = tokens[0].strip('"').lower().replace("/", "\\").rsplit("\\", 1)[-1]
    if program not in ("powershell", "powershell.exe"):
        return False
    if [t.lower() for t in tokens[1:-1]] != [a.lower() for a in PROBE_ARGS_PREFIX]:
        return False
    try:
        return base64.b64decode(tokens[-1], validate=True).decode("utf-16-le") == probe_script()
    except (ValueError, UnicodeDecodeError):
        return False


# ------------------------------------------------------------------------------------------------ listeners


@dataclass
class _Listener:
    sock: socket.socket
    kind: str  # "winrm" or "backend"
    state: ServerState
    context: ssl.SSLContext | None  # None: the handshake fails (http.sys without the private key)
    endpoint: Endpoint | None = None


def serve(layout: LabLayout, stop: threading.Event | None = None) -> None:
    """Serve every lab server from layout's state until SIGTERM/SIGINT (or `stop`), in the foreground."""
    stop = stop or threading.Event()
    ready = layout.state_dir / READY_FILE
    ready.unlink(missing_ok=True)
    _raise_fd_limit()
    os.environ["NTLM_USER_FILE"] = str(layout.state_dir / NTLM_USERS_FILE)
    # The servers' HTTP/ keys (exported by the directory's start): Kerberos is accepted beside NTLM.
    os.environ["KRB5_KTNAME"] = f"FILE:{layout.servers_keytab}"
    os.environ["KRB5_CONFIG"] = str(layout.krb5_conf)
    states = load_server_state(layout)
    listeners = _bind_all(layout, states)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    tmp = ready.with_name(f"{READY_FILE}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "servers": len(states), "listeners": len(listeners)}))
    tmp.replace(ready)
    log.info("%d listeners for %d servers are up", len(listeners), len(states))
    selector = selectors.DefaultSelector()
    for listener in listeners:
        listener.sock.setblocking(False)
        selector.register(listener.sock, selectors.EVENT_READ, listener)
    try:
        while not stop.is_set():
            for key, _ in selector.select(timeout=0.25):
                listener = key.data
                try:
                    conn, peer = listener.sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                conn.setblocking(True)
                # TLS sends its handshake flight in several writes; Nagle would hold them for delayed ACKs.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                target = _serve_winrm if listener.kind == "winrm" else _serve_backend
                threading.Thread(target=target, args=(listener, conn, peer), daemon=True).start()
    finally:
        selector.close()
        for listener in listeners:
            listener.sock.close()
        ready.unlink(missing_ok=True)


def _bind_all(layout: LabLayout, states: list[ServerState]) -> list[_Listener]:
    listeners: list[_Listener] = []
    try:
        for state in states:
            if state.unreachable:
                continue  # nothing listens: connections are refused
            winrm_context = _context(layout, state.winrm_thumbprint)
            host = ShellHost(
                state.name,
                f"https://{state.fqdn}:{WINRM_PORT}/wsman",
                lambda line, skip, state=state: run_command(state, line, skip),
            )
            endpoint = Endpoint(host, state.latency_ms / 1000, _channel_bindings(layout, state.winrm_thumbprint))
            sock = _listen(state.address, WINRM_PORT)
            listeners.append(_Listener(sock, "winrm", state, winrm_context, endpoint))
            if state.presented_thumbprint:
                context = _context(layout, state.presented_thumbprint) if state.presented_has_key else None
                listeners.append(_Listener(_listen(state.address, BACKEND_PORT), "backend", state, context))
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    return listeners


def _listen(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.listen(256)
    return sock


def _context(layout: LabLayout, thumb: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # http.sys on the Windows Server releases Exchange 2013-2019 run on speaks TLS 1.2 at most.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    path = _pem_path(layout, thumb)
    context.load_cert_chain(path, path)
    return context


def _channel_bindings(layout: LabLayout, thumb: str) -> GssChannelBindings:
    cert = x509.load_pem_x509_certificate(_pem_path(layout, thumb).read_bytes())
    return GssChannelBindings(application_data=tls_server_end_point(cert.public_bytes(serialization.Encoding.DER)))


def _serve_winrm(listener: _Listener, conn: socket.socket, peer: tuple[str, int]) -> None:
    assert listener.context is not None and listener.endpoint is not None
    tls: ssl.SSLSocket | None = None
    try:
        _delay(listener.state)
        conn.settimeout(WinRMHandler.timeout)
        tls = listener.context.wrap_socket(conn, server_side=True)
        WinRMHandler(tls, peer, listener.endpoint)  # type: ignore[arg-type]
    except (OSError, ssl.SSLError) as exc:
        log.debug("%s winrm %s: %s", listener.state.name, peer[0], exc)
    finally:
        (tls or conn).close()


def _serve_backend(listener: _Listener, conn: socket.socket, peer: tuple[str, int]) -> None:
    try:
        _delay(listener.state)
        if listener.context is None:
            return  # the handshake fails: the client sees the connection closed
        conn.settimeout(30)
        with listener.context.wrap_socket(conn, server_side=True) as tls:
            # The handshake is all the suite needs; wait briefly for the client to hang up first.
            tls.settimeout(5)
            with contextlib.suppress(OSError, ssl.SSLError):
                tls.recv(1)
    except (OSError, ssl.SSLError) as exc:
        log.debug("%s 444 %s: %s", listener.state.name, peer[0], exc)
    finally:
        conn.close()


def _delay(state: ServerState) -> None:
    if state.latency_ms:
        time.sleep(state.latency_ms / 1000)


def _raise_fd_limit() -> None:
    # Two listeners per server plus live connections: 200 servers outgrow the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m exchange_compliance.lab.servers LAB_ROOT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s servers %(levelname)s %(message)s")
    serve(LabLayout(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
