"""Factories the unit tests share: hand-built facts, certificates made with cryptography, and a directory
whose security descriptors were recorded from Samba (data/descriptors.json).

A plain module, not a test module: the judge tests and conftest's `build_org` (the report, waiver and gate
tests) import it, and no test module imports from another. A factory kept in a test module makes each of its
users run that module's imports and top-level code, and reworking one test file could break the collection
of others.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from exchange_compliance.facts import (
    ROLE_BITS,
    AuthConfig,
    Directory,
    Domain,
    ExchangeServer,
    Principal,
    ServerProbe,
    SiteBinding,
    SslCertBinding,
    StoreCertificate,
    TokenGroups,
    Unavailable,
    Version,
    VirtualDirectory,
)
from exchange_compliance.judge.backend import IIS_APPID
from exchange_compliance.judge.certificates import certificate_info
from exchange_compliance.names import rdn_value

# --- certificates and Exchange facts ---------------------------------------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
DOMAIN = "lab.contoso.test"
DOMAIN_DN = "DC=lab,DC=contoso,DC=test"
ORG_DN = f"CN=Contoso,CN=Microsoft Exchange,CN=Services,CN=Configuration,{DOMAIN_DN}"


@cache
def rsa_key(name: str = "leaf") -> rsa.RSAPrivateKey:
    # RSA 2048 as Exchange uses; generated once per name because key generation is the slow part.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(
    cn: str | None = "ex01",
    sans: tuple[str, ...] | None = ("ex01", f"ex01.{DOMAIN}"),
    *,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=1800),
    issuer_cn: str | None = None,
    signer: str | None = None,
    key: str = "leaf",
    ec_key: bool = False,
    serial: int | None = None,
    ca: bool = False,
) -> bytes:
    """DER of a certificate. Self-signed unless `issuer_cn` names a CA (signed with the "ca" key). `ca` marks
    it as a CA (basicConstraints), as OpenSSL requires of a trust anchor that issues the certificates it checks."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]) if issuer_cn else subject
    private = ec.generate_private_key(ec.SECP256R1()) if ec_key else rsa_key(key)
    signing = rsa_key(signer or ("ca" if issuer_cn else key)) if not ec_key else private
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(private.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(signing, hashes.SHA256()).public_bytes(Encoding.DER)


def thumb(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def store_cert(der: bytes, *, friendly_name: str = "", private_key: bool = True) -> StoreCertificate:
    """A store entry as the probe reports it; the strings are deliberately crude: judges must use the DER."""
    info = certificate_info(der)
    return StoreCertificate(
        thumbprint=info.thumbprint.lower(),
        subject="(as Windows prints it)",
        issuer="(as Windows prints it)",
        dns_names=info.dns_names,
        not_before=info.not_before,
        not_after=info.not_after,
        has_private_key=private_key,
        friendly_name=friendly_name,
        der=der,
    )


def exchange_self_signed(name: str = "ex01", **kwargs: object) -> bytes:
    """What setup binds on 444: CN=<host>, SANs host and FQDN."""
    return make_cert(name, (name, f"{name}.{DOMAIN}"), **kwargs)  # type: ignore[arg-type]


def probe(
    *certs: StoreCertificate,
    backend: str | None = None,
    frontend: str | None = None,
    netsh_backend: str | None = "same",
    netsh_frontend: str | None = "same",
    backend_binding: bool = True,
) -> ServerProbe:
    """A probe with the given store and the Back End (444) / Default Web Site (443) bindings.
    `netsh_*` = "same" mirrors the IIS hash into http.sys, None leaves http.sys without an entry."""
    bindings = []
    if backend_binding:
        bindings.append(SiteBinding("Exchange Back End", "https", "*:444:", backend, "My" if backend else None))
    bindings.append(SiteBinding("Exchange Back End", "http", "*:81:", None, None))
    bindings.append(SiteBinding("Default Web Site", "https", "*:443:", frontend, "My" if frontend else None))
    ssl = []
    for ip_port, iis, netsh in (("0.0.0.0:444", backend, netsh_backend), ("0.0.0.0:443", frontend, netsh_frontend)):
        value = iis if netsh == "same" else netsh
        if value:
            ssl.append(SslCertBinding(ip_port, value, IIS_APPID, "MY"))
    return ServerProbe("EX01", NOW - timedelta(days=3), tuple(certs), tuple(bindings), tuple(ssl))


def server(
    name: str = "EX01", roles: tuple[str, ...] = ("Mailbox", "ClientAccess"), version: Version | None = None
) -> ExchangeServer:
    return ExchangeServer(
        name=name,
        dn=f"CN={name},CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,{ORG_DN}",
        fqdn=f"{name.lower()}.{DOMAIN}",
        roles=sum(ROLE_BITS[r] for r in roles),
        version=version or Version(15, 2, 1544, 4),
        site="Default-First-Site-Name",
    )


def auth_config(
    current: str | None, *, next_: str | None = None, effective: datetime | None = None, previous: str | None = None
) -> AuthConfig:
    raw = tuple(f"{i}:{t}" for i, t in ((0, current), (1, previous), (2, next_)) if t)
    return AuthConfig(f"CN=Auth Configuration,{ORG_DN}", current, previous, next_, effective, raw)


def ews(name: str, internal: str | None, external: str | None) -> VirtualDirectory:
    dn = f"CN=EWS (Default Web Site),CN=HTTP,CN=Protocols,{server(name).dn}"
    return VirtualDirectory(dn, name, "EWS (Default Web Site)", "msExchWebServicesVirtualDirectory", internal, external)


def directory(
    servers: tuple[ExchangeServer, ...] = (),
    auth: AuthConfig | None = None,
    vdirs: tuple[VirtualDirectory, ...] = (),
) -> Directory:
    return Directory(
        domain_dn=DOMAIN_DN,
        configuration_dn=f"CN=Configuration,{DOMAIN_DN}",
        org_name="Contoso",
        org_dn=ORG_DN,
        org_security_descriptor=None,
        well_known_groups={},
        extended_rights={},
        servers=servers,
        computers={},
        groups={},
        auth_config=auth,
        virtual_directories=vdirs,
    )


def unavailable(name: str) -> Unavailable:
    return Unavailable("winrm probe", name, "connection refused on 5985")


# --- directory rights (ACL-01..03, GRP-01), descriptors recorded from Samba ---------------------------

FIXTURE = json.loads((Path(__file__).parent / "data" / "descriptors.json").read_text())
DOMAIN_SID = FIXTURE["domain_sid"]
TS = FIXTURE["guids"]["TS"]
BASE = DOMAIN_DN  # the same lab domain as the certificate factories above
CONFIG = f"CN=Configuration,{BASE}"
ORG = f"CN=Contoso,CN=Microsoft Exchange,CN=Services,{CONFIG}"
SERVERS = f"CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,{ORG}"
MESG = f"OU=Microsoft Exchange Security Groups,{BASE}"
GROUPS = {  # key -> (DN, RID); the SIDs match the fixture's placeholders
    "ES": (f"CN=Exchange Servers,{MESG}", 1117),
    "ETS": (f"CN=Exchange Trusted Subsystem,{MESG}", 1118),
    "OM": (f"CN=Organization Management,{MESG}", 1104),
    "EWP": (f"CN=Exchange Windows Permissions,{MESG}", 1119),
    "DA": (f"CN=Domain Admins,CN=Users,{BASE}", 512),
    "SOT": (f"CN=Server Operators Team,OU=Teams,{BASE}", 1200),
    "G1": (f"CN=Helpdesk Servers,OU=Teams,{BASE}", 2001),
    "G2": (f"CN=Tier1 Servers,OU=Teams,{BASE}", 2002),
    "G3": (f"CN=All Server Admins,OU=Teams,{BASE}", 2003),
}


def raw(case: str) -> bytes:
    return bytes.fromhex(FIXTURE["cases"][case]["hex"])


def with_ace_flags(case: str, flags: int, index: int = 0) -> bytes:
    """The recorded descriptor with the flags of DACL entry `index` replaced (0x12: CI|ID, an inherited ACE;
    0x02: CI, one a container sets for its children)."""
    data = bytearray(raw(case))
    position = struct.unpack_from("<I", data, 16)[0] + 8  # the DACL's offset, past its 8-byte header
    for _ in range(index):
        position += struct.unpack_from("<H", data, position + 2)[0]
    data[position + 1] = flags
    return bytes(data)


EXCHANGE = f"CN=Microsoft Exchange,CN=Services,{CONFIG}"
ADMIN_GROUP = f"CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,{ORG}"
# The server objects' ancestors, by key, and the recorded case each carries by default: CN=Microsoft Exchange its
# own, the organization setup's ACEs (protected), the containers below it what the organization passes on.
CONTAINERS = {
    "exchange": (EXCHANGE, "exchange_container"),
    "org": (ORG, "org_default"),
    "groups": (f"CN=Administrative Groups,{ORG}", "server_default"),
    "admin_group": (ADMIN_GROUP, "server_default"),
    "servers": (SERVERS, "server_default"),
}


def container_descriptors(cases: dict[str, str | bytes] | None = None) -> dict[str, bytes]:
    """The descriptors of the server objects' ancestors: CONTAINERS, with `cases` (key -> fixture case or bytes)
    replacing the defaults."""
    chosen = {key: case for key, (_, case) in CONTAINERS.items()} | (cases or {})
    return {
        dn: raw(chosen[key]) if isinstance(chosen[key], str) else chosen[key] for key, (dn, _) in CONTAINERS.items()
    }  # type: ignore[misc]


def acl_directory(
    descriptors: dict[str, str | bytes | None] | None = None,
    member_of: dict[str, tuple[str, ...]] | None = None,
    nesting: dict[str, tuple[str, ...]] | None = None,
    names: dict[str, str] | None = None,
    primary: dict[str, int] | None = None,
    n: int = 6,
    containers: dict[str, str | bytes] | None = None,
    earlier_evidence: bool = False,
) -> Directory:
    """A directory for the rights judges: EX01..EXn (Mailbox + Client Access, in ES and ETS) and EDGE1, their
    computer accounts and groups, and security descriptors recorded from Samba; `descriptors` maps server ->
    fixture case, `containers` a key of CONTAINERS -> fixture case. One domain, and no group types: scopes play no
    part. `earlier_evidence`: as an evidence file of an earlier version, without the containers' descriptors."""
    descriptors, member_of, nesting = descriptors or {}, member_of or {}, nesting or {}
    names, primary = names or {}, primary or {}

    def dn(key: str) -> str:
        return GROUPS[key][0]

    groups = {
        dn(key): Principal(
            dn(key),
            f"{DOMAIN_SID}-{rid}",
            names.get(key, dn(key)[3:].split(",")[0]),
            tuple(dn(g) for g in nesting.get(key, ())),
        )
        for key, (_, rid) in GROUPS.items()
    }
    servers, computers = [], {}
    for i in range(1, n + 1):
        name = f"EX{i:02d}"
        sd = descriptors.get(name, "server_default")
        servers.append(
            ExchangeServer(
                name,
                f"CN={name},{SERVERS}",
                f"{name.lower()}.lab.contoso.test",
                6,
                None,
                None,
                raw(sd) if isinstance(sd, str) else sd,
            )
        )
        computers[name] = Principal(
            f"CN={name},CN=Computers,{BASE}",
            f"{DOMAIN_SID}-{1300 + i}",
            name,
            tuple(dn(g) for g in member_of.get(name, ("ES", "ETS"))),
            "computer",
            f"{name.lower()}.lab.contoso.test",
            f"{DOMAIN_SID}-{primary.get(name, 515)}",
        )
    return rights_directory(
        servers,
        computers,
        groups,
        container_descriptors={} if earlier_evidence else container_descriptors(containers),
    )


def rights_directory(
    servers: list[ExchangeServer], computers: dict[str, Principal], groups: dict[str, Principal], **more: object
) -> Directory:
    """The Directory the rights factories share: the recorded organization with its Exchange groups (GROUPS' DNs,
    which forest_directory's share) and rights, the servers and EDGE1, `more` fields as given."""
    edge = ExchangeServer("EDGE1", f"CN=EDGE1,{SERVERS}", "edge1.dmz.test", 64, None, None, raw("server_default"))
    return Directory(  # type: ignore[arg-type]
        domain_dn=BASE,
        configuration_dn=CONFIG,
        org_name="Contoso",
        org_dn=ORG,
        org_security_descriptor=raw("org_default"),
        well_known_groups={
            "exchange_servers": GROUPS["ES"][0],
            "exchange_trusted_subsystem": GROUPS["ETS"][0],
            "organization_management": GROUPS["OM"][0],
        },
        extended_rights={
            "ms-Exch-EPI-Token-Serialization": TS,
            "ms-Exch-EPI-Impersonation": FIXTURE["guids"]["IMP"],
            "ms-Exch-EPI-May-Impersonate": "bc39105d-9baa-477c-a34a-997cc25e3d60",
        },
        servers=(*servers, edge),
        computers=computers,
        groups=groups,
        auth_config=None,
        virtual_directories=(),
        domain_sid=DOMAIN_SID,
        **more,
    )


# --- a forest of two domains: lab.contoso.test and its child, child.lab.contoso.test ---------------------------

CHILD_SID = FIXTURE["sids"]["CDL"].rsplit("-", 1)[0]
CHILD_BASE = f"DC=child,{BASE}"
ROOT_DOMAIN = Domain(BASE, DOMAIN, "LAB", DOMAIN_SID, f"dc01.{DOMAIN}:636")
CHILD_DOMAIN = Domain(CHILD_BASE, f"child.{DOMAIN}", "CHILD", CHILD_SID, f"dc11.child.{DOMAIN}:636")
UNIVERSAL, GLOBAL, DOMAIN_LOCAL, BUILTIN = 0x80000008, 0x80000002, 0x80000004, 0x80000005
DISTRIBUTION = 0x00000008  # a universal distribution group: in no token
FOREST_GROUPS = {  # key -> (DN, SID, groupType)
    "ES": (f"CN=Exchange Servers,{MESG}", FIXTURE["sids"]["ES"], UNIVERSAL),
    "ETS": (f"CN=Exchange Trusted Subsystem,{MESG}", FIXTURE["sids"]["ETS"], UNIVERSAL),
    "OM": (f"CN=Organization Management,{MESG}", FIXTURE["sids"]["OM"], UNIVERSAL),
    "DA": (f"CN=Domain Admins,CN=Users,{BASE}", f"{DOMAIN_SID}-512", GLOBAL),
    "DC": (f"CN=Domain Computers,CN=Users,{BASE}", f"{DOMAIN_SID}-515", GLOBAL),
    "SOT": (f"CN=Server Operators Team,OU=Teams,{BASE}", FIXTURE["sids"]["SOT"], GLOBAL),
    "MA": (f"CN=Messaging Admins,OU=Teams,{BASE}", f"{DOMAIN_SID}-2300", UNIVERSAL),
    "LIST": (f"CN=All Servers List,OU=Teams,{BASE}", f"{DOMAIN_SID}-2301", DISTRIBUTION),
    "USERS": (f"CN=Users,CN=Builtin,{BASE}", "S-1-5-32-545", BUILTIN),
    "CDC": (f"CN=Domain Computers,CN=Users,{CHILD_BASE}", f"{CHILD_SID}-515", GLOBAL),
    "CDA": (f"CN=Domain Admins,CN=Users,{CHILD_BASE}", f"{CHILD_SID}-512", GLOBAL),
    "CSOT": (f"CN=Server Operators Team,OU=Teams,{CHILD_BASE}", f"{CHILD_SID}-2200", GLOBAL),
    "CDL": (f"CN=Exchange Deny,OU=Teams,{CHILD_BASE}", FIXTURE["sids"]["CDL"], DOMAIN_LOCAL),
    "CAU": (f"CN=Readers,OU=Teams,{CHILD_BASE}", f"{CHILD_SID}-3002", DOMAIN_LOCAL),
}
# Authenticated Users as each domain's CN=ForeignSecurityPrincipals names it (a domain-local group may hold it).
FOREST_FOREIGN = {
    "AU": f"CN=S-1-5-11,CN=ForeignSecurityPrincipals,{BASE}",
    "CAU_FSP": f"CN=S-1-5-11,CN=ForeignSecurityPrincipals,{CHILD_BASE}",
}


def forest_directory(
    member_of: dict[str, tuple[str, ...]] | None = None,
    nesting: dict[str, tuple[str, ...]] | None = None,
    descriptors: dict[str, str] | None = None,
    containers: dict[str, str | bytes] | None = None,
    token_groups: dict[str, tuple[str, ...]] | None = None,
    unavailable: dict[str, str] | None = None,
    global_catalog: str | None = f"dc01.{DOMAIN}:3269",
) -> Directory:
    """Evidence of a forest of two domains as the collector writes it: EX01..EX03 with computer accounts in the root
    domain (LAB, lab.contoso.test, where /PrepareAD ran: the Exchange groups are universal groups there), EX04..EX06
    in the child (CHILD, child.lab.contoso.test), EDGE1; the groups of FOREST_GROUPS with their types; every
    container's descriptor.

    `member_of`: server -> group keys (default ES and ETS); `nesting`: group or FOREST_FOREIGN key -> group keys;
    `descriptors`: server -> fixture case; `token_groups`: server -> group keys its tokenGroups list (read from a DC
    of its domain; absent: not read); `unavailable`: "LAB"/"CHILD" -> why no DC of it answered; `global_catalog`:
    None for a global catalog that did not answer."""
    member_of, nesting, descriptors = member_of or {}, nesting or {}, descriptors or {}
    token_groups, unavailable = token_groups or {}, unavailable or {}

    def dn(key: str) -> str:
        return FOREST_GROUPS[key][0] if key in FOREST_GROUPS else FOREST_FOREIGN[key]

    groups: dict[str, Principal] = {}
    for key, (group_dn, sid, group_type) in FOREST_GROUPS.items():
        name = rdn_value(group_dn)
        groups[group_dn] = Principal(group_dn, sid, name, tuple(dn(g) for g in nesting.get(key, ())), "group", None,
                                     None, group_type)  # fmt: skip
    for key, fsp_dn in FOREST_FOREIGN.items():
        groups[fsp_dn] = Principal(
            fsp_dn, "S-1-5-11", "S-1-5-11", tuple(dn(g) for g in nesting.get(key, ())), "foreign"
        )
    sids = {key: FOREST_GROUPS[key][1] for key in FOREST_GROUPS}
    servers, computers = [], {}
    for i in range(1, 7):
        name = f"EX{i:02d}"
        child = i > 3
        domain = CHILD_DOMAIN if child else ROOT_DOMAIN
        base, domain_sid = (CHILD_BASE, CHILD_SID) if child else (BASE, DOMAIN_SID)
        fqdn = f"{name.lower()}.{domain.dns_name}"
        case = descriptors.get(name, "server_default")
        servers.append(ExchangeServer(name, f"CN={name},{SERVERS}", fqdn, 6, None, None, raw(case)))
        listed = token_groups.get(name)
        computers[name] = Principal(
            f"CN={name},CN=Computers,{base}",
            f"{domain_sid}-{1300 + i}",
            f"{name}$",
            tuple(dn(g) for g in member_of.get(name, ("ES", "ETS"))),
            "computer",
            fqdn,
            f"{domain_sid}-515",
            token_groups=None
            if listed is None
            else TokenGroups(domain.controller or "", tuple(sids[k] for k in listed), None),
        )
    domains = tuple(
        replace(d, controller=None, unavailable=unavailable[d.netbios_name or ""])
        if d.netbios_name in unavailable
        else d
        for d in (ROOT_DOMAIN, CHILD_DOMAIN)
    )
    return rights_directory(
        servers,
        computers,
        groups,
        netbios_domain="LAB",
        domains=domains,
        global_catalog=global_catalog,
        global_catalog_unavailable=None if global_catalog else f"dc01.{DOMAIN}:3269: Connection refused",
        container_descriptors=container_descriptors(containers),
    )


def renamed(directory: Directory, old: str, new: str) -> Directory:
    """The server `old` renamed to `new` (its computer account too, so the judges still find it by name)."""
    servers = tuple(replace(s, name=new) if s.name == old else s for s in directory.servers)
    computers = {new if name == old else name: account for name, account in directory.computers.items()}
    return replace(directory, servers=servers, computers=computers)


# --- checking fixes ---------------------------------------------------------------------------------------

# A name anyone who can create a group, rename a server or issue a certificate could choose: a subexpression
# that would run inside "...", a double quote and a backtick that would end or escape it, a single quote.
HOSTILE = 'Ops $(Remove-Item C:\\ -Recurse) "x" `whoami` O\'Brien'
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_DOUBLE_QUOTES = '"\u201c\u201d\u201e'


def runnable_text(fix: str) -> str:
    """What PowerShell would run or expand in a fix: each line without its '...' literals (each left as '') and
    without its # comment. A model of the tokenizer that is enough for the fixes the judges write."""
    kept = []
    for line in fix.splitlines():
        out: list[str] = []
        i, in_double = 0, False
        while i < len(line):
            char = line[i]
            if char in _DOUBLE_QUOTES:
                in_double = not in_double
            elif not in_double and char in _SINGLE_QUOTES:
                i = _after_literal(line, i)
                out.append("''")
                continue
            elif not in_double and char == "#" and (i == 0 or line[i - 1].isspace()):
                break
            out.append(char)
            i += 1
        kept.append("".join(out))
    return "\n".join(kept)


def _after_literal(line: str, start: int) -> int:
    i = start + 1
    while i < len(line):
        if line[i] in _SINGLE_QUOTES:
            if i + 1 < len(line) and line[i + 1] in _SINGLE_QUOTES:  # two in a row stand for one
                i += 2
                continue
            return i + 1
        i += 1
    raise AssertionError(f"unterminated single-quoted string: {line!r}")
