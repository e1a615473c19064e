"""The lab DC (exchange_compliance.lab.directory): a real Samba AD DC with Exchange's configuration objects.

The plan tests need nothing. The `lab` tests start Samba (root, ports 88/389/636 on 127.0.0.1): first a
cold and a warm start to check the cache, then the `seeds` scenario once for the module, read over LDAPS
as the audit account exactly as the suite reads it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lab_org import release_shared_lab

from exchange_compliance.lab import control, directory, prerequisites
from exchange_compliance.lab.layout import DC_ADDRESS, DC_HOST, DOMAIN, LabLayout
from exchange_compliance.lab.populate import (
    CONFIG_DN,
    DOMAIN_DN,
    EXCHANGE_DN,
    EXTENDED_RIGHTS,
    Dns,
    build_plan,
    rdn_escape,
    role_mask,
    serial_number,
    version_number,
)
from exchange_compliance.lab.scenario import load_scenario, parse_scenario

AUDIT_USER = "excompliance"
AUDIT_PASSWORD = "Lab-audit-Pass-42"
CURRENT, PREVIOUS, NEXT = "A1" * 20, "B2" * 20, "C3" * 20
NEXT_EFFECTIVE = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
TOKEN_SERIALIZATION = EXTENDED_RIGHTS["ms-Exch-EPI-Token-Serialization"]
IMPERSONATION = EXTENDED_RIGHTS["ms-Exch-EPI-Impersonation"]


# --- the plan, without Samba ---------------------------------------------------------------------------


def _plan(scenario, **overrides):
    values = dict(auth_current=CURRENT, auth_previous=None, auth_next=None, auth_next_effective=None)
    values.update(overrides)
    return build_plan(scenario, audit_user=AUDIT_USER, audit_password=AUDIT_PASSWORD, **values)


def _adds(plan):
    return {step["dn"]: step["attrs"] for step in plan["steps"] if step["op"] == "add"}


def test_version_encodings_match_exchange_facts():
    assert version_number("15.1.2507.6") == 1942063563  # the example of EXCHANGE_FACTS §1
    value = version_number("15.2.1544.4")
    assert (value >> 22 & 63, value >> 16 & 63, value & 0x7FFF) == (15, 2, 1544)
    assert serial_number("15.2.1544.4") == "Version 15.2 (Build 31544.4)"
    assert serial_number("15.1.1034") == "Version 15.1 (Build 31034)"
    assert role_mask(("Mailbox", "ClientAccess")) == 6
    assert role_mask(("Edge",)) == 64
    with pytest.raises(ValueError, match="Mailman"):
        role_mask(("Mailman",))


def test_rdn_escape():
    assert rdn_escape("Contoso, Ltd") == "Contoso\\, Ltd"
    assert rdn_escape("#1 Org") == "\\#1 Org"


def test_plan_lays_out_the_seeds_org():
    scenario = load_scenario("seeds")
    plan = _plan(scenario, auth_previous=PREVIOUS, auth_next=NEXT, auth_next_effective=NEXT_EFFECTIVE)
    adds, dns = _adds(plan), Dns("Contoso")
    assert adds[dns.server("EX03")]["serialNumber"] == ["Version 15.1 (Build 31034.26)"]
    assert "ncacn_ip_tcp:ex03.lab.contoso.test" in adds[dns.server("EX03")]["networkAddress"]
    ews = f"CN=EWS (Default Web Site),CN=HTTP,CN=Protocols,{dns.server('EX06')}"
    assert "msExchInternalHostName" not in adds[ews]  # ews_internal_url = ""
    assert adds[ews]["msExchExternalHostName"] == ["https://mail.lab.contoso.test/EWS/Exchange.asmx"]
    auth = adds[dns.auth_config]
    assert auth["msExchAuthCertificateThumbprint"] == [f"0:{CURRENT}", f"1:{PREVIOUS}", f"2:{NEXT}"]
    assert auth["msExchAuthNextEffectiveDate"] == ["20310504030201.0Z"]
    ops = [(step["op"], step.get("dn")) for step in plan["steps"]]
    # The org's ACEs go in before any server exists below it, so the servers inherit them on creation.
    assert ops.index(("aces", dns.org)) < ops.index(("add", dns.server("EX01")))
    assert ("protect", dns.server("EX05")) in ops
    members = {step["group"]: step["members"] for step in plan["steps"] if step["op"] == "members"}
    assert members["Server Operators Team"] == ["EX02$"]
    assert members["Domain Admins"] == ["Server Operators Team"]


def test_plan_sets_a_deny_on_the_administrative_group_before_the_servers_exist():
    plan = _plan(load_scenario("rights-cases"))
    dns = Dns("Contoso")
    ops = [(step["op"], step.get("dn")) for step in plan["steps"]]
    aces = [step for step in plan["steps"] if step["op"] == "aces" and step["dn"] == dns.admin_group]
    assert [step["sddl"] for step in aces] == [f"(OD;CI;CR;{TOKEN_SERIALIZATION};;{{sid:Admin Group Deny Team}})"]
    assert ops.index(("add", dns.admin_group)) < ops.index(("aces", dns.admin_group))
    assert ops.index(("aces", dns.admin_group)) < ops.index(("add", dns.server("EX01")))


def test_plan_gives_joined_servers_keys_and_http_spns_and_names_the_keytabs():
    scenario = parse_scenario({"servers": [{"name": "EX01"}, {"name": "EDGE01", "roles": ["Edge"]}]}, "k.toml")
    plan = _plan(scenario)
    computers = {step["dn"]: step["attrs"] for step in plan["steps"] if step["op"] == "computer"}
    # The worker gives each "computer" a random machine password: without keys the KDC issues no ticket for it.
    assert set(computers) == {Dns.computer("EX01")}  # an Edge server is not joined: no account, no SPN
    assert computers[Dns.computer("EX01")]["servicePrincipalName"] == [
        "HOST/EX01", "HOST/ex01.lab.contoso.test", "HTTP/ex01.lab.contoso.test", "HTTP/EX01",
    ]  # fmt: skip
    spns = next(step for step in plan["steps"] if step["op"] == "spns")
    assert spns["account"] == "DC01$" and "ldap/dc01.lab.contoso.test" in spns["spns"]
    assert plan["keytabs"] == {"audit": [f"{AUDIT_USER}@LAB.CONTOSO.TEST"], "servers": ["EX01$@LAB.CONTOSO.TEST"]}


def test_plan_auth_variants():
    base = {"servers": [{"name": "EX01"}, {"name": "EDGE01", "roles": ["Edge"], "member_of": []}]}
    raw = parse_scenario({**base, "auth": {"raw_thumbprint_values": ["DEADBEEF"]}}, "raw.toml")
    assert _adds(_plan(raw))[Dns("Contoso").auth_config]["msExchAuthCertificateThumbprint"] == ["DEADBEEF"]
    absent = parse_scenario({**base, "auth": {"absent": True}}, "absent.toml")
    adds = _adds(_plan(absent))
    assert Dns("Contoso").auth_config not in adds
    assert Dns.computer("EDGE01") not in adds  # a subscribed Edge server has no domain account
    assert Dns("Contoso").server("EDGE01") in adds


def test_missing_samba_names_the_packages(monkeypatch):
    monkeypatch.setattr(prerequisites.shutil, "which", lambda _name: None)
    with pytest.raises(directory.DirectoryError) as raised:
        directory._check_prerequisites()
    lines = str(raised.value).splitlines()
    assert "samba (the AD DC daemon) is missing: apt-get install samba" in lines
    assert "samba-tool is missing: apt-get install samba-common-bin" in lines
    assert all(line.count("apt-get install") == 1 for line in lines)


def test_missing_provisioning_files_stop_lab_up_before_anything_starts(monkeypatch, tmp_path):
    """samba-ad-dc without its recommended samba-ad-provision: named at once, nothing started or written."""
    monkeypatch.setattr(prerequisites, "PROVISION_SCHEMA", tmp_path / "absent.ldf")
    monkeypatch.setattr(
        prerequisites,
        "PREREQUISITES",
        tuple(
            replace(p, present=(tmp_path / "absent.ldf").exists) if p.package == "samba-ad-provision" else p
            for p in prerequisites.PREREQUISITES
        ),
    )
    with pytest.raises(control.LabError) as raised:
        control.up(tmp_path / "lab", scenario_name="healthy", say=lambda _message: None)
    assert str(raised.value).endswith("is missing: apt-get install samba-ad-provision")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "lab").exists()


def test_busy_ldaps_port_is_reported(monkeypatch):
    class Listening:  # a socket whose connect succeeds: something answers on 636
        def __init__(self, *_args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *_exc):
            return False

        def settimeout(self, _seconds):
            pass

        def connect_ex(self, _address):
            return 0

    monkeypatch.setattr(directory.socket, "socket", Listening)
    with pytest.raises(directory.DirectoryError, match=r"port 636 on 127\.0\.0\.1 is busy"):
        directory._check_port_free()


def test_failed_provisioning_shows_samba_tools_last_lines(monkeypatch, tmp_path):
    def failing(args, **_kwargs):
        return subprocess.CompletedProcess(args, 1, "", "lots of output\nERROR(<class 'ValueError'>): bad realm\n")

    monkeypatch.setattr(directory.subprocess, "run", failing)
    with pytest.raises(directory.DirectoryError, match=r"(?s)provision failed.*bad realm"):
        directory._build_cache(tmp_path / "samba-dc-x")
    assert not list(tmp_path.iterdir())  # nothing half-built left behind


# --- the running DC -------------------------------------------------------------------------------------


def _connect(layout: LabLayout):
    import ldap3

    server = ldap3.Server(
        DC_ADDRESS,
        port=636,
        use_ssl=True,
        tls=ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(layout.dc_ca_file), valid_names=[DC_HOST]),
    )
    return ldap3.Connection(server, f"{AUDIT_USER}@{DOMAIN}", AUDIT_PASSWORD, auto_bind=True)


def _one(conn, dn, attributes, controls=None):
    from ldap3 import BASE

    assert conn.search(dn, "(objectClass=*)", BASE, attributes=attributes, controls=controls), (dn, conn.result)
    return conn.entries[0]


def _sid(conn, account: str) -> str:
    conn.search(DOMAIN_DN, f"(sAMAccountName={account})", attributes=["objectSid"])
    return conn.entries[0].objectSid.value


def _sddl(conn, dn) -> str:
    """Samba's own SDDL rendering (the suite's descriptor parser is tested elsewhere)."""
    from ldap3.protocol.microsoft import security_descriptor_control

    entry = _one(conn, dn, ["nTSecurityDescriptor"], security_descriptor_control(sdflags=0x07))
    domain_sid = _sid(conn, "Domain Admins").rsplit("-", 1)[0]
    return directory.render_sddl(entry.entry_raw_attribute("nTSecurityDescriptor")[0], domain_sid)


def _token_groups(conn, dn) -> set[str]:
    from ldap3.protocol.formatters.formatters import format_sid

    return {format_sid(raw) for raw in _one(conn, dn, ["tokenGroups"]).entry_raw_attribute("tokenGroups")}


@pytest.fixture(scope="session")
def dc_turn():
    """One lab DC at a time on this machine (it owns ports 88, 389 and 636): with pytest-xdist, the workers
    that need one take turns, each holding the lock until its session ends."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / "exchange-compliance-lab-dc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        release_shared_lab()  # the lab org other tests bring up holds the same ports
        yield


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory, dc_turn) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.mark.lab
def test_cache_makes_the_second_start_fast(lab_root, monkeypatch):
    """Cold: provision and extend the schema into the cache. Warm: copy it, without provisioning."""
    layout = LabLayout(lab_root)
    shutil.rmtree(layout.cache_dir, ignore_errors=True)
    custom = parse_scenario(
        {
            "org_name": "Fabrikam, Inc",
            "servers": [{"name": "EX01"}, {"name": "EX02", "member_of": ["Exchange Servers", "Tier 2"]}],
            "groups": [
                {"name": "Tier 2", "member_of": ["Tier 1"]},
                {"name": "Tier 1", "member_of": ["Domain Admins"]},
                # KB 2898571's case as it was found: an Exchange group (not created again) nested into Domain Admins
                {"name": "Exchange Trusted Subsystem", "member_of": ["Domain Admins"]},
            ],
            "aces": [{"object": "server:EX01", "sddl": f"(OD;;CR;{TOKEN_SERIALIZATION};;{{sid:EX02$}})"}],
            "auth": {"raw_thumbprint_values": ["ABCDEF"]},
        },
        "custom.toml",
    )
    auth = directory.AuthValues(CURRENT, None, None, None)
    started = time.monotonic()
    directory.start_directory(custom, layout, auth, AUDIT_USER, AUDIT_PASSWORD)
    cold = time.monotonic() - started
    directory.stop_directory(layout)
    assert not directory.directory_running(layout)

    def no_provisioning(_target):
        raise AssertionError("the warm start provisioned again instead of using the cache")

    monkeypatch.setattr(directory, "_build_cache", no_provisioning)
    started = time.monotonic()
    info = directory.start_directory(custom, layout, auth, AUDIT_USER, AUDIT_PASSWORD)
    warm = time.monotonic() - started
    try:
        print(f"cold start {cold:.1f} s, warm start {warm:.1f} s")
        assert warm < cold
        assert directory.directory_running(layout)
        conn = _connect(layout)
        dns = Dns("Fabrikam, Inc")
        assert f"(OD;;CR;{TOKEN_SERIALIZATION};;{_sid(conn, 'EX02$')})" in _sddl(conn, dns.server("EX01"))
        tokens = _token_groups(conn, Dns.computer("EX02"))
        assert _sid(conn, "Domain Admins") in tokens  # EX02$ -> Tier 2 -> Tier 1 -> Domain Admins
        assert _sid(conn, "Domain Admins") in _token_groups(conn, Dns.computer("EX01"))  # through ETS
        auth_entry = _one(conn, dns.auth_config, ["msExchAuthCertificateThumbprint"])
        assert auth_entry.msExchAuthCertificateThumbprint.values == ["ABCDEF"]  # raw values, verbatim
    finally:
        directory.stop_directory(layout)
    assert not directory.directory_running(layout)
    assert info.pid > 0


@pytest.fixture(scope="module")
def seeds(lab_root):
    layout = LabLayout(lab_root)
    auth = directory.AuthValues(CURRENT, PREVIOUS, NEXT, NEXT_EFFECTIVE)
    info = directory.start_directory(load_scenario("seeds"), layout, auth, AUDIT_USER, AUDIT_PASSWORD)
    conn = _connect(layout)
    yield info, conn
    conn.unbind()
    directory.stop_directory(layout)


SEEDS = Dns("Contoso")


@pytest.mark.lab
def test_directory_info(seeds):
    info, _ = seeds
    assert (info.host, info.address, info.ldaps_port, info.domain_dn) == (DC_HOST, DC_ADDRESS, 636, DOMAIN_DN)
    assert info.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")


@pytest.mark.lab
def test_org_container_and_well_known_groups(seeds):
    from ldap3 import LEVEL

    _, conn = seeds
    conn.search(EXCHANGE_DN, "(objectClass=msExchOrganizationContainer)", LEVEL, attributes=["cn"])
    assert [e.entry_dn for e in conn.entries] == [SEEDS.org]
    values = _one(conn, EXCHANGE_DN, ["otherWellKnownObjects"]).otherWellKnownObjects.values
    values = [v.decode() if isinstance(v, bytes) else v for v in values]  # DN-Binary: ldap3 leaves it raw
    by_guid = {v.split(":")[2]: v.split(":", 3)[3] for v in values}
    assert by_guid["A7D2016C83F003458132789EEB127B84"] == Dns.group("Exchange Servers")
    assert by_guid["C262A929D691B74A9E068728F8F842EA"] == Dns.group("Organization Management")
    assert by_guid["EA876A58DB6DD04C9006939818F800EB"] == Dns.group("Exchange Trusted Subsystem")
    for group_dn in by_guid.values():
        _one(conn, group_dn, ["objectSid"])


@pytest.mark.lab
def test_server_objects(seeds):
    _, conn = seeds
    attributes = ["objectClass", "serialNumber", "versionNumber", "msExchCurrentServerRoles", "networkAddress",
                  "msExchServerSite", "legacyExchangeDN"]  # fmt: skip
    conn.search(SEEDS.org, "(objectCategory=msExchExchangeServer)", attributes=attributes)
    servers = {e.entry_dn.split(",")[0][3:]: e for e in conn.entries}
    assert sorted(servers) == ["EX01", "EX02", "EX03", "EX04", "EX05", "EX06"]
    ex03 = servers["EX03"]
    assert ex03.objectClass.values == ["top", "server", "msExchExchangeServer"]
    assert ex03.serialNumber.value == "Version 15.1 (Build 31034.26)"
    assert ex03.versionNumber.value == version_number("15.1.1034.26")
    assert ex03.msExchCurrentServerRoles.value == 6
    assert "ncacn_ip_tcp:ex03.lab.contoso.test" in ex03.networkAddress.values
    assert ex03.msExchServerSite.value == f"CN=Default-First-Site-Name,CN=Sites,{CONFIG_DN}"
    assert servers["EX04"].serialNumber.value == "Version 15.0 (Build 31497.2)"
    computer = _one(conn, Dns.computer("EX03"), ["dNSHostName", "servicePrincipalName", "userAccountControl"])
    assert computer.dNSHostName.value == "ex03.lab.contoso.test"
    assert set(computer.servicePrincipalName.values) == {
        "HOST/EX03", "HOST/ex03.lab.contoso.test", "HTTP/EX03", "HTTP/ex03.lab.contoso.test",
    }  # fmt: skip
    assert computer.userAccountControl.value == 4096


@pytest.mark.lab
def test_extended_rights(seeds):
    _, conn = seeds
    for right, guid in EXTENDED_RIGHTS.items():
        entry = _one(conn, f"CN={right},CN=Extended-Rights,{CONFIG_DN}", ["rightsGuid", "validAccesses", "appliesTo"])
        assert entry.rightsGuid.value == guid
        assert entry.validAccesses.value == 256
        assert entry.appliesTo.value == "01a9aa9c-a981-11d2-a9ff-00c04f8eedd8"


@pytest.mark.lab
def test_auth_configuration(seeds):
    _, conn = seeds
    attributes = ["objectClass", "msExchAuthCertificateThumbprint", "msExchAuthNextEffectiveDate",
                  "msExchAuthApplicationIdentifier"]  # fmt: skip
    entry = _one(conn, SEEDS.auth_config, attributes)
    assert entry.objectClass.values == ["top", "container", "msExchContainer", "msExchAuthAuthConfig"]
    assert sorted(entry.msExchAuthCertificateThumbprint.values) == [f"0:{CURRENT}", f"1:{PREVIOUS}", f"2:{NEXT}"]
    assert entry.msExchAuthNextEffectiveDate.value == NEXT_EFFECTIVE
    assert entry.msExchAuthApplicationIdentifier.value == "00000002-0000-0ff1-ce00-000000000000"


@pytest.mark.lab
def test_ews_virtual_directories(seeds):
    _, conn = seeds
    conn.search(SEEDS.org, "(objectClass=msExchWebServicesVirtualDirectory)",
                attributes=["msExchInternalHostName", "msExchExternalHostName"])  # fmt: skip
    vdirs = {e.entry_dn.split(",CN=HTTP,CN=Protocols,CN=")[1].split(",")[0] + "/" + e.entry_dn[3:].split(",")[0]: e
             for e in conn.entries}  # fmt: skip
    assert len(vdirs) == 12
    ex01 = vdirs["EX01/EWS (Default Web Site)"]
    assert ex01.msExchInternalHostName.value == "https://ex01.lab.contoso.test/EWS/Exchange.asmx"
    assert ex01.msExchExternalHostName.value == "https://mail.lab.contoso.test/EWS/Exchange.asmx"
    assert vdirs["EX01/EWS (Exchange Back End)"].msExchInternalHostName.value == (
        "https://ex01.lab.contoso.test:444/EWS/Exchange.asmx"
    )
    assert vdirs["EX06/EWS (Default Web Site)"].msExchInternalHostName.value is None  # the Hybrid Agent article


@pytest.mark.lab
def test_ex02_is_nested_into_domain_admins(seeds):
    _, conn = seeds
    assert Dns.group("Server Operators Team") in _one(conn, Dns.computer("EX02"), ["memberOf"]).memberOf.values
    assert _sid(conn, "Domain Admins") in _token_groups(conn, Dns.computer("EX02"))  # KB 2898571
    assert _sid(conn, "Domain Admins") not in _token_groups(conn, Dns.computer("EX01"))


@pytest.mark.lab
def test_servers_inherit_the_setup_aces(seeds):
    _, conn = seeds
    exchange_servers = _sid(conn, "Exchange Servers")
    org = _sddl(conn, SEEDS.org)
    assert f"(A;CI;CR;;;{exchange_servers})" in org and "(A;CI;CR;;;SY)" in org
    sddl = _sddl(conn, SEEDS.server("EX01"))
    for trustee in ("EA", "DA", "SA", _sid(conn, "Organization Management")):
        for right in (TOKEN_SERIALIZATION, IMPERSONATION):
            assert f"(OD;CIID;CR;{right};;{trustee})" in sddl
    assert f"(A;CIID;CR;;;{exchange_servers})" in sddl
    assert sddl.index(f"(OD;CIID;CR;{TOKEN_SERIALIZATION};;DA)") < sddl.index(f"(A;CIID;CR;;;{exchange_servers})")


@pytest.mark.lab
def test_ex05_dacl_is_protected_without_the_exchange_servers_allow(seeds):
    _, conn = seeds
    sddl = _sddl(conn, SEEDS.server("EX05"))
    assert sddl.split("D:")[1].startswith("P")  # the Hybrid Agent article
    assert _sid(conn, "Exchange Servers") not in sddl
    assert "ID;" not in sddl  # the inherited ACEs, the denies with them, are gone


@pytest.mark.lab
def test_audit_account_is_ordinary_and_cannot_write(seeds):
    from ldap3 import MODIFY_REPLACE

    _, conn = seeds
    user_dn = f"CN={AUDIT_USER},CN=Users,{DOMAIN_DN}"
    assert _one(conn, user_dn, ["memberOf"]).memberOf.values == []
    assert _sid(conn, "Domain Admins") not in _token_groups(conn, user_dn)
    assert not conn.modify(SEEDS.server("EX01"), {"msExchCurrentServerRoles": [(MODIFY_REPLACE, ["64"])]})
    assert conn.result["description"] == "insufficientAccessRights"
    assert _one(conn, SEEDS.server("EX01"), ["msExchCurrentServerRoles"]).msExchCurrentServerRoles.value == 6
