"""Who is in which group, across the forest: the global catalog, a DC of each domain that holds a server's computer
account, and the reads of each computer's tokenGroups from its own domain (`Forest`, over a `Searcher`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import ldap3
from ldap3.utils.conv import escape_filter_chars

from ..facts import NETWORK_LOGON_SIDS, Domain, ExchangeServer, Principal, TokenGroups
from ..names import dns_domain_of, parent_dn
from . import decode
from .ldap import DirectoryError, Sources

# Nested groups deeper than this are a directory problem of their own; stop rather than loop.
MAX_NESTING = 32


class Searcher(Protocol):
    """What the forest asks of the reader: its first DC, the other sources, and searches it counts."""

    connection: ldap3.Connection
    main_name: str
    sources: Sources | None

    def search(
        self,
        base: str,
        search_filter: str,
        scope: str,
        attributes: list[str],
        *,
        connection: ldap3.Connection | None = None,
    ) -> list[dict]:
        """A search, counted as one round trip: on `connection`, or on the first DC's."""
        ...

    def pipelined(self, connection: ldap3.Connection, dns: list[str], attributes: list[str]) -> dict[str, dict]: ...


@dataclass
class Source:
    """One connection the read searches, and what it is to the read."""

    name: str  # host:port, for the evidence
    connection: ldap3.Connection
    base: str  # "" for the global catalog (the whole forest), else a domain's naming context (or base_dn)
    domain: str | None  # the domain's NC DN; None for the global catalog
    unavailable: str | None = None  # set when a search on it broke off: nothing more is asked of it


class Forest:
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

    def __init__(self, reader: Searcher, configuration_dn: str, domain_dn: str) -> None:
        self.reader = reader
        self.configuration_dn = configuration_dn
        self.domain_dn = domain_dn
        self.partitions = self._partitions()
        self.main_domain = _domain_of(domain_dn, self.partitions) or Domain(domain_dn, dns_domain_of(domain_dn))
        self.main = Source(reader.main_name, reader.connection, domain_dn, self.main_domain.dn)
        self.global_catalog: Source | None = None
        self.global_catalog_unavailable: str | None = None
        self._open_global_catalog()
        self.domain_sources: dict[str, Source | str] = {self.main_domain.dn.lower(): self.main}
        self._edges: dict[str, list[str]] = {}

    @property
    def several_domains(self) -> bool:
        return len(self.partitions) > 1

    @property
    def global_catalog_name(self) -> str | None:
        return self.global_catalog.name if self.global_catalog and not self.global_catalog.unavailable else None

    def _partitions(self) -> tuple[Domain, ...]:
        """The forest's domains: the crossRefs of domain naming contexts (systemFlags FLAG_CR_NTDS_DOMAIN)."""
        entries = self.reader.search(
            f"CN=Partitions,{self.configuration_dn}",
            "(&(objectClass=crossRef)(systemFlags:1.2.840.113556.1.4.803:=2))",
            ldap3.LEVEL,
            ["nCName", "dnsRoot", "nETBIOSName"],
        )
        domains = []
        for entry in entries:
            dn = decode.text(entry, "nCName")
            if dn:
                dns = decode.text(entry, "dnsRoot") or dns_domain_of(dn)
                domains.append(Domain(dn=dn, dns_name=dns, netbios_name=decode.text(entry, "nETBIOSName")))
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
        self.global_catalog = Source(name, connection, "", None)

    def _ask(self, source: Source, search_filter: str, attributes: list[str]) -> list[dict] | None:
        """Search one source; a search that breaks off on the first DC ends the read (DirectoryError), on any other
        source it makes that source unavailable (None), for the rows that need it to say so."""
        if source.unavailable:
            return None
        try:
            return self.reader.search(
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
        entries = (
            self._ask(self.global_catalog, search_filter, decode.COMPUTER_ATTRIBUTES) if self.global_catalog else None
        )
        if entries is None:
            entries = self._ask(self.main, search_filter, decode.COMPUTER_ATTRIBUTES) or []
        by_host: dict[str, Principal] = {}
        by_account: dict[str, list[Principal]] = {}
        for entry in entries:
            principal = decode.decoded(decode.principal, entry, "computer")
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

    def _sources(self, computers: Iterable[Principal]) -> list[Source]:
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
        return found + [s for key in wanted if isinstance(s := self.domain_sources[key], Source)]

    def _controllers(self) -> dict[str, list[str]]:
        """Domain NC DN (lower-case) -> its DCs' host names, from each DC's NTDS Settings in CN=Sites."""
        entries = self.reader.search(
            f"CN=Sites,{self.configuration_dn}",
            "(|(objectClass=nTDSDSA)(objectClass=server))",
            ldap3.SUBTREE,
            ["dNSHostName", "msDS-HasDomainNCs", "hasMasterNCs"],
        )
        hosts = {entry["dn"].lower(): decode.text(entry, "dNSHostName") for entry in entries}
        domains = {d.dn.lower() for d in self.partitions}
        controllers: dict[str, list[str]] = {}
        for entry in entries:
            host = hosts.get(parent_dn(entry["dn"]).lower())
            held = decode.texts(entry, "msDS-HasDomainNCs") or decode.texts(entry, "hasMasterNCs")
            for nc in held:
                if host and nc.lower() in domains:
                    controllers.setdefault(nc.lower(), []).append(host)
        return controllers

    def _domain_source(self, domain: Domain, controllers: dict[str, list[str]]) -> Source | str:
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
        return Source(name, connection, domain.dn, domain.dn)

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
            terms += [f"(objectSid={decode.sid_filter(sid)})" for sid in sorted(sid_terms)]
            if not terms:
                break
            groups_filter = f"(&(objectClass=group)(|{''.join(terms)}))"
            # Level 0 also asks each domain's DC for the foreign security principals of the network-logon SIDs in its
            # CN=ForeignSecurityPrincipals (the global catalog would add their namesakes in the configuration NC's
            # CN=WellKnown Security Principals, which no group holds).
            wellknown = "".join(f"(objectSid={decode.sid_filter(sid)})" for sid in sorted(NETWORK_LOGON_SIDS))
            foreign = f"(|{groups_filter}(&(objectClass=foreignSecurityPrincipal)(|{wellknown})))"
            asked |= set(member_terms) | set(dn_terms)
            new: list[str] = []
            for source in sources:
                search_filter = foreign if level == 0 and source.domain is not None else groups_filter
                for entry in self._ask(source, search_filter, decode.GROUP_ATTRIBUTES) or []:
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
            principal = decode.decoded(decode.principal, item.entry, item.kind)
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
            if not isinstance(source, Source) or source.unavailable:
                continue
            try:
                entries = self.reader.pipelined(
                    source.connection, [computers[n].dn for n in names], decode.TOKEN_ATTRIBUTES
                )
            except DirectoryError as exc:
                if source is self.main:
                    raise
                source.unavailable = f"{source.name}: {exc}"
                continue
            for name in names:
                entry = entries.get(computers[name].dn.lower())
                if entry is not None:
                    tokens = TokenGroups(
                        source.name, decode.sids(entry, "tokenGroups"), decode.sids(entry, decode.TOKEN_ATTRIBUTES[1])
                    )
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
            read = isinstance(source, Source) and not source.unavailable
            why = source if isinstance(source, str) else source.unavailable if isinstance(source, Source) else None
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
        classes = {c.lower() for c in decode.texts(entry, "objectClass")}
        self.kind = "foreign" if "foreignsecurityprincipal" in classes else "group"
        self.members = decode.texts(entry, "member")
        self.member_of = decode.texts(entry, "memberOf")

    def merge(self, entry: dict) -> None:
        self.members = list(dict.fromkeys([*self.members, *decode.texts(entry, "member")]))
        self.member_of = list(dict.fromkeys([*self.member_of, *decode.texts(entry, "memberOf")]))


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
