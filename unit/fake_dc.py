"""A fake domain controller on loopback, for the directory connection tests (test_directory_connection.py).

It speaks just enough LDAP for ldap3 and the suite's read, in BER written out below in a few lines: a
malformed answer is as easy to write as a correct one. (ldap3's pyasn1 spec cannot be used to read the
requests: with the installed pyasn1 it fails on a nested filter such as the suite's `(&(...)(|...))`, and
ldap3's fast decoder knows responses only.) What the DC says is a function of the request (`Answer`): a
healthy org (`org_answer`), a referral, a broken BindResponse, a faked StartTLS. The DC records every
operation it was sent, so a test can show that a password never reached it.

`Listener` is a port that only records who connects: the host a referral names.

A plain module, not a test module (see factories.py for why).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from ldap3.strategy.base import BaseStrategy

START_TLS = "1.3.6.1.4.1.1466.20037"
DOMAIN = "lab.test"
DOMAIN_DN = "DC=lab,DC=test"
CONFIGURATION_DN = f"CN=Configuration,{DOMAIN_DN}"
EXCHANGE_DN = f"CN=Microsoft Exchange,CN=Services,{CONFIGURATION_DN}"
ORG_DN = f"CN=Contoso,{EXCHANGE_DN}"
SERVER_DN = f"CN=EX01,CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,{ORG_DN}"

# --- BER, as much as the answers need ------------------------------------------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def text(value: str | bytes, tag: int = 0x04) -> bytes:
    return tlv(tag, value.encode() if isinstance(value, str) else value)


def message(message_id: int, operation: bytes) -> bytes:
    return tlv(0x30, integer(message_id) + operation)


def result(tag: int, code: int = 0, diagnostic: str = "", referrals: tuple[str, ...] = ()) -> bytes:
    """An LDAPResult of the application tag (0x61 bind, 0x65 search done, 0x78 extended), referrals [3]."""
    referral = tlv(0xA3, b"".join(text(url) for url in referrals)) if referrals else b""
    return tlv(tag, integer(code, tag=0x0A) + text("") + text(diagnostic) + referral)


def entry(dn: str, **attributes: str | bytes | list[str | bytes]) -> bytes:
    """A SearchResultEntry; attribute values are str or bytes, or a list of them."""
    parts = b""
    for name, values in attributes.items():
        listed = values if isinstance(values, list) else [values]
        parts += tlv(0x30, text(name) + tlv(0x31, b"".join(text(v) for v in listed)))
    return tlv(0x64, text(dn) + tlv(0x30, parts))


def reference(*urls: str) -> bytes:
    """A SearchResultReference (a continuation reference beside, or instead of, entries)."""
    return tlv(0x73, b"".join(text(url) for url in urls))


BIND_OK = result(0x61)
SEARCH_DONE = result(0x65)

# --- requests --------------------------------------------------------------------------------------------------


OPERATIONS = {0x60: "bind", 0x42: "unbind", 0x63: "search", 0x77: "extended", 0x50: "abandon"}


@dataclass(frozen=True)
class Request:
    id: int
    operation: str  # bind, unbind, search, extended (or the tag in hex)
    target: str  # a search's base DN, an extended operation's OID
    raw: bytes  # the whole message: answers match a search's filter in it (b"msExchExchangeServer" in raw)


# What the DC answers a request: whole LDAP messages (bytes), or a Reply that also says what comes next.
@dataclass
class Reply:
    messages: list[bytes] = field(default_factory=list)
    then: str = ""  # "tls": wrap the socket (a real StartTLS); "close": hang up; "": read the next request
    # Sent, as they are, in answer to whatever the client sends next (a TLS ClientHello after a faked StartTLS);
    # then the DC hangs up.
    next_bytes: bytes | None = None


Answer = Callable[[Request], list[bytes] | Reply]


def _split(data: bytes) -> tuple[int, bytes, bytes]:
    """The first TLV of `data`: its tag, its contents, and the bytes after it."""
    tag, size, start = data[0], data[1], 2
    if size & 0x80:
        start = 2 + (size & 0x7F)
        size = int.from_bytes(data[2:start], "big")
    return tag, data[start : start + size], data[start + size :]


def _decode(data: bytes) -> Request:
    # LDAPMessage ::= SEQUENCE { messageID, protocolOp, controls [0] OPTIONAL }; a search or an extended
    # request starts with its base DN or its OID.
    _, body, _ = _split(data)
    _, message_id, rest = _split(body)
    tag, operation, _ = _split(rest)
    target = _split(operation)[1].decode("utf-8", "replace") if tag in (0x63, 0x77) else ""
    return Request(int.from_bytes(message_id, "big"), OPERATIONS.get(tag, hex(tag)), target, data)


# --- answers ---------------------------------------------------------------------------------------------------


def org_answer(request: Request, *, refer: dict[str, str] | None = None) -> list[bytes] | Reply:
    """A healthy org of one Exchange server, EX01 (ex01.lab.test), enough for the whole read.

    `refer` maps a DN to a referral URL: a search at or under that DN is answered with result 10 (referral),
    as AD answers a search of a naming context the DC does not hold.
    """
    if request.operation == "bind":
        return [message(request.id, BIND_OK)]
    if request.operation == "extended":  # StartTLS is the FakeDC's (starttls=True), not the org's
        return [message(request.id, result(0x78, 2, "unsupported extended operation"))]
    if request.operation != "search":
        return Reply(then="close")
    for dn, url in (refer or {}).items():
        if request.target.lower().endswith(dn.lower()):
            done = result(0x65, 10, "0000202B: RefErr: DSID-0310084A, data 0, 1 access points", (url,))
            return [message(request.id, done)]
    return [message(request.id, found) for found in _org_entries(request)] + [message(request.id, SEARCH_DONE)]


def _org_entries(request: Request) -> list[bytes]:
    base = request.target
    if base == "":
        return [entry("", configurationNamingContext=CONFIGURATION_DN, defaultNamingContext=DOMAIN_DN)]
    if base == EXCHANGE_DN and b"msExchOrganizationContainer" in request.raw:
        return [entry(ORG_DN, cn="Contoso")]
    if base == EXCHANGE_DN:
        return [entry(EXCHANGE_DN, cn="Microsoft Exchange")]
    if b"msExchExchangeServer" in request.raw:
        return [entry(SERVER_DN, cn="EX01", networkAddress=f"ncacn_ip_tcp:ex01.{DOMAIN}", versionNumber="1942061587")]
    return []


# --- the DC ----------------------------------------------------------------------------------------------------


class FakeDC:
    """An LDAP server on `address`, in threads of this process: `with FakeDC(answer) as dc: ... dc.port`.

    `tls` (a server SSLContext) makes it LDAPS, or with `starttls=True` the context a StartTLS request
    switches to. `seen` lists every operation received, in order, across connections.
    """

    def __init__(
        self,
        answer: Answer,
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        starttls: bool = False,
    ) -> None:
        self.answer, self.tls, self.starttls = answer, tls, starttls
        self.seen: list[str] = []
        self._socket = socket.create_server((address, port))
        self.address, self.port = self._socket.getsockname()[:2]
        self._stop = threading.Event()

    def __enter__(self) -> FakeDC:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._socket.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10)
        try:
            if self.tls is not None and not self.starttls:
                client = self.tls.wrap_socket(client, server_side=True)
            buffered = b""
            while True:
                data, buffered = _read_message(client, buffered)
                if data is None:
                    return
                request = _decode(data)
                self.seen.append(request.operation)
                if request.operation == "extended" and request.target == START_TLS and self.starttls:
                    reply: list[bytes] | Reply = Reply([message(request.id, result(0x78))], then="tls")
                else:
                    reply = self.answer(request)
                if isinstance(reply, list):
                    reply = Reply(reply)
                client.sendall(b"".join(reply.messages))
                if reply.next_bytes is not None:
                    client.recv(65536)
                    client.sendall(reply.next_bytes)
                    return
                if reply.then == "close" or request.operation == "unbind":
                    return
                if reply.then == "tls" and self.tls is not None:
                    client = self.tls.wrap_socket(client, server_side=True)
        except (OSError, ValueError, IndexError):
            return  # a client that hangs up, or bytes that are not LDAP (a TLS ClientHello on a plain socket)
        finally:
            client.close()


def _read_message(client: socket.socket, buffered: bytes) -> tuple[bytes | None, bytes]:
    while True:
        size = BaseStrategy.compute_ldap_message_size(buffered)
        if size != -1 and len(buffered) >= size:
            return buffered[:size], buffered[size:]
        data = client.recv(65536)
        if not data:
            return None, b""
        buffered += data


class Listener:
    """A port that accepts connections and records them (and every byte sent), answering nothing."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self._socket = socket.create_server((address, 0))
        self.port = self._socket.getsockname()[1]
        self.connections = 0
        self.received = b""

    def __enter__(self) -> Listener:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._socket.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._record, args=(client,), daemon=True).start()

    def _record(self, client: socket.socket) -> None:
        client.settimeout(10)
        with client:
            try:
                while data := client.recv(65536):
                    self.received += data
            except OSError:
                return


# --- certificates --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A CA file for the org config, and server contexts presenting certificates of several kinds."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def context(self, name: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.folder / f"{name}.pem")
        return context


def make_certificates(folder: Path, *hosts: str) -> Certificates:
    """ca.pem (the CA the org config trusts); HOST.pem issued by it for each host; rogue-HOST.pem for the same
    host from a CA nobody trusts."""
    from factories import make_cert, rsa_key

    folder.mkdir(parents=True, exist_ok=True)
    key = rsa_key("leaf").private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (folder / "ca.pem").write_bytes(_pem(make_cert("Fake DC CA", None, key="ca", ca=True)))
    for host in hosts:
        (folder / f"{host}.pem").write_bytes(_pem(make_cert(host, (host,), issuer_cn="Fake DC CA")) + key)
        rogue = make_cert(host, (host,), issuer_cn="Rogue CA", signer="rogue-ca")
        (folder / f"rogue-{host}.pem").write_bytes(_pem(rogue) + key)
    return Certificates(folder)


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
