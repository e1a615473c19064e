"""Running the probe on one server over WinRM (pywinrm): one shell, one command, read-only."""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable
from typing import TypeVar

import requests
import requests.adapters
from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMOperationTimeoutError, WinRMTransportError
from winrm.protocol import Protocol
from winrm.transport import HAVE_CREDSSP, HAVE_KERBEROS

from ..config import ConfigError, Credentials, OrgConfig
from ..facts import ServerProbe
from . import kerberos
from .probe import ProbeError, parse_probe_output, probe_command

T = TypeVar("T")
# Closing the command and the shell after the probe: a short wait, whatever the deadline left.
CLEANUP_SECONDS = 5


class ProbeFailed(Exception):
    """The probe could not be run on a server, or printed something else than its document."""


class _NamedHostAdapter(requests.adapters.HTTPAdapter):
    """Connect to an address but check the certificate against the server's name (and send it as SNI).

    An audit host without the org's DNS gets addresses from the config; the certificate must still be
    validated against the host name, never against the address.
    """

    def __init__(self, host_name: str) -> None:
        self._host_name = host_name
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["server_hostname"] = self._host_name
        kwargs["assert_hostname"] = self._host_name
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]


def check_transport(config: OrgConfig) -> None:
    """A ConfigError before any server is contacted when pywinrm lacks the transport's package: otherwise every
    server would fail alike and the run would look like an unreachable org (exit 6) instead of a setup error."""
    missing = {"kerberos": not HAVE_KERBEROS, "credssp": not HAVE_CREDSSP}.get(config.winrm.transport)
    if missing:
        transport = config.winrm.transport
        raise ConfigError(
            f"{config.source}: [winrm] transport: {transport} needs pywinrm's {transport} extra: "
            f"pip install 'pywinrm[{transport}]'"
        )


def open_protocol(host: str, config: OrgConfig, credentials: Credentials | None) -> Protocol:
    """A pywinrm Protocol to `host` (at its [network] address if it has one). `credentials` is None with
    Kerberos: the ticket cache holds the account, and pywinrm must not be given a user or password."""
    settings = config.winrm
    address = config.address_of(host)
    protocol = Protocol(
        endpoint=f"{settings.scheme}://{address}:{settings.port}/wsman",
        transport=settings.transport,
        username=credentials.user if credentials else None,
        password=credentials.password if credentials else None,
        server_cert_validation="validate" if settings.validate_certificate else "ignore",
        ca_trust_path=str(settings.ca_file) if settings.ca_file else "legacy_requests",
        read_timeout_sec=settings.read_timeout_seconds,
        operation_timeout_sec=settings.operation_timeout_seconds,
        # Over http, NTLM, Kerberos and CredSSP messages are encrypted by the authentication's own session key
        # (pywinrm's "auto" does it too); "always" makes pywinrm refuse, not send in clear, when it cannot. Over
        # https TLS protects them. Never "never". (Basic over http is refused with the config.)
        message_encryption="always" if settings.scheme == "http" else "auto",
        # The SPN is HTTP/<host name>: built from the endpoint it would be HTTP/<address>, which the KDC does
        # not know when [network] addresses gives the server an address.
        kerberos_hostname_override=host if settings.transport == "kerberos" else None,
    )
    build = protocol.transport.build_session

    def build_session() -> requests.Session:
        # pywinrm merges the environment's proxies (HTTPS_PROXY, NO_PROXY) into the session it builds, once; left
        # on, requests would read the whole environment again for every request (8% of a probe's CPU time).
        session = build()
        session.trust_env = False
        return session

    protocol.transport.build_session = build_session  # type: ignore[method-assign]
    if address != host and settings.scheme == "https":
        session = protocol.transport.build_session()
        session.mount(f"https://{address}:{settings.port}/", _NamedHostAdapter(host))
    return protocol


class _Deadline:
    """The per-server deadline, applied to every WinRM request of one probe.

    Each request's read timeout is cut to the time left, so no request runs (much) past the deadline; requests
    counts that timeout per socket read, so a server trickling bytes could still stretch one, which is why the
    collector also abandons a probe at the deadline (its thread is a daemon).
    """

    def __init__(self, protocol: Protocol, config: OrgConfig, deadline: float) -> None:
        self.protocol, self.deadline = protocol, deadline
        self.read_timeout = config.winrm.read_timeout_seconds
        self.seconds = config.server_timeout_seconds

    def passed(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self) -> ProbeFailed:
        return ProbeFailed(timed_out(self.seconds))

    def call(self, method: Callable[..., T], *args: object, **kwargs: object) -> T:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.failure()
        self.protocol.transport.read_timeout_sec = max(1, min(self.read_timeout, math.ceil(left)))
        return method(*args, **kwargs)

    def cleanup(self, method: Callable[..., object], *args: object) -> None:
        """Best effort, briefly: a shell left open idles out on the server (winrs IdleTimeout, 2 hours), and
        failing to close it says nothing about the facts already read."""
        self.protocol.transport.read_timeout_sec = min(self.read_timeout, CLEANUP_SECONDS)
        with contextlib.suppress(Exception):
            method(*args)


def run_probe(
    host: str, config: OrgConfig, credentials: Credentials | None, deadline: float | None = None
) -> ServerProbe:
    """Run the probe on `host` (the server's FQDN) and parse its document; ProbeFailed says why not.

    `deadline` (time.monotonic()) bounds the whole probe; default: [collection] server_timeout_seconds from now.
    """
    command, arguments = probe_command()
    port = config.winrm.port
    if deadline is None:
        deadline = time.monotonic() + config.server_timeout_seconds
    bound: _Deadline | None = None
    # The reasons name neither the host nor its address: the row names the server, and the same failure on every
    # server (a wrong password, an untrusted CA) is then said once, for all of them.
    try:
        protocol = open_protocol(host, config, credentials)
        bound = _Deadline(protocol, config, deadline)
        shell = bound.call(protocol.open_shell, codepage=65001)
        try:
            command_id = bound.call(protocol.run_command, shell, command, arguments)
            ended = False
            try:
                stdout, stderr, exit_code = _output(bound, shell, command_id)
                ended = True
            finally:
                # A command still running is stopped (Signal terminate). One that ended goes with its shell: Delete
                # ends a shell's commands and frees their resources ([MS-WSMV] 3.1.4.4.1). A request and a round
                # trip fewer per server.
                if not ended:
                    bound.cleanup(protocol.cleanup_command, shell, command_id)
        finally:
            bound.cleanup(protocol.close_shell, shell)
    except InvalidCredentialsError as exc:  # pywinrm's word for an HTTP 401, and for a user or password missing
        raise ProbeFailed(rejected(config) if "rejected" in str(exc) else f"{exc} (port {port})") from None
    except WinRMTransportError as exc:
        raise ProbeFailed(f"HTTP {exc.code} on port {port}: {_first_line(exc.response_text)}") from None
    except (WinRMError, requests.RequestException, OSError) as exc:
        if bound is not None and bound.passed():
            raise bound.failure() from None  # the read timeout was cut to the deadline: say which one struck
        if kerberos.minor_code(exc) is not None:  # pywinrm's Kerberos: no ticket for HTTP/<host>, a skew, ...
            raise ProbeFailed(kerberos.describe(exc, "HTTP/<the server's FQDN>")) from None
        raise ProbeFailed(f"{network_reason(exc)} (port {port})") from None
    if exit_code != 0:
        message = _first_line(stderr.decode("utf-8", errors="replace")) or f"exit code {exit_code}"
        raise ProbeFailed(f"the probe failed: {message}")
    try:
        return parse_probe_output(stdout)
    except ProbeError as exc:
        raise ProbeFailed(str(exc)) from None


def _output(bound: _Deadline, shell: str, command_id: str) -> tuple[bytes, bytes, int]:
    """pywinrm's get_command_output, but bounded: it retries an OperationTimeout fault forever, and a Receive
    answers with one every operation_timeout_seconds for as long as the command runs."""
    stdout, stderr = [], []
    while True:
        try:
            out, err, exit_code, done = bound.call(bound.protocol.get_command_output_raw, shell, command_id)
        except WinRMOperationTimeoutError:
            continue  # still running; bound.call gives up at the deadline
        stdout.append(out)
        stderr.append(err)
        if done:
            return b"".join(stdout), b"".join(stderr), exit_code


def rejected(config: OrgConfig) -> str:
    """The reason of a server that refused the run's account (HTTP 401), with where to look."""
    winrm = config.winrm
    if winrm.transport == "kerberos":
        return "the server refused the Kerberos ticket (HTTP 401): check that the audit account may log on to it"
    return f"the credentials were rejected (HTTP 401, {winrm.transport}): check [winrm] user_env and password_env"


def timed_out(seconds: float) -> str:
    """The reason of a server past [collection] server_timeout_seconds, whoever notices first."""
    return f"no answer within the server timeout ({seconds:g} s)"


def network_reason(exc: BaseException) -> str:
    """The reason an admin needs, not urllib3's retry report: 'Connection refused', 'timed out', ..."""
    text = str(exc)
    if isinstance(exc, requests.Timeout):
        return "no answer within the WinRM read timeout"
    verify = re.search(r"certificate verify failed: ([^(\"')]+)", text)
    if verify:
        return f"certificate verify failed: {verify.group(1).strip()}"
    errno = re.search(r"\[Errno -?\d+\] ([^\"')]+)", text)
    if errno:
        return errno.group(1).strip()
    return _first_line(text)


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip() and not line.startswith("#< CLIXML"):
            return line.strip()[:300]
    return ""
