"""Reading the org from Active Directory with ldap3: read-only, and in a number of round trips that does not
grow with the number of servers (one filtered search per kind of object, not one search per server)."""

from __future__ import annotations

import contextlib
import re
import ssl
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar
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
from ldap3.utils.conv import escape_filter_chars

from ..config import Credentials, OrgConfig
from ..facts import (
    NETWORK_LOGON_SIDS,
    AuthConfig,
    Directory,
    Domain,
    ExchangeServer,
    Principal,
    TokenGroups,
    VirtualDirectory,
)
from ..names import dns_domain_of, parent_dn, rdn_value, split_dn
from ..text import one_line
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
_PRINCIPAL = ["objectSid", "sAMAccountName", "cn", "memberOf", "sIDHistory", "objectClass"]
COMPUTER_ATTRIBUTES = [*_PRINCIPAL, "dNSHostName", "primaryGroupID"]
# `member` gives the edges (which of the principals asked for a group holds); groupType, its scope.
GROUP_ATTRIBUTES = [*_PRINCIPAL, "member", "groupType"]
TOKEN_ATTRIBUTES = ["tokenGroups", "tokenGroupsGlobalAndUniversal"]
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


@dataclass
class _Source:
    """One connection the read searches, and what it is to the read."""

    name: str  # host:port, for the evidence
    connection: ldap3.Connection
    base: str  # "" for the global catalog (the whole forest), else a domain's naming context (or base_dn)
    domain: str | None  # the domain's NC DN; None for the global catalog
    unavailable: str | None = None  # set when a search on it broke off: nothing more is asked of it


class DirectoryReader:
    """Reads an org's Directory facts: the configuration from the first DC, memberships from the global catalog and
    a DC of each domain that a server's token needs (`sources`; without them, the first DC alone)."""

    def __init__(
        self, connection: ldap3.Connection, base_dn: str | None = None, sources: Sources | None = None
    ) -> None:
        self.connection = connection
        self.base_dn = base_dn
        self.sources = sources
        self.main_name = sources.main_name if sources is not None else "the directory server"
        # Searches waited for, on every connection: a pipelined batch of base reads counts once (round_trips), each
        # read in it once (pipelined).
        self.round_trips = 0
        self.pipelined_reads = 0

    def _search(
        self,
        base: str,
        search_filter: str,
        scope: str,
        attributes: list[str],
        *,
        descriptor: bool = False,
        connection: ldap3.Connection | None = None,
    ) -> list[dict]:
        connection = connection or self.connection
        self.round_trips += 1
        return _search(connection, base, search_filter, scope, attributes, descriptor=descriptor)

    def pipelined(self, connection: ldap3.Connection, dns: list[str], attributes: list[str]) -> dict[str, dict]:
        self.round_trips += -(-len(dns) // PIPELINE)
        self.pipelined_reads += len(dns)
        return pipelined_reads(connection, dns, attributes)

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
        containers = self._container_descriptors(exchange_dn, servers)
        well_known = values.well_known_groups(_texts(exchange[0], "otherWellKnownObjects"))
        forest = _Forest(self, configuration_dn, domain_dn)
        computers = forest.computers(servers)
        groups = forest.groups(computers.values(), well_known.values())
        computers = forest.with_token_groups(computers, groups)
        domains = forest.domain_facts([*computers.values(), *groups.values()])
        main = forest.main_domain
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
            domain_sid=next((d.sid for d in domains if d.dn.lower() == main.dn.lower()), None),
            netbios_domain=main.netbios_name,
            domains=domains,
            global_catalog=forest.global_catalog_name,
            global_catalog_unavailable=forest.global_catalog_unavailable,
            container_descriptors=containers,
        )

    def _container_descriptors(self, exchange_dn: str, servers: Iterable[ExchangeServer]) -> dict[str, bytes]:
        """The descriptors of every container between the server objects and CN=Microsoft Exchange, that one
        included: the Servers containers, the administrative groups, Administrative Groups, the organization. One
        search, however many servers: they share a handful of ancestors."""
        ancestors: dict[str, str] = {}
        for server in servers:
            dn = parent_dn(server.dn)
            while dn and dn.lower() not in ancestors:
                ancestors[dn.lower()] = dn
                if dn.lower() == exchange_dn.lower():
                    break
                dn = parent_dn(dn)
        if not ancestors:
            return {}
        terms = "".join(f"(distinguishedName={escape_filter_chars(dn)})" for dn in sorted(ancestors.values()))
        entries = self._search(exchange_dn, f"(|{terms})", ldap3.SUBTREE, ["nTSecurityDescriptor"], descriptor=True)
        found = {entry["dn"]: _raw(entry, "nTSecurityDescriptor") for entry in entries}
        return {dn: descriptor for dn, descriptor in found.items() if descriptor is not None}

    def _extended_rights(self, configuration_dn: str) -> dict[str, str]:
        wanted = "".join(f"(cn={name})" for name in values.EXTENDED_RIGHTS)
        entries = self._search(
            f"CN=Extended-Rights,{configuration_dn}",
            f"(&(objectClass=controlAccessRight)(|{wanted}))",
            ldap3.LEVEL,
            ["cn", "rightsGuid"],
        )
        return {_text(e, "cn"): (_text(e, "rightsGuid") or "").lower() for e in entries}

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


class _Forest:
    """Who is in which group, across the forest: the token each server's computer account presents.

    Windows builds it from three places (EXCHANGE_FACTS §2, and MS-PAC / MS-KILE): the global groups of the
    account's own domain and the universal groups of the whole forest (the account's DC, with a global catalog, puts
    them in its Kerberos ticket: tokenGroupsGlobalAndUniversal); then the domain-local groups of the domain of the
    server being called (its KDC, or with NTLM its DC, adds them when the account reaches a service there); then
    that server's own local groups. The Exchange back end checks token serialization on its own server object
    against that token, so the domain-local groups that matter are those of the back end's domain (the domain of
    its computer account), not the caller's and not the configuration's: a server calling back ends in two domains
    presents two different tokens.

    So memberships are read from the global catalog (universal groups anywhere, by `member`: a GC holds the
    membership of universal groups only) and from a DC of each domain that holds a server's computer account, or
    the [directory] one's (the global and domain-local groups of that domain, whatever domain their members are
    from). Level by level, one search per source per nesting level, whatever the number of servers: the groups
    whose `member` names a principal found at the level before.
    """

    def __init__(self, reader: DirectoryReader, configuration_dn: str, domain_dn: str) -> None:
        self.reader = reader
        self.configuration_dn = configuration_dn
        self.domain_dn = domain_dn
        self.partitions = self._partitions()
        self.main_domain = _domain_of(domain_dn, self.partitions) or Domain(domain_dn, dns_domain_of(domain_dn))
        self.main = _Source(reader.main_name, reader.connection, domain_dn, self.main_domain.dn)
        self.global_catalog: _Source | None = None
        self.global_catalog_unavailable: str | None = None
        self._open_global_catalog()
        self.domain_sources: dict[str, _Source | str] = {self.main_domain.dn.lower(): self.main}
        self._edges: dict[str, list[str]] = {}

    @property
    def several_domains(self) -> bool:
        return len(self.partitions) > 1

    @property
    def global_catalog_name(self) -> str | None:
        return self.global_catalog.name if self.global_catalog and not self.global_catalog.unavailable else None

    def _partitions(self) -> tuple[Domain, ...]:
        """The forest's domains: the crossRefs of domain naming contexts (systemFlags FLAG_CR_NTDS_DOMAIN)."""
        entries = self.reader._search(
            f"CN=Partitions,{self.configuration_dn}",
            "(&(objectClass=crossRef)(systemFlags:1.2.840.113556.1.4.803:=2))",
            ldap3.LEVEL,
            ["nCName", "dnsRoot", "nETBIOSName"],
        )
        domains = []
        for entry in entries:
            dn = _text(entry, "nCName")
            if dn:
                dns = _text(entry, "dnsRoot") or dns_domain_of(dn)
                domains.append(Domain(dn=dn, dns_name=dns, netbios_name=_text(entry, "nETBIOSName")))
        return tuple(domains)

    def _open_global_catalog(self) -> None:
        sources = self.reader.sources
        if sources is None:
            self.global_catalog_unavailable = "not read: the reader was given no global catalog"
            return
        opened = sources.global_catalog()
        if isinstance(opened, str):
            self.global_catalog_unavailable = f"no global catalog answered: {opened}"
            return
        connection, name = opened
        self.global_catalog = _Source(name, connection, "", None)

    def _ask(self, source: _Source, search_filter: str, attributes: list[str]) -> list[dict] | None:
        """Search one source; a search that breaks off on the first DC ends the read (DirectoryError), on any other
        source it makes that source unavailable (None), for the rows that need it to say so."""
        if source.unavailable:
            return None
        try:
            return self.reader._search(
                source.base, search_filter, ldap3.SUBTREE, attributes, connection=source.connection
            )
        except DirectoryError as exc:
            if source is self.main:
                raise
            source.unavailable = f"{source.name}: {exc}"
            if source is self.global_catalog:
                self.global_catalog_unavailable = f"the global catalog broke off: {source.unavailable}"
            return None

    # --- computers ---------------------------------------------------------------------------------------------

    def computers(self, servers: Iterable[ExchangeServer]) -> dict[str, Principal]:
        """Exchange finds a server's computer by host name (EXCHANGE_FACTS §1); one search for all of them, in the
        global catalog (any domain of the forest), else on the first DC (its domain only)."""
        servers = list(servers)
        if not servers:
            return {}
        terms = []
        for server in servers:
            terms.append(f"(sAMAccountName={escape_filter_chars(server.name)}$)")
            if server.fqdn:
                terms.append(f"(dNSHostName={escape_filter_chars(server.fqdn)})")
        search_filter = f"(&(objectCategory=computer)(|{''.join(terms)}))"
        entries = self._ask(self.global_catalog, search_filter, COMPUTER_ATTRIBUTES) if self.global_catalog else None
        if entries is None:
            entries = self._ask(self.main, search_filter, COMPUTER_ATTRIBUTES) or []
        by_host: dict[str, Principal] = {}
        by_account: dict[str, list[Principal]] = {}
        for entry in entries:
            principal = _decoded(_principal, entry, "computer")
            if principal.dns_host_name:
                by_host[principal.dns_host_name.lower()] = principal
            by_account.setdefault(principal.name.lower(), []).append(principal)
        found = {}
        for server in servers:
            fqdn = (server.fqdn or "").lower()
            account = by_host.get(fqdn) or _same_domain(by_account.get(f"{server.name.lower()}$", []), fqdn)
            if account is not None:
                found[server.name] = account
        return found

    # --- groups ------------------------------------------------------------------------------------------------

    def _sources(self, computers: Iterable[Principal]) -> list[_Source]:
        """The global catalog, and a DC of each domain whose groups a token needs: the first DC's domain, and each
        domain that holds a server's computer account (the back ends' domains, and the callers' own)."""
        wanted = {self.main_domain.dn.lower(): self.main_domain}
        for computer in computers:
            domain = _domain_of(computer.dn, self.partitions)
            if domain is not None:
                wanted.setdefault(domain.dn.lower(), domain)
        others = [d for key, d in wanted.items() if key not in self.domain_sources]
        if others:
            controllers = self._controllers()
            for domain in others:
                self.domain_sources[domain.dn.lower()] = self._domain_source(domain, controllers)
        found = [self.global_catalog] if self.global_catalog else []
        return found + [s for key in wanted if isinstance(s := self.domain_sources[key], _Source)]

    def _controllers(self) -> dict[str, list[str]]:
        """Domain NC DN (lower-case) -> its DCs' host names, from each DC's NTDS Settings in CN=Sites."""
        entries = self.reader._search(
            f"CN=Sites,{self.configuration_dn}",
            "(|(objectClass=nTDSDSA)(objectClass=server))",
            ldap3.SUBTREE,
            ["dNSHostName", "msDS-HasDomainNCs", "hasMasterNCs"],
        )
        hosts = {entry["dn"].lower(): _text(entry, "dNSHostName") for entry in entries}
        domains = {d.dn.lower() for d in self.partitions}
        controllers: dict[str, list[str]] = {}
        for entry in entries:
            host = hosts.get(parent_dn(entry["dn"]).lower())
            held = _texts(entry, "msDS-HasDomainNCs") or _texts(entry, "hasMasterNCs")
            for nc in held:
                if host and nc.lower() in domains:
                    controllers.setdefault(nc.lower(), []).append(host)
        return controllers

    def _domain_source(self, domain: Domain, controllers: dict[str, list[str]]) -> _Source | str:
        sources = self.reader.sources
        if sources is None:
            return "not read: the reader was given no connection to it"
        listed = controllers.get(domain.dn.lower(), [])
        # The [directory] servers that are DCs of this domain first: the admin's order.
        ordered = [h for h in sources.config.directory.servers if h.lower() in {x.lower() for x in listed}]
        ordered += [h for h in listed if h.lower() not in {x.lower() for x in ordered}]
        if not ordered:
            return f"no DC of {domain.dns_name} is listed in CN=Sites,{self.configuration_dn}"
        opened = sources.domain_controller(tuple(ordered))
        if isinstance(opened, str):
            return f"no DC of {domain.dns_name} answered: {opened}"
        connection, name = opened
        return _Source(name, connection, domain.dn, domain.dn)

    def groups(self, computers: Iterable[Principal], well_known: Iterable[str]) -> dict[str, Principal]:
        """Every group (and foreign security principal) that holds a computer or an Exchange group, transitively,
        with the edges that explain a deny as a chain (EX02$ -> Team -> Domain Admins).

        tokenGroups would give a computer's groups in one read, but only on a base search of that computer: one
        round trip per server. Asking, level by level, for the groups whose `member` names what the level before
        found costs one search per source per nesting level instead. Level 0 also asks for the Exchange groups by
        DN, the computers' primary groups by SID (primaryGroupID is no `member` link) and the foreign security
        principals of the SIDs every network logon carries (a domain-local group holding "Authenticated Users" holds
        every caller)."""
        computers = list(computers)
        sources = self._sources(computers)
        found: dict[str, _Found] = {}
        member_terms = {c.dn.lower(): c.dn for c in computers}
        dn_terms = {dn.lower(): dn for dn in well_known}
        sid_terms = {c.primary_group_sid for c in computers if c.primary_group_sid}
        asked: set[str] = set()
        for level in range(MAX_NESTING):
            terms = [f"(member={escape_filter_chars(dn)})" for key, dn in sorted(member_terms.items())]
            terms += [f"(distinguishedName={escape_filter_chars(dn)})" for key, dn in sorted(dn_terms.items())]
            terms += [f"(objectSid={_sid_filter(sid)})" for sid in sorted(sid_terms)]
            if not terms:
                break
            groups_filter = f"(&(objectClass=group)(|{''.join(terms)}))"
            # Level 0 also asks each domain's DC for the foreign security principals of the network-logon SIDs in its
            # CN=ForeignSecurityPrincipals (the global catalog would add their namesakes in the configuration NC's
            # CN=WellKnown Security Principals, which no group holds).
            wellknown = "".join(f"(objectSid={_sid_filter(sid)})" for sid in sorted(NETWORK_LOGON_SIDS))
            foreign = f"(|{groups_filter}(&(objectClass=foreignSecurityPrincipal)(|{wellknown})))"
            asked |= set(member_terms) | set(dn_terms)
            new: list[str] = []
            for source in sources:
                search_filter = foreign if level == 0 and source.domain is not None else groups_filter
                for entry in self._ask(source, search_filter, GROUP_ATTRIBUTES) or []:
                    key = entry["dn"].lower()
                    if key not in found:
                        found[key] = _Found(entry)
                        new.append(key)
                    else:  # the same group from the GC and from its domain's DC: each holds part of its links
                        found[key].merge(entry)
            member_terms = {key: found[key].dn for key in new if key not in asked}
            # memberOf names a group no `member` search returned (one the audit account may not list, or of a
            # domain not read): asked for by DN once, so it is at least named.
            named = {dn.lower(): dn for f in found.values() for dn in f.member_of}
            dn_terms = {key: dn for key, dn in named.items() if key not in found and key not in asked}
            sid_terms = set()
        edges: dict[str, list[str]] = {}
        for item in found.values():
            for member in item.members:
                edges.setdefault(member.lower(), []).append(item.dn)
        groups = {}
        for key, item in found.items():
            principal = _decoded(_principal, item.entry, item.kind)
            linked = tuple(dict.fromkeys([*item.member_of, *edges.get(key, ())]))
            groups[principal.dn] = replace(principal, member_of=linked)
        self._edges = edges
        return groups

    def with_computer_edges(self, computers: dict[str, Principal]) -> dict[str, Principal]:
        return {
            name: replace(c, member_of=tuple(dict.fromkeys([*c.member_of, *self._edges.get(c.dn.lower(), ())])))
            for name, c in computers.items()
        }

    # --- tokenGroups, the cross-check ---------------------------------------------------------------------------

    def with_token_groups(self, computers: dict[str, Principal], groups: dict[str, Principal]) -> dict[str, Principal]:
        """Each computer with its edges, and its tokenGroups and tokenGroupsGlobalAndUniversal read from a DC of
        its own domain. Both are constructed attributes AD returns on a base-scope read only: one read per
        computer, sent pipelined on the domain's connection (PIPELINE requests in flight), so the reads cost
        about one round trip for up to PIPELINE servers, and the DC's work for each."""
        computers = self.with_computer_edges(computers)
        by_domain: dict[str, list[str]] = {}
        for name, computer in computers.items():
            domain = _domain_of(computer.dn, self.partitions) or self.main_domain
            by_domain.setdefault(domain.dn.lower(), []).append(name)
        for key, names in by_domain.items():
            source = self.domain_sources.get(key)
            if not isinstance(source, _Source) or source.unavailable:
                continue
            try:
                entries = self.reader.pipelined(source.connection, [computers[n].dn for n in names], TOKEN_ATTRIBUTES)
            except DirectoryError as exc:
                if source is self.main:
                    raise
                source.unavailable = f"{source.name}: {exc}"
                continue
            for name in names:
                entry = entries.get(computers[name].dn.lower())
                if entry is not None:
                    tokens = TokenGroups(source.name, _sids(entry, "tokenGroups"), _sids(entry, TOKEN_ATTRIBUTES[1]))
                    computers[name] = replace(computers[name], token_groups=tokens)
        return computers

    def domain_facts(self, principals: Iterable[Principal]) -> tuple[Domain, ...]:
        """Each domain of the forest, with its SID (from a principal found in it) and whether it was read."""
        sids: dict[str, str] = {}
        for principal in principals:
            domain = _domain_of(principal.dn, self.partitions)
            if domain is not None and principal.kind != "foreign" and not principal.sid.startswith("S-1-5-32-"):
                sids.setdefault(domain.dn.lower(), principal.sid.rsplit("-", 1)[0])
        domains = []
        for domain in self.partitions or (self.main_domain,):
            source = self.domain_sources.get(domain.dn.lower())
            read = isinstance(source, _Source) and not source.unavailable
            why = source if isinstance(source, str) else source.unavailable if isinstance(source, _Source) else None
            domains.append(
                replace(
                    domain,
                    sid=sids.get(domain.dn.lower()),
                    controller=source.name if read else None,  # type: ignore[union-attr]
                    unavailable=why,
                )
            )
        return tuple(domains)


class _Found:
    """A group or foreign security principal as the sources returned it, its links merged across sources."""

    def __init__(self, entry: dict) -> None:
        self.entry = entry
        self.dn: str = entry["dn"]
        classes = {c.lower() for c in _texts(entry, "objectClass")}
        self.kind = "foreign" if "foreignsecurityprincipal" in classes else "group"
        self.members = _texts(entry, "member")
        self.member_of = _texts(entry, "memberOf")

    def merge(self, entry: dict) -> None:
        self.members = list(dict.fromkeys([*self.members, *_texts(entry, "member")]))
        self.member_of = list(dict.fromkeys([*self.member_of, *_texts(entry, "memberOf")]))


def _domain_of(dn: str, domains: Iterable[Domain]) -> Domain | None:
    """The domain whose naming context holds `dn`: the longest one it ends with (a child's DN also ends with its
    parent domain's)."""
    lowered = dn.lower()
    holding = [d for d in domains if lowered == d.dn.lower() or lowered.endswith("," + d.dn.lower())]
    return max(holding, key=lambda d: len(d.dn), default=None)


def _same_domain(candidates: list[Principal], fqdn: str) -> Principal | None:
    """Of computers with the same sAMAccountName in several domains, the one in the domain the FQDN names."""
    for candidate in candidates:
        if fqdn.endswith("." + dns_domain_of(candidate.dn).lower()):
            return candidate
    return candidates[0] if candidates else None


def _search(
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
    requests are sent with its `send` and the answers read with its own receiver and decoder."""
    strategy = connection.strategy
    found: dict[str, dict] = {}
    for start in range(0, len(dns), PIPELINE):
        waiting: dict[int, tuple[str, list[dict]]] = {}
        try:
            for dn in dns[start : start + PIPELINE]:
                request = search_operation(
                    dn, "(objectClass=*)", ldap3.BASE, ldap3.DEREF_NEVER, attributes, 0, 0, False, False,
                    connection.auto_encode, None, validator=None, check_names=False,
                )  # fmt: skip
                waiting[connection.send("searchRequest", request, None)] = (dn, [])
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
        except DirectoryError:
            raise
        except Exception as exc:  # as _search: a broken connection or an undecodable answer is one line
            raise DirectoryError(f"reading tokenGroups failed: {_reason(exc, '', 'search')}") from None
        finally:
            for message_id in waiting:  # ldap3 keeps each request sent until its answer is fetched
                strategy._outstanding.pop(message_id, None)
    return found


def _sids(entry: dict, name: str) -> tuple[str, ...] | None:
    raw = entry.get("raw_attributes", {}).get(name)
    return None if not raw else tuple(values.sid_from_bytes(bytes(value)) for value in raw)


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
    group_type = _text(entry, "groupType")
    history = entry.get("raw_attributes", {}).get("sIDHistory") or []
    return Principal(
        dn=entry["dn"],
        sid=sid,
        name=_text(entry, "sAMAccountName") or _text(entry, "cn") or rdn_value(entry["dn"]),
        member_of=tuple(_texts(entry, "memberOf")),
        kind=kind,
        dns_host_name=_text(entry, "dNSHostName"),
        primary_group_sid=f"{sid.rsplit('-', 1)[0]}-{primary}" if primary and primary.isdigit() else None,
        group_type=int(group_type) & 0xFFFFFFFF if group_type and group_type.lstrip("-").isdigit() else None,
        sid_history=tuple(values.sid_from_bytes(bytes(value)) for value in history),
    )
