"""A forest of two domains in memory, answering the directory reader's searches as AD's DCs and global catalog
would (for the collector tests: test_collect_forest.py).

Each source holds what its AD counterpart holds: a DC of a domain, that domain's objects with all their links (and
the configuration); the global catalog, every domain's objects, but the membership (`member`) of universal groups
only; `memberOf` is worked out from the `member` values the source holds, as AD computes a back link. Filters are
evaluated by a small parser for the forms the reader writes: &, |, presence, equality (escaped values), and the
bitwise-AND matching rule.

A plain module, not a test module (see factories.py for why).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import ldap3

from exchange_compliance.collect import values
from exchange_compliance.names import parent_dn

ROOT, CHILD = "DC=contoso,DC=test", "DC=child,DC=contoso,DC=test"
CONFIG = f"CN=Configuration,{ROOT}"
EXCHANGE = f"CN=Microsoft Exchange,CN=Services,{CONFIG}"
ORG = f"CN=Contoso,{EXCHANGE}"
SERVERS = f"CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,{ORG}"
MESG = f"OU=Microsoft Exchange Security Groups,{ROOT}"
ROOT_SID, CHILD_SID = "S-1-5-21-100-200-300", "S-1-5-21-400-500-600"
UNIVERSAL, GLOBAL, DOMAIN_LOCAL = -2147483640, -2147483646, -2147483644
TS = "06386f89-befb-4e48-baa1-559fd9221f78"


@dataclass
class Entry:
    dn: str
    attributes: dict[str, list[bytes]] = field(default_factory=dict)

    def get(self, name: str) -> list[bytes]:
        return next((v for k, v in self.attributes.items() if k.lower() == name.lower()), [])


def _values(value: object) -> list[bytes]:
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, bytes) else str(item).encode() for item in items]


def entry(dn: str, **attributes: object) -> Entry:
    return Entry(dn, {name: _values(value) for name, value in attributes.items()})


def sid(text: str) -> bytes:
    return values.sid_to_bytes(text)


def group(dn: str, rid_sid: str, group_type: int, *members: str) -> Entry:
    name = dn.split(",")[0][3:]
    return entry(
        dn,
        objectClass=["top", "group"],
        objectSid=sid(rid_sid),
        sAMAccountName=name,
        cn=name,
        groupType=group_type,
        member=list(members),
    )


def computer(name: str, domain: str, domain_sid: str, rid: int) -> Entry:
    host = f"{name.lower()}.{domain.replace('DC=', '').replace(',', '.')}"
    return entry(
        f"CN={name},CN=Computers,{domain}",
        objectClass=["top", "computer"],
        objectCategory="computer",
        objectSid=sid(f"{domain_sid}-{rid}"),
        sAMAccountName=f"{name}$",
        dNSHostName=host,
        primaryGroupID=515,
    )


def descriptor(*aces: tuple[int, int, str, str | None]) -> bytes:
    """A self-relative descriptor with a DACL of (type, flags, SID, object type GUID) entries, mask CR."""
    import uuid

    body = b""
    for ace_type, flags, trustee, object_type in aces:
        raw_sid = values.sid_to_bytes(trustee)
        if ace_type in (5, 6):
            guid = uuid.UUID(object_type).bytes_le if object_type else b""
            inner = struct.pack("<II", 0x100, 1 if object_type else 0) + guid + raw_sid
        else:
            inner = struct.pack("<I", 0x100) + raw_sid
        body += struct.pack("<BBH", ace_type, flags, 4 + len(inner)) + inner
    acl = struct.pack("<BBHHH", 4, 0, 8 + len(body), len(aces), 0) + body
    return struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 20) + acl


# --- the forest ----------------------------------------------------------------------------------------------------


def forest(servers_per_domain: int = 1) -> dict[str, list[Entry]]:
    """Entries by where they live: "config", "root", "child". EX01.. in the root domain, CX01.. in the child; CX01
    in CHILD\\Team (global), which LAB's Organization Management (universal) holds; EX01 in CHILD\\Deny
    (domain-local); CX01 in LAB\\Root Deny (domain-local); Authenticated Users in CHILD\\Readers (domain-local)."""
    root_computers = [computer(f"EX{i:02d}", ROOT, ROOT_SID, 1000 + i) for i in range(1, servers_per_domain + 1)]
    child_computers = [computer(f"CX{i:02d}", CHILD, CHILD_SID, 1000 + i) for i in range(1, servers_per_domain + 1)]
    everyone = [c.dn for c in (*root_computers, *child_computers)]
    team = f"CN=Team,OU=Teams,{CHILD}"
    fsp = f"CN=S-1-5-11,CN=ForeignSecurityPrincipals,{CHILD}"
    root = [
        group(f"CN=Exchange Servers,{MESG}", f"{ROOT_SID}-1117", UNIVERSAL, *everyone),
        group(f"CN=Exchange Trusted Subsystem,{MESG}", f"{ROOT_SID}-1118", UNIVERSAL, *everyone),
        group(f"CN=Organization Management,{MESG}", f"{ROOT_SID}-1104", UNIVERSAL, team),
        group(f"CN=Domain Computers,CN=Users,{ROOT}", f"{ROOT_SID}-515", GLOBAL),
        group(f"CN=Root Deny,OU=Teams,{ROOT}", f"{ROOT_SID}-3001", DOMAIN_LOCAL, child_computers[0].dn),
        *root_computers,
    ]
    child = [
        group(f"CN=Domain Computers,CN=Users,{CHILD}", f"{CHILD_SID}-515", GLOBAL),
        group(team, f"{CHILD_SID}-2001", GLOBAL, child_computers[0].dn),
        group(f"CN=Deny,OU=Teams,{CHILD}", f"{CHILD_SID}-3001", DOMAIN_LOCAL, root_computers[0].dn),
        group(f"CN=Readers,OU=Teams,{CHILD}", f"{CHILD_SID}-3002", DOMAIN_LOCAL, fsp),
        entry(fsp, objectClass=["top", "foreignSecurityPrincipal"], objectSid=sid("S-1-5-11"), cn="S-1-5-11"),
        *child_computers,
    ]
    org_aces = [(6, 0x02, f"{ROOT_SID}-1104", TS), (0, 0x02, f"{ROOT_SID}-1117", None)]
    inherited = descriptor(*((t, f | 0x10, s, o) for t, f, s, o in org_aces))
    servers = [
        entry(
            f"CN={c.dn.split(',')[0][3:]},{SERVERS}",
            objectClass=["top", "server", "msExchExchangeServer"],
            objectCategory="msExchExchangeServer",
            cn=c.dn.split(",")[0][3:],
            networkAddress=f"ncacn_ip_tcp:{c.get('dNSHostName')[0].decode()}",
            msExchCurrentServerRoles=6,
            versionNumber=1942061587,
            nTSecurityDescriptor=inherited,
        )
        for c in (*root_computers, *child_computers)
    ]
    sites = f"CN=Servers,CN=Default-First-Site-Name,CN=Sites,{CONFIG}"
    config = [
        entry(
            EXCHANGE,
            objectClass="msExchConfigurationContainer",
            nTSecurityDescriptor=descriptor(),
            otherWellKnownObjects=[
                f"B:32:A7D2016C83F003458132789EEB127B84:CN=Exchange Servers,{MESG}",
                f"B:32:EA876A58DB6DD04C9006939818F800EB:CN=Exchange Trusted Subsystem,{MESG}",
                f"B:32:C262A929D691B74A9E068728F8F842EA:CN=Organization Management,{MESG}",
            ],
        ),
        entry(ORG, objectClass="msExchOrganizationContainer", cn="Contoso", nTSecurityDescriptor=descriptor(*org_aces)),
        entry(
            f"CN=Administrative Groups,{ORG}", objectClass="msExchAdminGroupContainer", nTSecurityDescriptor=inherited
        ),
        entry(parent_dn(SERVERS), objectClass="msExchAdminGroup", nTSecurityDescriptor=inherited),
        entry(SERVERS, objectClass="msExchServersContainer", nTSecurityDescriptor=inherited),
        *servers,
        entry(
            f"CN=ms-Exch-EPI-Token-Serialization,CN=Extended-Rights,{CONFIG}",
            objectClass="controlAccessRight",
            cn="ms-Exch-EPI-Token-Serialization",
            rightsGuid=TS,
        ),
        entry(
            f"CN=LAB,CN=Partitions,{CONFIG}",
            objectClass="crossRef",
            nCName=ROOT,
            dnsRoot="contoso.test",
            nETBIOSName="LAB",
            systemFlags=3,
        ),
        entry(
            f"CN=CHILD,CN=Partitions,{CONFIG}",
            objectClass="crossRef",
            nCName=CHILD,
            dnsRoot="child.contoso.test",
            nETBIOSName="CHILD",
            systemFlags=3,
        ),
        entry(f"CN=DC01,{sites}", objectClass="server", dNSHostName="dc01.contoso.test"),
        entry(f"CN=NTDS Settings,CN=DC01,{sites}", objectClass="nTDSDSA", **{"msDS-HasDomainNCs": ROOT}),
        entry(f"CN=DC11,{sites}", objectClass="server", dNSHostName="dc11.child.contoso.test"),
        entry(f"CN=NTDS Settings,CN=DC11,{sites}", objectClass="nTDSDSA", **{"msDS-HasDomainNCs": CHILD}),
        entry(f"CN=DC12,{sites}", objectClass="server", dNSHostName="dc12.child.contoso.test"),
        entry(f"CN=NTDS Settings,CN=DC12,{sites}", objectClass="nTDSDSA", **{"msDS-HasDomainNCs": CHILD}),
    ]
    return {"config": config, "root": root, "child": child}


# --- a source --------------------------------------------------------------------------------------------------


class FakeSource:
    """What the reader uses of an ldap3 connection: paged_search (and usage, result); base reads of tokenGroups
    through `tokens`."""

    def __init__(self, entries: list[Entry], *, catalog: bool = False, tokens: dict[str, list[str]] | None = None):
        self.entries = [_for_catalog(e) for e in entries] if catalog else entries
        self.tokens = tokens or {}
        self.searches: list[str] = []
        self.result: dict = {"result": 0}
        self.extend = type("Extend", (), {"standard": self})()
        self.usage = type("Usage", (), {"search_operations": 0})()

    def paged_search(self, base: str, search_filter: str, scope: str, attributes: list[str], **_: object) -> list[dict]:
        self.searches.append(search_filter)
        self.usage.search_operations += 1
        test = _parse(search_filter)
        found = []
        for item in self.entries:
            dn = item.dn.lower()
            inside = {
                ldap3.BASE: dn == base.lower(),
                ldap3.LEVEL: parent_dn(dn) == base.lower(),
                ldap3.SUBTREE: not base or dn == base.lower() or dn.endswith("," + base.lower()),
            }[scope]
            if inside and test(self._with_backlinks(item)):
                found.append(self._answer(item, attributes))
        return found

    def _with_backlinks(self, item: Entry) -> Entry:
        member_of = [
            g.dn.encode() for g in self.entries if item.dn.lower() in (m.decode().lower() for m in g.get("member"))
        ]
        return Entry(item.dn, {**item.attributes, "memberOf": member_of})

    def _answer(self, item: Entry, attributes: list[str]) -> dict:
        full = self._with_backlinks(item)
        raw = {name: full.get(name) for name in attributes if full.get(name)}
        return {"type": "searchResEntry", "dn": item.dn, "raw_attributes": raw}

    def base_reads(self, dns: list[str]) -> dict[str, dict]:
        self.usage.search_operations += len(dns)
        found = {}
        for dn in dns:
            if dn in self.tokens:
                sids = [sid(s) for s in self.tokens[dn]]
                raw = {"tokenGroups": sids, "tokenGroupsGlobalAndUniversal": sids}
                found[dn.lower()] = {"type": "searchResEntry", "dn": dn, "raw_attributes": raw}
        return found


def _for_catalog(item: Entry) -> Entry:
    """The global catalog's copy: the membership of universal groups only."""
    group_type = item.get("groupType")
    if group_type and not int(group_type[0]) & 0x8:
        return Entry(item.dn, {k: v for k, v in item.attributes.items() if k != "member"})
    return item


# --- filters ---------------------------------------------------------------------------------------------------


def _parse(text: str):
    test, rest = _term(text)
    assert not rest, rest
    return test


def _term(text: str):
    assert text[0] == "(", text
    if text[1] in "&|":
        tests, rest = [], text[2:]
        while rest[0] == "(":
            test, rest = _term(rest)
            tests.append(test)
        combine = all if text[1] == "&" else any
        return (lambda item: combine(t(item) for t in tests)), rest[1:]
    end = text.index(")")
    body, rest = text[1:end], text[end + 1 :]
    bitwise = re.fullmatch(r"(\w+):1\.2\.840\.113556\.1\.4\.803:=(\d+)", body)
    if bitwise:
        name, bits = bitwise.group(1), int(bitwise.group(2))
        return (lambda item: any(int(v) & bits == bits for v in item.get(name))), rest
    name, _, value = body.partition("=")
    if value == "*":
        return (lambda item: bool(item.get(name))), rest
    wanted = re.sub(rb"\\([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), value.encode())
    return (lambda item: any(v.lower() == wanted.lower() for v in _compare(item, name))), rest


def _compare(item: Entry, name: str) -> list[bytes]:
    if name.lower() == "distinguishedname":
        return [item.dn.encode()]
    if name.lower() == "objectclass":
        return item.get("objectClass")
    return item.get(name)
