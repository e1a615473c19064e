"""Reading the org from Active Directory with ldap3: read-only, and in a number of round trips that does not
grow with the number of servers (one filtered search per kind of object, not one search per server)."""

from __future__ import annotations

import contextlib
import re
import ssl
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPCertificateError, LDAPException, LDAPStartTLSError
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.conv import escape_filter_chars

from ..config import Credentials, OrgConfig
from ..facts import AuthConfig, Directory, ExchangeServer, Principal, VirtualDirectory
from ..names import rdn_value, split_dn
from . import ldap_kerberos, values
from .kerberos import Ticket

PAGE_SIZE = 500
# Owner, group and DACL. Asking for the SACL too (the default) makes AD withhold the whole attribute from
# accounts that are not admins, and an audit account should not be one.
SD_FLAGS = 0x07
# Nested groups deeper than this are a directory problem of their own; stop rather than loop.
MAX_NESTING = 32
SERVER_ATTRIBUTES = [
    "cn",
    "networkAddress",
    "msExchCurrentServerRoles",
    "serialNumber",
    "versionNumber",
    "msExchServerSite",
    "nTSecurityDescriptor",
]
T = TypeVar("T")
PRINCIPAL_ATTRIBUTES = ["objectSid", "sAMAccountName", "cn", "memberOf", "dNSHostName", "primaryGroupID", "objectClass"]


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
    raise DirectoryUnreachable("no domain controller could be bound: " + "; ".join(skipped))


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


def one_line(text: str, secret: str | None = None, limit: int = 300) -> str:
    """A DC's words for the terminal and the report: one line, control characters spelled out, at most `limit`
    characters, and never `secret` (a DC could echo what it was sent)."""
    if secret:
        text = text.replace(secret, "[password]")
    printable = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)
    return printable if len(printable) <= limit else printable[: limit - 1] + "\u2026"


def close(connection: ldap3.Connection) -> None:
    """Unbind, saying nothing: after a socket error ldap3 has already closed the connection and may raise again,
    and a DC that sent garbage can make it raise anything. The error that matters is the one already raised."""
    with contextlib.suppress(Exception):
        connection.unbind()


class DirectoryReader:
    """Reads an org's Directory facts over an open ldap3 connection."""

    def __init__(self, connection: ldap3.Connection, base_dn: str | None = None) -> None:
        self.connection = connection
        self.base_dn = base_dn

    def _search(
        self, base: str, search_filter: str, scope: str, attributes: list[str], *, descriptor: bool = False
    ) -> list[dict]:
        controls = security_descriptor_control(sdflags=SD_FLAGS) if descriptor else None
        where = base or "the rootDSE"
        try:
            response = self.connection.extend.standard.paged_search(
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
        result = self.connection.result or {}
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

    def read(self) -> Directory:
        root = self._search("", "(objectClass=*)", ldap3.BASE, ["configurationNamingContext", "defaultNamingContext"])
        if not root:
            raise DirectoryError("the rootDSE could not be read")
        configuration_dn = _text(root[0], "configurationNamingContext")
        domain_dn = self.base_dn or _text(root[0], "defaultNamingContext")
        if not configuration_dn or not domain_dn:
            raise DirectoryError("the rootDSE names no configuration or default naming context")
        exchange_dn = f"CN=Microsoft Exchange,CN=Services,{configuration_dn}"

        exchange = self._search(exchange_dn, "(objectClass=*)", ldap3.BASE, ["otherWellKnownObjects"])
        if not exchange:
            raise DirectoryError(f"{exchange_dn} does not exist: Exchange is not installed in this forest")
        orgs = self._search(
            exchange_dn, "(objectClass=msExchOrganizationContainer)", ldap3.LEVEL, ["cn"], descriptor=True
        )
        if len(orgs) != 1:
            raise DirectoryError(f"expected one Exchange organization under {exchange_dn}, found {len(orgs)}")
        org_dn = orgs[0]["dn"]

        servers = tuple(
            _decoded(_server, entry, "Exchange server")
            for entry in self._search(
                org_dn, "(objectCategory=msExchExchangeServer)", ldap3.SUBTREE, SERVER_ATTRIBUTES, descriptor=True
            )
        )
        computers = self._computers(domain_dn, servers)
        well_known = values.well_known_groups(_texts(exchange[0], "otherWellKnownObjects"))
        groups = self._groups(domain_dn, computers.values(), well_known.values())
        domain_sid = next((p.sid.rsplit("-", 1)[0] for p in computers.values()), None)
        return Directory(
            domain_dn=domain_dn,
            configuration_dn=configuration_dn,
            org_name=_text(orgs[0], "cn") or rdn_value(org_dn),
            org_dn=org_dn,
            org_security_descriptor=_raw(orgs[0], "nTSecurityDescriptor"),
            well_known_groups=well_known,
            extended_rights=self._extended_rights(configuration_dn),
            servers=tuple(sorted(servers, key=lambda s: s.name.lower())),
            computers=computers,
            groups=groups,
            auth_config=self._auth_config(org_dn),
            virtual_directories=self._virtual_directories(org_dn),
            domain_sid=domain_sid,
            netbios_domain=self._netbios_domain(configuration_dn, domain_dn),
        )

    def _netbios_domain(self, configuration_dn: str, domain_dn: str) -> str | None:
        entries = self._search(
            f"CN=Partitions,{configuration_dn}",
            f"(&(objectClass=crossRef)(nCName={escape_filter_chars(domain_dn)}))",
            ldap3.LEVEL,
            ["nETBIOSName"],
        )
        return _text(entries[0], "nETBIOSName") if entries else None

    def _extended_rights(self, configuration_dn: str) -> dict[str, str]:
        wanted = "".join(f"(cn={name})" for name in values.EXTENDED_RIGHTS)
        entries = self._search(
            f"CN=Extended-Rights,{configuration_dn}",
            f"(&(objectClass=controlAccessRight)(|{wanted}))",
            ldap3.LEVEL,
            ["cn", "rightsGuid"],
        )
        return {_text(e, "cn"): (_text(e, "rightsGuid") or "").lower() for e in entries}

    def _computers(self, domain_dn: str, servers: Iterable[ExchangeServer]) -> dict[str, Principal]:
        """Exchange finds a server's computer by host name (EXCHANGE_FACTS §1); one search for all of them."""
        servers = list(servers)
        if not servers:
            return {}
        terms = []
        for server in servers:
            terms.append(f"(sAMAccountName={escape_filter_chars(server.name)}$)")
            if server.fqdn:
                terms.append(f"(dNSHostName={escape_filter_chars(server.fqdn)})")
        entries = self._search(
            domain_dn, f"(&(objectCategory=computer)(|{''.join(terms)}))", ldap3.SUBTREE, PRINCIPAL_ATTRIBUTES
        )
        by_host = {}
        for entry in entries:
            principal = _decoded(_principal, entry, "computer")
            if principal.dns_host_name:
                by_host[principal.dns_host_name.lower()] = principal
            by_host[principal.name.lower()] = principal
        found = {}
        for server in servers:
            account = by_host.get((server.fqdn or "").lower()) or by_host.get(f"{server.name.lower()}$")
            if account is not None:
                found[server.name] = account
        return found

    def _groups(self, domain_dn: str, computers: Iterable[Principal], seeds: Iterable[str]) -> dict[str, Principal]:
        """Every group reachable from the computers and the well-known Exchange groups, level by level.

        tokenGroups would give each computer's groups in one read, but only on a base search of that computer:
        one round trip per server. Expanding memberOf by level costs one search per nesting level instead, and
        keeps the edges, which explain a deny as a chain (EX02$ -> Team -> Domain Admins).
        """
        computers = list(computers)
        groups: dict[str, Principal] = {}
        asked: set[str] = set()
        pending_dns = {dn for c in computers for dn in c.member_of} | set(seeds)
        pending_sids = {c.primary_group_sid for c in computers if c.primary_group_sid}
        for _level in range(MAX_NESTING):
            terms = [f"(distinguishedName={escape_filter_chars(dn)})" for dn in sorted(pending_dns)]
            terms += [f"(objectSid={_sid_filter(sid)})" for sid in sorted(pending_sids)]
            if not terms:
                break
            asked |= {dn.lower() for dn in pending_dns}
            # Builtin aliases (BUILTIN\Administrators, ...) live in CN=Builtin of the domain: same search base.
            entries = self._search(
                domain_dn, f"(&(objectClass=group)(|{''.join(terms)}))", ldap3.SUBTREE, PRINCIPAL_ATTRIBUTES
            )
            for entry in entries:
                group = _decoded(_principal, entry, "group")
                groups[group.dn.lower()] = group
                asked.add(group.dn.lower())
            # Primary groups are asked for by SID once; every later level follows memberOf DNs. A DN that
            # never resolves (a group in another domain) is asked for once, not at every level.
            pending_sids = set()
            pending_dns = {dn for g in groups.values() for dn in g.member_of if dn.lower() not in asked}
        return {group.dn: group for group in groups.values()}

    def _auth_config(self, org_dn: str) -> AuthConfig | None:
        dn = f"CN=Auth Configuration,{org_dn}"
        entries = self._search(
            dn, "(objectClass=*)", ldap3.BASE, ["msExchAuthCertificateThumbprint", "msExchAuthNextEffectiveDate"]
        )
        if not entries:
            return None
        raw = _texts(entries[0], "msExchAuthCertificateThumbprint")
        current, previous, upcoming = values.auth_thumbprints(raw)
        return AuthConfig(
            dn=entries[0]["dn"],
            current_thumbprint=current,
            previous_thumbprint=previous,
            next_thumbprint=upcoming,
            next_effective=_decoded(_next_effective, entries[0], "Auth Configuration"),
            raw_thumbprint_values=tuple(raw),
        )

    def _virtual_directories(self, org_dn: str) -> tuple[VirtualDirectory, ...]:
        entries = self._search(
            org_dn,
            "(objectClass=msExchWebServicesVirtualDirectory)",
            ldap3.SUBTREE,
            ["cn", "msExchInternalHostName", "msExchExternalHostName"],
        )
        directories = []
        for entry in entries:
            # CN=EWS (Default Web Site),CN=HTTP,CN=Protocols,CN=<server>,CN=Servers,...
            parts = split_dn(entry["dn"])
            server = rdn_value(parts[3]) if len(parts) > 3 else ""
            directories.append(
                VirtualDirectory(
                    dn=entry["dn"],
                    server=server,
                    name=_text(entry, "cn") or rdn_value(entry["dn"]),
                    object_class="msExchWebServicesVirtualDirectory",
                    internal_url=_text(entry, "msExchInternalHostName"),
                    external_url=_text(entry, "msExchExternalHostName"),
                )
            )
        return tuple(sorted(directories, key=lambda d: (d.server.lower(), d.name)))


def _references(response: list[dict] | None) -> list[str]:
    references = [entry for entry in response or [] if entry.get("type") == "searchResRef"]
    return [str(url) for entry in references for url in entry.get("uri") or []]


def _sid_filter(sid: str) -> str:
    return "".join(f"\\{byte:02x}" for byte in values.sid_to_bytes(sid))


def _raw(entry: dict, name: str) -> bytes | None:
    raw = entry.get("raw_attributes", {}).get(name) or []
    return bytes(raw[0]) if raw else None


def _texts(entry: dict, name: str) -> list[str]:
    return [bytes(v).decode("utf-8", errors="replace") for v in entry.get("raw_attributes", {}).get(name) or []]


def _text(entry: dict, name: str) -> str | None:
    texts = _texts(entry, name)
    return texts[0] if texts else None


def _server(entry: dict, _kind: str = "") -> ExchangeServer:
    serial = _text(entry, "serialNumber")
    version = values.version_from_serial_number(serial) if serial else None
    number = _text(entry, "versionNumber")
    if version is None and number and number.lstrip("-").isdigit():
        version = values.version_from_version_number(int(number))
    roles = _text(entry, "msExchCurrentServerRoles")
    site = _text(entry, "msExchServerSite")
    return ExchangeServer(
        name=_text(entry, "cn") or rdn_value(entry["dn"]),
        dn=entry["dn"],
        fqdn=values.fqdn_from_network_address(_texts(entry, "networkAddress")),
        roles=int(roles) if roles and roles.lstrip("-").isdigit() else 0,
        version=version,
        site=rdn_value(site) if site else None,
        security_descriptor=_raw(entry, "nTSecurityDescriptor"),
    )


def _decoded(decode: Callable[..., T], entry: dict, kind: str) -> T:
    """`decode(entry, kind)`, or a DirectoryError naming the entry: never a traceback out of the collector.

    A principal whose objectSid cannot be read (withheld from the audit account, or not a SID) stops the read
    rather than being skipped: every token and membership chain through it would be unknown, and judging
    without it could pass a server whose computer account is in fact denied. The message names the entry, so
    the read permission (or the object) can be fixed.
    """
    try:
        return decode(entry, kind)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise DirectoryError(f"{entry.get('dn') or 'an entry'}: cannot read this {kind}: {exc}") from None


def _next_effective(entry: dict, _kind: str) -> datetime | None:
    return values.parse_generalized_time(_text(entry, "msExchAuthNextEffectiveDate"))


def _principal(entry: dict, kind: str) -> Principal:
    raw_sid = _raw(entry, "objectSid")
    if not raw_sid:
        raise ValueError("no objectSid (not readable by the audit account?)")
    sid = values.sid_from_bytes(raw_sid)
    primary = _text(entry, "primaryGroupID")
    return Principal(
        dn=entry["dn"],
        sid=sid,
        name=_text(entry, "sAMAccountName") or _text(entry, "cn") or rdn_value(entry["dn"]),
        member_of=tuple(_texts(entry, "memberOf")),
        kind=kind,
        dns_host_name=_text(entry, "dNSHostName"),
        primary_group_sid=f"{sid.rsplit('-', 1)[0]}-{primary}" if primary and primary.isdigit() else None,
    )
