"""What the lab DC holds for a scenario, as a plan of directory writes, computed without Samba.

The plan is plain JSON: `_samba_worker.py populate` (system python, Samba's bindings) executes it offline in
one transaction. Everything that can be decided from the scenario is decided here, so it can be unit-tested
without a DC; only SIDs (`{sid:NAME}` in SDDL) are resolved by the worker, because Samba allocates them.

Objects are laid out as Exchange setup leaves them (EXCHANGE_FACTS.md §1-§4). Order matters: the org
container's ACEs are written before anything is created below it, so Samba computes the inherited ACEs of
every server object at creation, as AD does.
"""

from __future__ import annotations

from datetime import UTC, datetime

from exchange_compliance.facts import ROLE_BITS
from exchange_compliance.lab.layout import DC_HOST, DOMAIN, REALM
from exchange_compliance.lab.scenario import AceSpec, Scenario, ServerSpec

DOMAIN_DN = ",".join(f"DC={part}" for part in DOMAIN.split("."))
CONFIG_DN = f"CN=Configuration,{DOMAIN_DN}"
EXCHANGE_DN = f"CN=Microsoft Exchange,CN=Services,{CONFIG_DN}"
EXTENDED_RIGHTS_DN = f"CN=Extended-Rights,{CONFIG_DN}"
GROUPS_OU_DN = f"OU=Microsoft Exchange Security Groups,{DOMAIN_DN}"
ADMIN_GROUP = "Exchange Administrative Group (FYDIBOHF23SPDLT)"
DEFAULT_SITE = "Default-First-Site-Name"
AUTH_SERVICE_NAME = "00000002-0000-0ff1-ce00-000000000000"  # Get-AuthConfig's default ServiceName

# otherWellKnownObjects GUIDs on CN=Microsoft Exchange (EXCHANGE_FACTS §2), in the order setup writes them.
WELL_KNOWN_GROUPS = {
    "Exchange Servers": "A7D2016C83F003458132789EEB127B84",
    "Organization Management": "C262A929D691B74A9E068728F8F842EA",
    "Exchange Trusted Subsystem": "EA876A58DB6DD04C9006939818F800EB",
}
EXTENDED_RIGHTS = {
    "ms-Exch-EPI-Token-Serialization": "06386f89-befb-4e48-baa1-559fd9221f78",
    "ms-Exch-EPI-Impersonation": "8db0795c-df3a-4aca-a97d-100162998dfa",
    "ms-Exch-EPI-May-Impersonate": "bc39105d-9baa-477c-a34a-997cc25e3d60",
}
EXCHANGE_SERVER_CLASS_GUID = "01a9aa9c-a981-11d2-a9ff-00c04f8eedd8"  # schemaIDGUID, see exchange_schema.ldif

UNIVERSAL_SECURITY_GROUP = "-2147483640"  # Exchange's security groups are universal
GLOBAL_SECURITY_GROUP = "-2147483646"  # scenario groups: global, so they can nest into Domain Admins
WORKSTATION_TRUST_ACCOUNT = "4096"

# What setup writes on the organization container (EXCHANGE_FACTS §2, InitializeConfigPermissions):
# container-inherit (CI) so every server object below inherits them. Denies first, in canonical order.
_DENIED_RIGHTS = ("ms-Exch-EPI-Token-Serialization", "ms-Exch-EPI-Impersonation")
_DENIED_TO = ("EA", "DA", "SA", "{sid:Organization Management}")
ORG_SETUP_ACES = (
    "".join(f"(OD;CI;CR;{EXTENDED_RIGHTS[right]};;{trustee})" for trustee in _DENIED_TO for right in _DENIED_RIGHTS)
    + "(A;CI;CR;;;{sid:Exchange Servers})(A;CI;CR;;;SY)"
)

# Lab stand-in for the read access setup grants on Exchange's configuration: without it an ordinary
# account could not list the org or read descriptors below CN=Microsoft Exchange (Samba's configuration NC
# grants Authenticated Users read on each container, not inheritably).
EXCHANGE_READ_ACE = "(A;CI;RPLCLORC;;;AU)"


def rdn_escape(value: str) -> str:
    """Escape an RDN value (RFC 4514) so org, group and server names are safe inside a DN."""
    escaped = "".join(f"\\{c}" if c in ',+"\\<>;=' else c for c in value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def parse_version(text: str) -> tuple[int, int, int, int | None]:
    parts = [int(p) for p in text.split(".")]
    if len(parts) not in (3, 4):
        raise ValueError(f"version {text!r}: expected major.minor.build[.revision]")
    return parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else None


def serial_number(version: str) -> str:
    """`Version 15.2 (Build 31544.4)`: the display version, 30000 added to the build (EXCHANGE_FACTS §1)."""
    major, minor, build, revision = parse_version(version)
    shown = build + 30000 if major >= 8 else build
    tail = f"{shown}.{revision}" if revision is not None else f"{shown}"
    return f"Version {major}.{minor} (Build {tail})"


def version_number(version: str) -> int:
    """The integer Exchange stores in versionNumber (EXCHANGE_FACTS §1): major<<22 | minor<<16 | build, plus
    the marker bits 0x70000000 and 0x8000 that the documented example carries (15.1.2507 is 1942063563,
    0x73C189CB); readers mask them away."""
    major, minor, build, _ = parse_version(version)
    return 0x70000000 | (major & 63) << 22 | (minor & 63) << 16 | 0x8000 | (build & 0x7FFF)


def role_mask(roles: tuple[str, ...]) -> int:
    unknown = [r for r in roles if r not in ROLE_BITS]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r} (known: {', '.join(ROLE_BITS)})")
    mask = 0
    for role in roles:
        mask |= ROLE_BITS[role]
    return mask


# [[aces]] object names for the containers between the organization and the server objects (Dns attributes).
CONTAINER_TARGETS = {"admin-group": "admin_group", "servers-container": "servers"}


class Dns:
    """The DNs of one scenario's Exchange organization."""

    def __init__(self, org_name: str) -> None:
        self.org = f"CN={rdn_escape(org_name)},{EXCHANGE_DN}"
        self.admin_groups = f"CN=Administrative Groups,{self.org}"
        self.admin_group = f"CN={ADMIN_GROUP},{self.admin_groups}"
        self.servers = f"CN=Servers,{self.admin_group}"
        self.auth_config = f"CN=Auth Configuration,{self.org}"

    def server(self, name: str) -> str:
        return f"CN={rdn_escape(name)},{self.servers}"

    @staticmethod
    def site(name: str) -> str:
        return f"CN={rdn_escape(name)},CN=Sites,{CONFIG_DN}"

    @staticmethod
    def group(name: str) -> str:
        if name in WELL_KNOWN_GROUPS:
            return f"CN={rdn_escape(name)},{GROUPS_OU_DN}"
        return f"CN={rdn_escape(name)},CN=Users,{DOMAIN_DN}"

    @staticmethod
    def computer(name: str) -> str:
        return f"CN={rdn_escape(name)},CN=Computers,{DOMAIN_DN}"

    def ace_target(self, ace: AceSpec) -> str:
        if ace.object == "org":
            return self.org
        if ace.object in CONTAINER_TARGETS:
            return getattr(self, CONTAINER_TARGETS[ace.object])
        if ace.object.lower().startswith("server:"):
            return self.server(ace.object.split(":", 1)[1])
        return ace.object


def auth_thumbprint_values(scenario: Scenario, current: str | None, previous: str | None, nxt: str | None) -> list[str]:
    """msExchAuthCertificateThumbprint: "<index>:<thumbprint>" (0 current, 1 previous, 2 next), or the
    scenario's raw values verbatim."""
    if scenario.auth.raw_thumbprint_values is not None:
        return list(scenario.auth.raw_thumbprint_values)
    return [f"{index}:{value}" for index, value in enumerate((current, previous, nxt)) if value]


def generalized_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S.0Z")


def computer_spns(server: ServerSpec) -> list[str]:
    """What a joined Exchange server's computer account carries. HOST/ comes with the join, and the KDC maps HTTP/
    to it (sPNMappings); the lab registers HTTP/ as well, the name WinRM clients ask for. Edge Transport servers
    are not joined: no account, no SPN, so no Kerberos to them."""
    return [f"HOST/{server.name}", f"HOST/{server.fqdn}", f"HTTP/{server.fqdn}", f"HTTP/{server.name}"]


def server_principals(scenario: Scenario) -> list[str]:
    """The keytab the lab servers accept Kerberos with: each joined server's computer account (`EX01$`), by its own
    name. MIT's acceptor tries every key of its keytab on a ticket, so one principal per account serves all its
    SPNs, and a large lab exports half as many."""
    return [f"{server.name}$@{REALM}" for server in scenario.servers if not server.is_edge]


# The DC's own LDAP SPNs, which samba_spnupdate would register on a DC running its DNS update service (the lab's
# runs LDAP and the KDC only): without them no client gets a ticket for LDAP.
DC_LDAP_SPNS = [f"ldap/{DC_HOST}", f"ldap/{DC_HOST}/{DOMAIN}", f"ldap/{DC_HOST.split('.')[0].upper()}"]


def _add(dn: str, **attrs: str | list[str]) -> dict:
    return {"op": "add", "dn": dn, "attrs": {k: v if isinstance(v, list) else [v] for k, v in attrs.items()}}


def _server_steps(scenario: Scenario, server: ServerSpec, dns: Dns) -> list[dict]:
    name, fqdn = server.name, server.fqdn
    server_dn = dns.server(name)
    steps = [
        _add(
            server_dn,
            objectClass="msExchExchangeServer",
            networkAddress=[
                f"ncacn_vns_spp:{name}",
                f"netbios:{name}",
                f"ncacn_np:{name}",
                f"ncacn_spx:{name}",
                f"ncacn_ip_tcp:{fqdn}",
                f"ncalrpc:{name}",
            ],
            msExchCurrentServerRoles=str(role_mask(server.roles)),
            serialNumber=serial_number(server.version),
            versionNumber=str(version_number(server.version)),
            msExchServerSite=dns.site(server.site),
            legacyExchangeDN=f"/o={scenario.org_name}/ou={ADMIN_GROUP}/cn=Configuration/cn=Servers/cn={name}",
        )
    ]
    if server.is_edge:  # a subscribed Edge server: the server object only (scenarios/README.md)
        return steps
    protocols = f"CN=Protocols,{server_dn}"
    http = f"CN=HTTP,{protocols}"
    internal = f"https://{fqdn}/EWS/Exchange.asmx" if server.ews_internal_url is None else server.ews_internal_url
    external = (
        f"https://mail.{DOMAIN}/EWS/Exchange.asmx" if server.ews_external_url is None else server.ews_external_url
    )
    front: dict[str, str | list[str]] = {"objectClass": "msExchWebServicesVirtualDirectory"}
    if internal:
        front["msExchInternalHostName"] = internal
    if external:
        front["msExchExternalHostName"] = external
    steps += [
        _add(protocols, objectClass="container"),
        _add(http, objectClass="msExchProtocolCfgHTTPContainer"),
        _add(f"CN=EWS (Default Web Site),{http}", **front),
        _add(
            f"CN=EWS (Exchange Back End),{http}",
            objectClass="msExchWebServicesVirtualDirectory",
            msExchInternalHostName=f"https://{fqdn}:444/EWS/Exchange.asmx",
        ),
    ]
    return steps


def build_plan(
    scenario: Scenario,
    *,
    auth_current: str | None,
    auth_previous: str | None,
    auth_next: str | None,
    auth_next_effective: datetime | None,
    audit_user: str,
    audit_password: str,
) -> dict:
    """The ordered writes that turn a freshly provisioned DC into the scenario's directory."""
    dns = Dns(scenario.org_name)
    steps: list[dict] = [
        # Lab passwords (the audit account's comes from the caller) need not meet complexity rules.
        {
            "op": "replace",
            "dn": DOMAIN_DN,
            "attrs": {"pwdProperties": ["0"], "minPwdLength": ["0"], "pwdHistoryLength": ["0"], "minPwdAge": ["0"]},
        },
        {"op": "user", "name": audit_user, "password": audit_password},
        {"op": "spns", "account": f"{DC_HOST.split('.')[0].upper()}$", "spns": DC_LDAP_SPNS},
        _add(GROUPS_OU_DN, objectClass="organizationalUnit"),
    ]
    for group in WELL_KNOWN_GROUPS:
        steps.append(
            _add(Dns.group(group), objectClass="group", sAMAccountName=group, groupType=UNIVERSAL_SECURITY_GROUP)
        )
    for group in scenario.groups:  # created unless the domain has it already (a built-in or Exchange group)
        steps.append(
            {"op": "group", "dn": Dns.group(group.name), "name": group.name, "groupType": GLOBAL_SECURITY_GROUP}
        )
    memberships: dict[str, list[str]] = {}
    for server in scenario.servers:
        if server.is_edge:
            continue
        computer = _add(
            Dns.computer(server.name),
            objectClass="computer",
            sAMAccountName=f"{server.name}$",
            dNSHostName=server.fqdn,
            servicePrincipalName=computer_spns(server),
            userAccountControl=WORKSTATION_TRUST_ACCOUNT,
        )
        steps.append({**computer, "op": "computer"})
        for group in server.member_of:
            memberships.setdefault(group, []).append(f"{server.name}$")
    for group in scenario.groups:
        for parent in group.member_of:
            memberships.setdefault(parent, []).append(group.name)
    steps += [
        {"op": "members", "group": group, "members": list(dict.fromkeys(members))}
        for group, members in memberships.items()
    ]

    # Configuration NC: CN=Microsoft Exchange, the extended rights, the org and its setup ACEs.
    steps.append(
        _add(
            EXCHANGE_DN,
            objectClass="msExchConfigurationContainer",
            otherWellKnownObjects=[f"B:32:{guid}:{Dns.group(name)}" for name, guid in WELL_KNOWN_GROUPS.items()],
        )
    )
    steps.append({"op": "aces", "dn": EXCHANGE_DN, "sddl": EXCHANGE_READ_ACE})
    for right, guid in EXTENDED_RIGHTS.items():
        steps.append(
            _add(
                f"CN={right},{EXTENDED_RIGHTS_DN}",
                objectClass="controlAccessRight",
                displayName=right,
                rightsGuid=guid,
                validAccesses="256",
                appliesTo=EXCHANGE_SERVER_CLASS_GUID,
            )
        )
    steps.append(_add(dns.org, objectClass="msExchOrganizationContainer"))
    steps.append({"op": "aces", "dn": dns.org, "sddl": ORG_SETUP_ACES})
    for ace in scenario.aces:
        if ace.object == "org":  # before the servers exist, so they inherit it like the setup ACEs
            steps.append({"op": "aces", "dn": dns.org, "sddl": ace.sddl})
    steps += [
        _add(dns.admin_groups, objectClass="msExchAdminGroupContainer"),
        _add(
            dns.admin_group,
            objectClass="msExchAdminGroup",
            legacyExchangeDN=f"/o={scenario.org_name}/ou={ADMIN_GROUP}",
        ),
        _add(dns.servers, objectClass="msExchServersContainer"),
    ]
    for ace in scenario.aces:
        if ace.object in CONTAINER_TARGETS:  # before the servers exist too, as setup's ACEs on the organization
            steps.append({"op": "aces", "dn": dns.ace_target(ace), "sddl": ace.sddl})
    for site in dict.fromkeys(s.site for s in scenario.servers):
        if site != DEFAULT_SITE:  # provisioning creates Default-First-Site-Name
            steps.append(_add(Dns.site(site), objectClass="site"))
    for server in scenario.servers:
        steps += _server_steps(scenario, server, dns)

    if not scenario.auth.absent:
        auth: dict[str, str | list[str]] = {
            "objectClass": "msExchAuthAuthConfig",
            "msExchAuthApplicationIdentifier": AUTH_SERVICE_NAME,
        }
        values = auth_thumbprint_values(scenario, auth_current, auth_previous, auth_next)
        if values:
            auth["msExchAuthCertificateThumbprint"] = values
        if auth_next_effective is not None:
            auth["msExchAuthNextEffectiveDate"] = generalized_time(auth_next_effective)
        steps.append(_add(dns.auth_config, **auth))

    for ace in scenario.aces:
        if ace.object != "org" and ace.object not in CONTAINER_TARGETS:
            steps.append({"op": "aces", "dn": dns.ace_target(ace), "sddl": ace.sddl})
    for server in scenario.servers:
        if server.protect_dacl:
            steps.append({"op": "protect", "dn": dns.server(server.name)})
    keytabs = {"audit": [f"{audit_user}@{REALM}"], "servers": server_principals(scenario)}
    return {"domain_dn": DOMAIN_DN, "steps": steps, "keytabs": keytabs}
