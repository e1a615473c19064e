"""Reading the org from Active Directory: read-only, and in a number of round trips that does not grow with the
number of servers (one filtered search per kind of object, not one search per server). The connection is ldap.py;
memberships across the forest, forest.py; decoding the entries, decode.py."""

from __future__ import annotations

from collections.abc import Iterable

import ldap3
from ldap3.utils.conv import escape_filter_chars

from ..facts import AuthConfig, Directory, ExchangeServer, VirtualDirectory
from ..names import parent_dn, rdn_value, split_dn
from . import decode, values
from .forest import Forest
from .ldap import PIPELINE, DirectoryError, Sources, pipelined_reads, search_entries


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
        # Searches waited for, on every connection (round_trips): pipelined base reads count once per window's worth
        # (PIPELINE reads in flight), each read once (pipelined_reads).
        self.round_trips = 0
        self.pipelined_reads = 0

    def search(
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
        return search_entries(connection, base, search_filter, scope, attributes, descriptor=descriptor)

    def pipelined(self, connection: ldap3.Connection, dns: list[str], attributes: list[str]) -> dict[str, dict]:
        self.round_trips += -(-len(dns) // PIPELINE)
        self.pipelined_reads += len(dns)
        return pipelined_reads(connection, dns, attributes)

    def read(self) -> Directory:
        root = self.search("", "(objectClass=*)", ldap3.BASE, ["configurationNamingContext", "defaultNamingContext"])
        if not root:
            raise DirectoryError("the rootDSE could not be read")
        configuration_dn = decode.text(root[0], "configurationNamingContext")
        domain_dn = self.base_dn or decode.text(root[0], "defaultNamingContext")
        if not configuration_dn or not domain_dn:
            raise DirectoryError("the rootDSE names no configuration or default naming context")
        exchange_dn = f"CN=Microsoft Exchange,CN=Services,{configuration_dn}"

        exchange = self.search(exchange_dn, "(objectClass=*)", ldap3.BASE, ["otherWellKnownObjects"])
        if not exchange:
            raise DirectoryError(f"{exchange_dn} does not exist: Exchange is not installed in this forest")
        orgs = self.search(
            exchange_dn, "(objectClass=msExchOrganizationContainer)", ldap3.LEVEL, ["cn"], descriptor=True
        )
        if len(orgs) != 1:
            raise DirectoryError(f"expected one Exchange organization under {exchange_dn}, found {len(orgs)}")
        org_dn = orgs[0]["dn"]

        servers = tuple(
            decode.decoded(decode.server, entry, "Exchange server")
            for entry in self.search(
                org_dn,
                "(objectCategory=msExchExchangeServer)",
                ldap3.SUBTREE,
                decode.SERVER_ATTRIBUTES,
                descriptor=True,
            )
        )
        containers = self._container_descriptors(exchange_dn, servers)
        well_known = values.well_known_groups(decode.texts(exchange[0], "otherWellKnownObjects"))
        forest = Forest(self, configuration_dn, domain_dn)
        computers = forest.computers(servers)
        groups = forest.groups(computers.values(), well_known.values())
        computers = forest.with_token_groups(computers, groups)
        domains = forest.domain_facts([*computers.values(), *groups.values()])
        main = forest.main_domain
        return Directory(
            domain_dn=domain_dn,
            configuration_dn=configuration_dn,
            org_name=decode.text(orgs[0], "cn") or rdn_value(org_dn),
            org_dn=org_dn,
            org_security_descriptor=decode.raw(orgs[0], "nTSecurityDescriptor"),
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
        entries = self.search(exchange_dn, f"(|{terms})", ldap3.SUBTREE, ["nTSecurityDescriptor"], descriptor=True)
        found = {entry["dn"]: decode.raw(entry, "nTSecurityDescriptor") for entry in entries}
        return {dn: descriptor for dn, descriptor in found.items() if descriptor is not None}

    def _extended_rights(self, configuration_dn: str) -> dict[str, str]:
        wanted = "".join(f"(cn={name})" for name in values.EXTENDED_RIGHTS)
        entries = self.search(
            f"CN=Extended-Rights,{configuration_dn}",
            f"(&(objectClass=controlAccessRight)(|{wanted}))",
            ldap3.LEVEL,
            ["cn", "rightsGuid"],
        )
        return {decode.text(e, "cn"): (decode.text(e, "rightsGuid") or "").lower() for e in entries}

    def _auth_config(self, org_dn: str) -> AuthConfig | None:
        dn = f"CN=Auth Configuration,{org_dn}"
        entries = self.search(
            dn, "(objectClass=*)", ldap3.BASE, ["msExchAuthCertificateThumbprint", "msExchAuthNextEffectiveDate"]
        )
        if not entries:
            return None
        raw = decode.texts(entries[0], "msExchAuthCertificateThumbprint")
        current, previous, upcoming = values.auth_thumbprints(raw)
        return AuthConfig(
            dn=entries[0]["dn"],
            current_thumbprint=current,
            previous_thumbprint=previous,
            next_thumbprint=upcoming,
            next_effective=decode.decoded(decode.next_effective, entries[0], "Auth Configuration"),
            raw_thumbprint_values=tuple(raw),
        )

    def _virtual_directories(self, org_dn: str) -> tuple[VirtualDirectory, ...]:
        entries = self.search(
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
                    name=decode.text(entry, "cn") or rdn_value(entry["dn"]),
                    object_class="msExchWebServicesVirtualDirectory",
                    internal_url=decode.text(entry, "msExchInternalHostName"),
                    external_url=decode.text(entry, "msExchExternalHostName"),
                )
            )
        return tuple(sorted(directories, key=lambda d: (d.server.lower(), d.name)))
