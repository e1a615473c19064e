"""Running the probe on one server over WinRM (pywinrm): one shell, one command, read-only."""

from __future__ import annotations

import re

import requests
import requests.adapters
from winrm.exceptions import WinRMError, WinRMTransportError
from winrm.protocol import Protocol

from ..config import Credentials, OrgConfig
from ..facts import ServerProbe
from .probe import ProbeError, parse_probe_output, probe_command


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


def open_protocol(host: str, config: OrgConfig, credentials: Credentials) -> Protocol:
    settings = config.winrm
    address = config.address_of(host)
    protocol = Protocol(
        endpoint=f"{settings.scheme}://{address}:{settings.port}/wsman",
        transport=settings.transport,
        username=credentials.user,
        password=credentials.password,
        server_cert_validation="validate" if settings.validate_certificate else "ignore",
        ca_trust_path=str(settings.ca_file) if settings.ca_file else "legacy_requests",
        read_timeout_sec=settings.read_timeout_seconds,
        operation_timeout_sec=settings.operation_timeout_seconds,
    )
    if address != host and settings.scheme == "https":
        session = protocol.transport.build_session()
        session.mount(f"https://{address}:{settings.port}/", _NamedHostAdapter(host))
    return protocol


def run_probe(host: str, config: OrgConfig, credentials: Credentials) -> ServerProbe:
    """Run the probe on `host` (the server's FQDN) and parse its document; ProbeFailed says why not."""
    command, arguments = probe_command()
    address = config.address_of(host)
    where = f"{host}:{config.winrm.port}" if address == host else f"{host} ({address}:{config.winrm.port})"
    try:
        protocol = open_protocol(host, config, credentials)
        shell = protocol.open_shell(codepage=65001)
        try:
            command_id = protocol.run_command(shell, command, arguments)
            stdout, stderr, exit_code = protocol.get_command_output(shell, command_id)
            protocol.cleanup_command(shell, command_id)
        finally:
            protocol.close_shell(shell)
    except WinRMTransportError as exc:
        raise ProbeFailed(f"WinRM to {where}: HTTP {exc.code}: {_first_line(exc.response_text)}") from None
    except (WinRMError, requests.RequestException, OSError) as exc:
        raise ProbeFailed(f"WinRM to {where}: {network_reason(exc)}") from None
    if exit_code != 0:
        message = _first_line(stderr.decode("utf-8", errors="replace")) or f"exit code {exit_code}"
        raise ProbeFailed(f"the probe failed on {host}: {message}")
    try:
        return parse_probe_output(stdout)
    except ProbeError as exc:
        raise ProbeFailed(str(exc)) from None


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
