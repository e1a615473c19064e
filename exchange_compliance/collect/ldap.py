"""The connection to Active Directory with ldap3: bind to the first DC that answers (over verified TLS, or sealed by
Kerberos), read-only and never following a referral; the other DCs one read needs (`Sources`); paged searches
(`search_entries`) and pipelined base reads (`pipelined_reads`), each failure a DirectoryError of one line.

What is read, and how it is decoded, is directory.py, forest.py and decode.py."""

from __future__ import annotations

import contextlib
import itertools
import re
import ssl
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import (
    LDAPCertificateError,
    LDAPException,
    LDAPSessionTerminatedByServerError,
    LDAPSocketReceiveError,
    LDAPStartTLSError,
)
from ldap3.operation.search import search_operation
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.asn1 import decode_message_fast

from ..config import Credentials, OrgConfig
from ..text import one_line
from . import ldap_kerberos
from .kerberos import Ticket

PAGE_SIZE = 500
# Owner, group and DACL. Asking for the SACL too (the default) makes AD withhold the whole attribute from
# accounts that are not admins, and an audit account should not be one.
SD_FLAGS = 0x07
UNREACHABLE_PREFIX = "no domain controller could be bound: "


class DirectoryUnreachable(Exception):
    """No domain controller could be bound; the message names each one tried and why."""


class DirectoryError(Exception):
    """The directory answered but cannot be read as an Exchange org: no org container, a search broken off (a
    receive timeout, a reset connection), a referral, a value that cannot be decoded. The message names where
    and why."""


# What an admin does about a referral: the suite never follows one (ldap3 would bind again, with the same
# password, to whatever host the referral names, over plain LDAP or TLS it does not check).
REFERRAL_ADVICE = "point [directory] base_dn at a naming context this DC holds, or use the global catalog (port 3269)"
# AD's invalidCredentials: the password is wrong for the domain (a DC checks a bad one with the PDC emulator),
# so every further DC would only count another bad logon towards the account's lockout.
INVALID_CREDENTIALS = 49


@dataclass(frozen=True)
class Bound:
    """A bound, read-only connection; the DC it is to, and each DC passed over before it, with why."""

    connection: ldap3.Connection
    controller: str
    skipped: tuple[str, ...] = ()


class _Skip(Exception):
    """This DC cannot be used: the reason, one line. `final`: no other DC is tried either."""

    def __init__(self, reason: str, final: bool = False) -> None:
        super().__init__(reason)
        self.final = final


def open_connection(config: OrgConfig, credentials: Credentials | Ticket) -> Bound:
    """Bind to the first of `[directory] servers` that answers, over verified TLS; the connection refuses writes
    (read_only), never follows a referral, and keeps no password once bound. With a Ticket (`[directory] auth =
    "kerberos"`) the bind is SASL GSSAPI (ldap_kerberos.bind): no password at all, and on 389 without TLS every
    message is sealed by Kerberos."""
    settings = config.directory
    skipped: list[str] = []
    for number, host in enumerate(settings.servers):
        try:
            connection = _bind(config, host, credentials)
        except _Skip as skip:
            # Not kept in a local: with `-l`, a traceback through this frame would print it.
            skipped.append(f"{host}:{settings.port}: {one_line(str(skip), _password(credentials))}")
            if skip.final and number + 1 < len(settings.servers):
                skipped.append(f"not tried: {', '.join(settings.servers[number + 1 :])}")
                break
            continue
        return Bound(connection, host, tuple(skipped))
    # Raised here, outside any handler: no exception of ldap3's (and no frame of its bind) hangs on this one.
    raise DirectoryUnreachable(UNREACHABLE_PREFIX + "; ".join(skipped))


def _password(credentials: Credentials | Ticket) -> str | None:
    return credentials.password if isinstance(credentials, Credentials) else None


def _bind(config: OrgConfig, host: str, credentials: Credentials | Ticket) -> ldap3.Connection:
    settings = config.directory
    kerberos = isinstance(credentials, Ticket)
    tls = ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        version=ssl.PROTOCOL_TLS_CLIENT,
        ca_certs_file=str(settings.ca_file) if settings.ca_file else None,
        valid_names=[host],
        sni=host,
    )
    server = ldap3.Server(
        config.address_of(host),
        port=settings.port,
        use_ssl=settings.tls == "ldaps",  # "none" (Kerberos only): every message sealed by Kerberos instead
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=settings.timeout_seconds,
        allowed_referral_hosts=[],  # should anything turn auto_referrals back on: no host to follow a referral to
    )
    connection = ldap3.Connection(
        server,
        user=None if kerberos else credentials.user,  # type: ignore[union-attr]
        authentication=ldap3.SASL if kerberos else ldap3.SIMPLE,
        read_only=True,
        auto_referrals=False,  # ldap3's default follows them, bind and paged search included
        receive_timeout=max(1, round(settings.timeout_seconds)),  # ldap3 packs it as an int
        raise_exceptions=False,
        collect_usage=True,
    )
    step = "connection"
    try:
        with warnings.catch_warnings():
            # ldap3 2.9 checks the name with ssl.match_hostname: deprecated, still exact; not the admin's concern.
            warnings.simplefilter("ignore", DeprecationWarning)
            connection.open()
            if settings.tls == "starttls":
                step = "StartTLS"
                _start_tls(connection)
            step = "bind"
            if kerberos:
                ldap_kerberos.bind(connection, host, credentials, tls=settings.tls != "none")  # type: ignore[arg-type]
                return connection
            if not isinstance(connection.socket, ssl.SSLSocket):
                # Not expected of ldap3; if it ever were to happen, the password would go in clear.
                raise _Skip("TLS is not established on the connection: the password is not sent")
            bound = _simple_bind(connection, credentials)  # type: ignore[arg-type]
        if not bound:
            result = connection.result or {}
            raise _Skip(
                f"bind as {credentials.user} refused: {_result_text(result)}",
                final=result.get("result") == INVALID_CREDENTIALS,
            )
        return connection
    except _Skip:
        close(connection)
        raise
    except Exception as exc:
        # Whatever the DC sends is decoded by ldap3, which answers some malformed messages with KeyError or
        # IndexError: every failure of one DC is that DC's reason, never a traceback (which, with `-l`, would
        # show ldap3's bind frame and its BindRequest).
        reason = _reason(exc, host, step)
        close(connection)
        raise _Skip(reason) from None


def _start_tls(connection: ldap3.Connection) -> None:
    try:
        started = connection.start_tls()
    except LDAPStartTLSError:
        # ldap3 raises both when the DC refuses (a result code) and when the handshake after its yes fails.
        if (connection.result or {}).get("result") in (0, None):
            raise
        started = False
    if not started:
        raise _Skip(f"StartTLS refused: {_result_text(connection.result)}")


def _simple_bind(connection: ldap3.Connection, credentials: Credentials) -> bool:
    """The password is on the connection only for the bind: ldap3 would keep it (in `password`, and the
    BindRequest in `request`) for as long as the connection lives, and print it in the connection's repr."""
    connection.password = credentials.password
    try:
        return bool(connection.bind())
    except BaseException as exc:
        # Whatever ends the bind (even Ctrl-C, which no handler turns into a reason) goes on without ldap3's
        # frames below this one: their locals hold the BindRequest, and `pytest -l` would print them.
        raise exc.with_traceback(None) from None
    finally:
        connection.password = None
        connection.request = None


def _result_text(result: dict | None) -> str:
    result = result or {}
    text = str(result.get("description") or result.get("result"))
    if result.get("referrals"):
        text += f" to {_hosts(result['referrals'])} (referrals are never followed)"
    elif result.get("message"):
        text += f" ({result['message']})"
    return text


def _hosts(urls: Iterable[str]) -> str:
    """The hosts referral URLs name (ldap://dc03.child.contoso.com/DC=child,...): host[:port], or the URL."""
    hosts = []
    for url in list(urls)[:3]:
        try:
            hosts.append(urlsplit(str(url)).netloc or str(url))
        except ValueError:
            hosts.append(str(url))
    return ", ".join(hosts) or "no host it names"


def _reason(exc: Exception, host: str, step: str) -> str:
    reason = _what_failed(exc, host, step)
    return f"StartTLS failed: {reason}" if step == "StartTLS" else reason


def _what_failed(exc: Exception, host: str, step: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, LDAPCertificateError) or "doesn't match any name" in text:
        # ldap3's message holds the whole certificate as a dict; the name is what an admin needs.
        return f"the certificate is not issued to {host}"
    verify = re.search(r"certificate verify failed: ([^(']+)", text)
    if verify:
        return f"certificate verify failed: {verify.group(1).strip()} (is [directory] ca_file the CA that issued it?)"
    handshake = re.search(r"\[SSL: \w+\] ([^(']+)", text)
    if handshake:
        return f"the TLS handshake failed: {handshake.group(1).strip()}"
    if "invalid server address" in text:
        # What ldap3 says when the name does not resolve.
        return "the name does not resolve (an audit host without the org's DNS can use [network] addresses)"
    if not isinstance(exc, (LDAPException, OSError)):
        return f"the answer to the {step} could not be read ({type(exc).__name__}: {text})"
    # ldap3 wraps socket and TLS errors in long reprs, nested quotes and tuples; the first part is what matters.
    return text.split(" - ")[0].strip("()\"',")


def close(connection: ldap3.Connection) -> None:
    """Unbind, saying nothing: after a socket error ldap3 has already closed the connection and may raise again,
    and a DC that sent garbage can make it raise anything. The error that matters is the one already raised."""
    with contextlib.suppress(Exception):
        connection.unbind()


class Sources:
    """The connections one read searches beyond the first DC: a global catalog, and a DC of each other domain whose
    groups a server's token needs.

    Each is opened on first use with open_connection: the same TLS checks, credentials, failover and refusal of
    referrals as the first DC. One that cannot be opened is a reason, not an exception: the rows whose tokens need
    it become errors naming it, and the rest of the org is still judged."""

    def __init__(self, config: OrgConfig, credentials: Credentials | Ticket, main: Bound) -> None:
        self.config, self.credentials, self.main = config, credentials, main
        self.main_name = f"{main.controller}:{config.directory.port}"
        self._opened: dict[tuple[tuple[str, ...], int], Bound | str] = {}

    def open(self, hosts: tuple[str, ...], port: int) -> tuple[ldap3.Connection, str] | str:
        """A bound connection to the first of `hosts` that answers on `port`, with its host:port; or why none did."""
        settings = self.config.directory
        if port == settings.port and self.main.controller.lower() in {host.lower() for host in hosts}:
            return self.main.connection, self.main_name
        key = (tuple(host.lower() for host in hosts), port)
        if key not in self._opened:
            config = replace(self.config, directory=replace(settings, servers=hosts, port=port))
            try:
                self._opened[key] = open_connection(config, self.credentials)
            except DirectoryUnreachable as exc:
                self._opened[key] = str(exc).removeprefix(UNREACHABLE_PREFIX)
        opened = self._opened[key]
        if isinstance(opened, str):
            return opened
        return opened.connection, f"{opened.controller}:{port}"

    def global_catalog(self) -> tuple[ldap3.Connection, str] | str:
        settings = self.config.directory
        return self.open(settings.global_catalog_hosts, settings.global_catalog_port)

    def domain_controller(self, hosts: tuple[str, ...]) -> tuple[ldap3.Connection, str] | str:
        return self.open(hosts, self.config.directory.port)

    @property
    def searches(self) -> int | None:
        """Search operations sent on every connection, the first DC's included (None: not counted)."""
        connections = [self.main.connection] + [b.connection for b in self._opened.values() if isinstance(b, Bound)]
        usages = [connection.usage for connection in connections]
        return sum(usage.search_operations for usage in usages) if all(usages) else None

    def close(self) -> None:
        """Unbind what this opened (the first DC is its opener's to close)."""
        for opened in self._opened.values():
            if isinstance(opened, Bound):
                close(opened.connection)


def search_entries(
    connection: ldap3.Connection,
    base: str,
    search_filter: str,
    scope: str,
    attributes: list[str],
    *,
    descriptor: bool = False,
) -> list[dict]:
    controls = security_descriptor_control(sdflags=SD_FLAGS) if descriptor else None
    where = base or "the rootDSE"
    try:
        response = connection.extend.standard.paged_search(
            base,
            search_filter,
            scope,
            attributes=attributes,
            controls=controls,
            paged_size=PAGE_SIZE,
            generator=False,
        )
    except Exception as exc:
        # raise_exceptions=False covers LDAP result codes only: a receive timeout or a reset connection
        # still raises (LDAPSocketReceiveError, LDAPSessionTerminatedByServerError, ...), and so does ldap3
        # decoding a malformed answer (KeyError, IndexError, ...).
        raise DirectoryError(f"search of {where} failed: {_reason(exc, '', 'search')}") from None
    return _entries(connection.result, response, where, scope)


def _entries(result: dict | None, response: list[dict] | None, where: str, scope: str) -> list[dict]:
    """The entries of a search's answer; a referral or an error result is a DirectoryError, noSuchObject none."""
    result = result or {}
    entries = [entry for entry in response or [] if entry.get("type") == "searchResEntry"]
    if result.get("result") == 10 or (scope == ldap3.BASE and not entries and _references(response)):
        # A referral (result 10), or at the base only a continuation reference: the DC does not hold `base`.
        urls = result.get("referrals") or _references(response)
        raise DirectoryError(
            f"search of {where} was referred to {_hosts(urls)}, a naming context this domain controller does "
            f"not hold; referrals are never followed: {REFERRAL_ADVICE}"
        )
    if result.get("result") not in (0, None):
        if result.get("result") == 32:  # noSuchObject
            return []
        raise DirectoryError(f"search of {where} failed: {result.get('description')} {result.get('message')}")
    # AD and Samba return search references beside the entries (other naming contexts below a subtree).
    return entries


# Base reads in flight at once on one connection: enough to hide the round trip, few enough that neither side's
# socket buffer fills with unread requests or answers.
PIPELINE = 64


def pipelined_reads(connection: ldap3.Connection, dns: list[str], attributes: list[str]) -> dict[str, dict]:
    """A base-scope read of each DN (lower-cased in the result; absent: no such object), sent without waiting for
    the answers to the ones before: LDAP allows several requests outstanding on one connection and tags each
    answer with its request's message ID. ldap3's synchronous strategy waits for each answer in turn, so the
    requests are sent with its `send` and the answers read with its own receiver and decoder.

    A sliding window of PIPELINE requests: as each read is answered the next is sent, so one slow answer holds up
    no other (in batches, every batch would wait for its slowest answer before the next went out)."""
    strategy = connection.strategy
    found: dict[str, dict] = {}
    waiting: dict[int, tuple[str, list[dict]]] = {}
    unsent = iter(dns)

    def send(dn: str) -> None:
        request = search_operation(
            dn, "(objectClass=*)", ldap3.BASE, ldap3.DEREF_NEVER, attributes, 0, 0, False, False,
            connection.auto_encode, None, validator=None, check_names=False,
        )  # fmt: skip
        waiting[connection.send("searchRequest", request, None)] = (dn, [])

    try:
        for dn in itertools.islice(unsent, PIPELINE):
            send(dn)
        while waiting:
            messages = strategy.receiving()
            if not messages:
                raise LDAPSessionTerminatedByServerError("session terminated by server")
            for raw in messages:
                message = decode_message_fast(raw)
                answer = strategy.decode_response_fast(message)
                dn, answers = waiting.get(int(message["messageID"]), ("", None))  # type: ignore[assignment]
                if answers is None:
                    raise LDAPSocketReceiveError(f"an answer to no request (message ID {message['messageID']})")
                if answer["type"] != "searchResDone":
                    answers.append(answer)
                    continue
                del waiting[int(message["messageID"])]
                strategy._outstanding.pop(int(message["messageID"]), None)
                entries = _entries(answer, answers, dn, ldap3.BASE)
                if entries:
                    found[dn.lower()] = entries[0]
                following = next(unsent, None)
                if following is not None:
                    send(following)
    except DirectoryError:
        raise
    except Exception as exc:  # as search_entries: a broken connection or an undecodable answer is one line
        raise DirectoryError(f"reading tokenGroups failed: {_reason(exc, '', 'search')}") from None
    finally:
        for message_id in waiting:  # ldap3 keeps each request sent until its answer is fetched
            strategy._outstanding.pop(message_id, None)
    return found


def _references(response: list[dict] | None) -> list[str]:
    references = [entry for entry in response or [] if entry.get("type") == "searchResRef"]
    return [str(url) for entry in references for url in entry.get("uri") or []]
