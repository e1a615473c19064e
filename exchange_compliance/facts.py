"""The facts the suite collects about an org: plain, immutable, typed data.

Collectors (exchange_compliance.collect) build these from LDAP, WinRM and TLS; the judges
(exchange_compliance.judge) are pure functions over them; snapshots (exchange_compliance.snapshot)
write and read them as JSON, so a run can be judged later or replayed from a bug report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from .text import grouped, servers_phrase

# msExchCurrentServerRoles bits, as Exchange tests them (EXCHANGE_FACTS.md §1).
ROLE_BITS = {
    "Cafe": 1,
    "Mailbox": 2,
    "ClientAccess": 4,
    "UnifiedMessaging": 16,
    "HubTransport": 32,
    "Edge": 64,
    "Monitoring": 128,
    "ProvisionedServer": 4096,
    "LanguagePacks": 8192,
    "FrontendTransport": 16384,
}


# Exchange SE's builds start at 15.2.2562 (SE RTM is 15.2.2562.17); Exchange 2019's last CU, CU15, is 15.2.1748.
# Microsoft's CSS-Exchange tells them apart the same way (Shared/Get-ExchangeBuildVersionInformation.ps1).
EXCHANGE_SE_FIRST_BUILD = 2562


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    build: int
    revision: int | None = None

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.build}"
        return base if self.revision is None else f"{base}.{self.revision}"

    @property
    def product(self) -> str:
        """The product, from the build: Exchange Server Subscription Edition kept Exchange 2019's 15.2."""
        if (self.major, self.minor) == (15, 2) and self.build >= EXCHANGE_SE_FIRST_BUILD:
            return "Exchange SE"
        return {(15, 0): "Exchange 2013", (15, 1): "Exchange 2016", (15, 2): "Exchange 2019"}.get(
            (self.major, self.minor), f"Exchange {self.major}.{self.minor}"
        )


@dataclass(frozen=True)
class ExchangeServer:
    """An msExchExchangeServer object in the configuration naming context."""

    name: str
    dn: str
    fqdn: str | None
    roles: int
    version: Version | None
    site: str | None
    security_descriptor: bytes | None = field(default=None, repr=False)

    @property
    def is_mailbox(self) -> bool:
        return bool(self.roles & ROLE_BITS["Mailbox"])

    @property
    def is_client_access(self) -> bool:
        return bool(self.roles & ROLE_BITS["ClientAccess"])

    @property
    def is_edge(self) -> bool:
        return bool(self.roles & ROLE_BITS["Edge"])

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(name for name, bit in ROLE_BITS.items() if self.roles & bit)

    @property
    def host_name(self) -> str:
        return (self.fqdn or self.name).split(".")[0]


# What every network logon adds to a token (EXCHANGE_FACTS §2): Everyone, Authenticated Users, NETWORK, This
# Organization. Domain-local groups can hold them, as foreign security principals named by these SIDs.
NETWORK_LOGON_SIDS = frozenset({"S-1-1-0", "S-1-5-11", "S-1-5-2", "S-1-5-15"})

# groupType bits (MS-ADTS 2.2.12): a group's scope, and whether it is a security group at all (a distribution
# group is never in a token).
GROUP_TYPE_BUILTIN_LOCAL = 0x1
GROUP_TYPE_GLOBAL = 0x2
GROUP_TYPE_DOMAIN_LOCAL = 0x4
GROUP_TYPE_UNIVERSAL = 0x8
GROUP_TYPE_SECURITY = 0x80000000


@dataclass(frozen=True)
class TokenGroups:
    """A computer account's tokenGroups and tokenGroupsGlobalAndUniversal (SIDs), read from a DC of its own domain:
    the groups Windows itself puts in the account's token, to check the suite's expansion against. None: the DC did
    not return the attribute (the audit account may not read it)."""

    controller: str
    token_groups: tuple[str, ...] | None
    global_and_universal: tuple[str, ...] | None


@dataclass(frozen=True)
class Principal:
    """A computer account, a group, or a foreign security principal: what tokens and membership chains are made of."""

    dn: str
    sid: str
    name: str
    # the groups it is directly in, as read (memberOf) and as found (the groups whose `member` names it)
    member_of: tuple[str, ...] = ()
    kind: str = "group"  # "computer", "group" or "foreign" (a foreign security principal, named by its SID)
    dns_host_name: str | None = None
    primary_group_sid: str | None = None
    # groupType as read; None in evidence files of earlier versions (scope unknown: the group counts everywhere)
    group_type: int | None = None
    # sIDHistory: Windows puts these SIDs in the token beside objectSid
    sid_history: tuple[str, ...] = ()
    token_groups: TokenGroups | None = None  # computers only

    @property
    def scope(self) -> str | None:
        """ "global", "universal", "domain_local" (builtin aliases included), "distribution" (a group no token
        carries), or None: not a group, or a group whose groupType was not read."""
        if self.kind != "group" or self.group_type is None:
            return None
        group_type = self.group_type & 0xFFFFFFFF
        if not group_type & GROUP_TYPE_SECURITY:
            return "distribution"
        if group_type & GROUP_TYPE_UNIVERSAL:
            return "universal"
        if group_type & GROUP_TYPE_GLOBAL:
            return "global"
        return "domain_local"


@dataclass(frozen=True)
class Domain:
    """A domain of the forest (a crossRef in CN=Partitions), and how far the suite could read it."""

    dn: str
    dns_name: str
    netbios_name: str | None = None
    sid: str | None = None
    # the DC its global and domain-local groups (and its computers' tokenGroups) were read from, host:port
    controller: str | None = None
    # why no DC of it could be read; with controller None as well, it was not needed (no server's token needs it)
    unavailable: str | None = None


@dataclass(frozen=True)
class AuthConfig:
    """CN=Auth Configuration: what Get-AuthConfig shows."""

    dn: str
    current_thumbprint: str | None
    previous_thumbprint: str | None
    next_thumbprint: str | None
    next_effective: datetime | None
    raw_thumbprint_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class VirtualDirectory:
    dn: str
    server: str
    name: str
    object_class: str
    internal_url: str | None
    external_url: str | None


@dataclass(frozen=True)
class Directory:
    """Everything read from Active Directory, in a number of round trips independent of the server count."""

    domain_dn: str
    configuration_dn: str
    org_name: str
    org_dn: str
    org_security_descriptor: bytes | None = field(repr=False)
    # well-known role ("exchange_servers", ...) -> group DN, from otherWellKnownObjects
    well_known_groups: dict[str, str]
    # extended right CN -> rightsGuid (lower-case, dashed)
    extended_rights: dict[str, str]
    servers: tuple[ExchangeServer, ...]
    # server name -> its computer account; a server whose account was not found is absent
    computers: dict[str, Principal]
    # DN -> every group reachable from the computers (transitively), for tokens and chains
    groups: dict[str, Principal]
    auth_config: AuthConfig | None
    virtual_directories: tuple[VirtualDirectory, ...]
    domain_sid: str | None = None
    # nETBIOSName of the domain's crossRef in CN=Partitions: the DOMAIN of DOMAIN\name in fixes
    netbios_domain: str | None = None
    # the [directory] server that was read, and each one passed over before it: "dc01.contoso.com:636: why"
    domain_controller: str | None = None
    skipped_controllers: tuple[str, ...] = ()
    # The forest's domains, as CN=Partitions lists them; () in evidence files of earlier versions (one domain).
    domains: tuple[Domain, ...] = ()
    # the global catalog that was read (host:port), or why none could be
    global_catalog: str | None = None
    global_catalog_unavailable: str | None = None
    # nTSecurityDescriptor (owner, group, DACL) of the server objects' ancestors up to CN=Microsoft Exchange, by DN:
    # where an inherited ACE is set
    container_descriptors: dict[str, bytes] = field(default_factory=dict, repr=False)

    def server(self, name: str) -> ExchangeServer:
        for server in self.servers:
            if server.name.lower() == name.lower():
                return server
        raise KeyError(name)


@dataclass(frozen=True)
class StoreCertificate:
    """A certificate in Cert:\\LocalMachine\\My as the probe reported it; `der` is what the judges parse."""

    thumbprint: str
    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    has_private_key: bool
    friendly_name: str
    der: bytes = field(repr=False)


@dataclass(frozen=True)
class SiteBinding:
    """One IIS binding of a site (Get-WebBinding)."""

    site: str
    protocol: str
    binding_information: str
    certificate_hash: str | None
    certificate_store: str | None

    @property
    def port(self) -> int | None:
        parts = self.binding_information.split(":")
        try:
            return int(parts[1])
        except (IndexError, ValueError):
            return None


@dataclass(frozen=True)
class SslCertBinding:
    """One http.sys SSL binding, as http.sys keeps it in the registry (HKLM\\SYSTEM\\CurrentControlSet\\Services\\
    HTTP\\Parameters\\SslBindingInfo, SslSniBindingInfo, SslCcsBindingInfo), what `netsh http show sslcert` shows.

    `ip_port` is the endpoint the binding is for, in netsh's form for its `kind`: "0.0.0.0:444" for an IP
    binding ("ipport"), "mail.contoso.com:443" for an SNI binding ("hostnameport"), "443" for a central
    certificate store binding ("ccs", which has no certificate hash: the certificates come from the share).
    `certificate_hash` is SslCertHash as an upper-case thumbprint; `application_id` AppId as "{guid}";
    `store_name` SslCertStoreName as written (None when absent, which http.sys reads as MY).
    """

    ip_port: str
    certificate_hash: str | None
    application_id: str | None
    store_name: str | None
    kind: str = "ipport"


@dataclass(frozen=True)
class ServerProbe:
    """What the WinRM probe read on one server."""

    computer_name: str
    last_boot: datetime | None
    certificates: tuple[StoreCertificate, ...]
    bindings: tuple[SiteBinding, ...]
    ssl_bindings: tuple[SslCertBinding, ...]


@dataclass(frozen=True)
class Handshake:
    """The leaf certificate a server presented in a TLS handshake, untrusted: the judges decide."""

    host: str
    address: str
    port: int
    der: bytes = field(repr=False)
    tls_version: str | None = None


# What collected an Unavailable fact, as the output names it.
SOURCE_LABELS = {"winrm": "WinRM", "tls": "TLS (444)"}


@dataclass(frozen=True)
class Unavailable:
    """A fact that could not be collected, and why; it turns the rows that need it into errors.

    `reason` does not name the server (`server` does): the same failure on 200 servers reads as one reason."""

    source: str
    server: str
    reason: str

    @property
    def label(self) -> str:
        return SOURCE_LABELS.get(self.source, self.source)

    @property
    def text(self) -> str:
        """`WinRM on EX05: connection refused`."""
        return f"{self.label} on {self.server}: {self.reason}"


class InvalidFact(ValueError):
    """A value outside what the fact can be; `key` names the field (the evidence reader adds where it was)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


# [thresholds] auth_certificate_warning_days: the org config and an evidence file accept the same days.
WARNING_DAYS_RANGE = (0, 3650)


@dataclass(frozen=True)
class JudgingSettings:
    """The org config's settings the judges need, recorded with the facts so that a replay judges the same."""

    hybrid: bool
    auth_certificate_warning_days: int

    def __post_init__(self) -> None:
        if not isinstance(self.hybrid, bool):
            raise InvalidFact("hybrid", f"expected true or false, got {self.hybrid!r}")
        days, (low, high) = self.auth_certificate_warning_days, WARNING_DAYS_RANGE
        if isinstance(days, bool) or not isinstance(days, int):
            raise InvalidFact("auth_certificate_warning_days", f"expected a whole number of days, got {days!r}")
        if not low <= days <= high:
            raise InvalidFact("auth_certificate_warning_days", f"{days} is out of range {low}..{high}")


@dataclass(frozen=True)
class OrgFacts:
    org: str
    collected_at: datetime
    directory: Directory
    # the servers this run checks (after the config's include/exclude), by name
    checked: tuple[str, ...]
    probes: dict[str, ServerProbe | Unavailable]
    handshakes: dict[str, Handshake | Unavailable]
    settings: JudgingSettings
    # the org config's [servers] patterns that chose `checked`: why a server is or is not in it
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def checked_servers(self) -> tuple[ExchangeServer, ...]:
        wanted = {name.lower() for name in self.checked}
        return tuple(s for s in self.directory.servers if s.name.lower() in wanted)

    def unreachable(self) -> dict[str, tuple[Unavailable, ...]]:
        """The servers whose WinRM probe or TLS handshake could not be made, by name (sorted), with why.

        The one answer to "which servers are unreachable": the collector's progress line, latest.json and the
        report header all use it, so they never disagree.
        """
        found: dict[str, list[Unavailable]] = {}
        for fact in (*self.probes.values(), *self.handshakes.values()):
            if isinstance(fact, Unavailable):
                found.setdefault(fact.server, []).append(fact)
        return {server: tuple(found[server]) for server in sorted(found)}

    def unreachable_groups(self) -> list[tuple[str, list[str]]]:
        """("WinRM: <reason>", [servers]) for each way a probe or handshake failed, said by most servers first."""
        facts = (*self.probes.values(), *self.handshakes.values())
        return grouped((f"{u.label}: {u.reason}", u.server) for u in facts if isinstance(u, Unavailable))

    def unreachable_text(self, limit: int | None = None) -> str:
        """`WinRM on all 200 servers (EX001, EX002, EX003 and 197 more): the credentials were rejected ...; TLS (444)
        on EX05: connection refused`: each way servers failed, once, with how many; the first `limit` ways."""
        groups = self.unreachable_groups()
        total = len(self.checked)
        parts = [_on_servers(reason, servers, total) for reason, servers in groups[:limit]]
        if limit is not None and len(groups) > limit:
            parts.append(f"and {len(groups) - limit} more reasons")
        return "; ".join(parts)

    def same_failure_everywhere(self) -> str | None:
        """`WinRM on all 200 servers (...): <reason>` when every checked server failed one collector the same way,
        which points at the configuration (credentials, the CA file, a port) rather than at the servers."""
        total = len(self.checked)
        for reason, servers in self.unreachable_groups():
            if total > 1 and len(servers) == total:
                return _on_servers(reason, servers, total)
        return None

    def nothing_checked(self) -> str | None:
        """Why not one Exchange server is checked, or None. A run that checked none proves nothing: it is not a pass
        (the run exits 6 with this reason)."""
        if self.checked_servers():
            return None
        servers = self.directory.servers
        if not servers:
            return f"no server was checked: no msExchExchangeServer objects under {self.directory.org_dn}"
        names = ", ".join(s.name for s in servers[:20]) + (
            f" and {len(servers) - 20} more" if len(servers) > 20 else ""
        )
        if self.include or self.exclude:
            chosen = {"include": self.include, "exclude": self.exclude}
            patterns = ", ".join(f"{key} = {json.dumps(list(value))}" for key, value in chosen.items() if value)
            return (
                f"no server was checked: the [servers] patterns ({patterns}) select none of the {len(servers)} "
                f"servers ({names})"
            )
        listed = ", ".join(self.checked) if self.checked else "nothing"
        return (
            f"no server was checked: the evidence file's checked list names none of its servers: it lists {listed}; "
            f"the servers are {names}"
        )

    def no_server_answered(self) -> str | None:
        """Why the org could not be checked although the directory answered: not one checked server did (the audit
        host is cut off; the run exits 6). None when a checked server answered, or none is checked. Bounded: it is
        the verdict line's reason, whatever the org's size."""
        servers = self.checked_servers()
        if not servers or any(isinstance(self.probes.get(s.name), ServerProbe) for s in servers):
            return None
        everywhere = self.same_failure_everywhere()
        if everywhere is not None:
            return f"no checked Exchange server answered, all alike (check the org config): {everywhere}"
        return f"no checked Exchange server answered: {self.unreachable_text(limit=2)}"


def _on_servers(reason: str, servers: list[str], total: int) -> str:
    label, _, why = reason.partition(": ")
    return f"{label} on {servers_phrase(servers, total)}: {why}"
