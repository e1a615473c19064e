"""WinRM's HTTP side, as http.sys serves /wsman on a Windows Server HTTPS listener.

HTTP/1.1 with Negotiate authentication (NTLM or Kerberos) bound to the TCP connection, as Windows does it: only
the handshake requests carry Authorization headers, later requests on the same connection ride on it (so a
client must keep the connection alive, which requests-ntlm and requests-kerberos do). The acceptor is pyspnego:
NTLM_USER_FILE holds the NTLM accounts, KRB5_KTNAME the keytab of the servers' HTTP/ SPNs; it checks channel
bindings as WinRM's default CbtHardeningLevel=Relaxed does. Every request is logged with the mechanism that
authenticated its connection, so a test can show which one a run used. Message encryption is not implemented:
clients only use it over plain HTTP.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import spnego
import spnego.exceptions
from spnego.channel_bindings import GssChannelBindings

from .wsman import ShellHost

log = logging.getLogger(__name__)


@dataclass
class Endpoint:
    """What a WinRM listener hands each of its connections."""

    host: ShellHost
    latency: float = 0.0  # seconds added before every response
    channel_bindings: GssChannelBindings | None = None


class ConnectionAuth:
    """The Negotiate/NTLM state of one TCP connection."""

    def __init__(self, channel_bindings: GssChannelBindings | None) -> None:
        self.channel_bindings = channel_bindings
        self.user: str | None = None
        self.mechanism: str | None = None  # "ntlm" or "kerberos", once authenticated
        self._context: spnego.ContextProxy | None = None

    def step(self, token: bytes) -> tuple[bool, bytes | None]:
        """Feed a client token: (complete, token to send back). Raises SpnegoError when logon fails."""
        if self._context is None or _starts_exchange(token):
            self.user = self.mechanism = None
            # "negotiate" accepts the raw NTLM tokens requests-ntlm sends, the raw Kerberos tokens requests-kerberos
            # sends, and either wrapped in SPNEGO.
            # Bindings are passed per step, not here, so that a client sending none can be let through.
            self._context = spnego.server(protocol="negotiate")
        context = self._context
        try:
            try:
                out = context.step(token, channel_bindings=self.channel_bindings)
            except spnego.exceptions.BadBindingsError as exc:
                # WinRM's default CbtHardeningLevel=Relaxed: a client that sends no bindings is accepted,
                # wrong bindings are refused. pyspnego raises before changing state, so the step can be redone.
                if "not present" not in str(exc):
                    raise
                out = context.step(token)
        except spnego.exceptions.SpnegoError:
            self._context = None
            raise
        if context.complete:
            self.user = str(context.client_principal or "")
            self.mechanism = context.negotiated_protocol
            self._context = None
        return self.user is not None, out


def _starts_exchange(token: bytes) -> bool:
    # An NTLM NEGOTIATE message, or a GSS initial token (SPNEGO NegTokenInit, Kerberos AP-REQ): the client starts over.
    return token.startswith(b"NTLMSSP\x00\x01\x00\x00\x00") or token[:1] == b"\x60"


class WinRMHandler(BaseHTTPRequestHandler):
    """One HTTPS connection to /wsman; built per accepted socket with the listener's Endpoint as `server`."""

    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    timeout = 120  # http.sys's idle connection timeout
    # Headers and body go out in two writes; with Nagle the second waits on the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server: Endpoint  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        self.auth = ConnectionAuth(self.server.channel_bindings)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        if urlsplit(self.path).path.rstrip("/").lower() != "/wsman":
            self._reply(404, b"")
            return
        final_token: str | None = None
        header = self.headers.get("Authorization")
        if header:
            scheme, _, encoded = header.strip().partition(" ")
            if scheme.lower() not in ("negotiate", "ntlm"):
                self._unauthorized()
                return
            try:
                complete, out = self.auth.step(base64.b64decode(encoded.strip(), validate=True))
            except Exception as exc:  # SpnegoError, a bad token; pyspnego also fails otherwise on a foreign ticket
                log.info("%s: logon failed: %s", self.client_address[0], exc)
                self._unauthorized()
                return
            answer = f"{scheme} {base64.b64encode(out).decode()}" if out else None
            if not complete:
                self._reply(401, b"", [("WWW-Authenticate", answer or scheme)])
                return
            final_token = answer
        elif self.auth.user is None:
            self._unauthorized()
            return
        if "multipart/encrypted" in self.headers.get("Content-Type", "").lower():
            # Message encryption (used over plain HTTP) is not part of the lab.
            self._reply(415, b"")
            return
        # Per request, not per handshake: the proof that every request of a run was authenticated by Kerberos.
        log.info("%s request from %s: %s as %s", self.server.host.machine, self.client_address[0],
                 self.auth.mechanism, self.auth.user)  # fmt: skip
        status, xml = self.server.host.handle(body, self.auth.user or "", self.client_address[0])
        headers = [("Content-Type", "application/soap+xml;charset=UTF-8")]
        if final_token:
            headers.append(("WWW-Authenticate", final_token))
        self._reply(status, xml, headers)

    def do_GET(self) -> None:
        self._reply(405, b"", [("Allow", "POST")])

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        except ValueError:
            self._reply(400, b"")
            self.close_connection = True
            return None

    def _unauthorized(self) -> None:
        # A WinRM HTTPS listener with default service auth: Negotiate and Kerberos (Basic is off).
        self._reply(401, b"", [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "Kerberos")])

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        if self.server.latency:
            time.sleep(self.server.latency)
        self.send_response(status, "")  # http.sys sends WinRM's status lines with no reason phrase
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
