"""Facts survive the evidence file: collect at a customer, judge later, replay a bug report."""

from datetime import UTC, datetime

import pytest

from exchange_compliance import snapshot
from exchange_compliance.facts import (
    AuthConfig,
    Directory,
    ExchangeServer,
    Handshake,
    OrgFacts,
    Principal,
    ServerProbe,
    SiteBinding,
    SslCertBinding,
    StoreCertificate,
    Unavailable,
    Version,
    VirtualDirectory,
)

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def sample_facts() -> OrgFacts:
    server = ExchangeServer(
        "EX01", "CN=EX01,CN=Servers", "ex01.contoso.com", 6, Version(15, 2, 1544, 4), "Site", b"\x01"
    )
    edge = ExchangeServer("EDGE01", "CN=EDGE01,CN=Servers", None, 64, None, None, None)
    computer = Principal("CN=EX01,CN=Computers", "S-1-5-21-1-2-3-1105", "EX01$", ("CN=Exchange Servers",), "computer")
    directory = Directory(
        domain_dn="DC=contoso,DC=com",
        configuration_dn="CN=Configuration,DC=contoso,DC=com",
        org_name="Contoso",
        org_dn="CN=Contoso,CN=Microsoft Exchange",
        org_security_descriptor=b"\x01\x00\x04\x80",
        well_known_groups={"exchange_servers": "CN=Exchange Servers"},
        extended_rights={"ms-Exch-EPI-Token-Serialization": "06386f89-befb-4e48-baa1-559fd9221f78"},
        servers=(edge, server),
        computers={"EX01": computer},
        groups={"CN=Exchange Servers": Principal("CN=Exchange Servers", "S-1-5-21-1-2-3-1110", "Exchange Servers")},
        auth_config=AuthConfig("CN=Auth Configuration", "AB", None, "CD", NOW, ("0:AB", "2:CD")),
        virtual_directories=(VirtualDirectory("CN=EWS", "EX01", "EWS (Default Web Site)", "x", "https://a", None),),
        domain_sid="S-1-5-21-1-2-3",
    )
    probe = ServerProbe(
        computer_name="EX01",
        last_boot=NOW,
        certificates=(
            StoreCertificate("AB", "CN=EX01", "CN=EX01", ("EX01",), NOW, NOW, True, "Microsoft Exchange", b"\x30"),
        ),
        bindings=(SiteBinding("Exchange Back End", "https", "*:444:", "AB", "My"),),
        ssl_bindings=(SslCertBinding("0.0.0.0:444", "AB", "{4dc3e181}", "My"),),
    )
    return OrgFacts(
        org="prod",
        collected_at=NOW,
        directory=directory,
        checked=("EX01", "EDGE01"),
        probes={"EX01": probe, "EDGE01": Unavailable("winrm", "EDGE01", "connection refused")},
        handshakes={"EX01": Handshake("ex01.contoso.com", "10.0.0.1", 444, b"\x30\x82", "TLSv1.2")},
        settings={"hybrid": True, "auth_certificate_warning_days": 60},
    )


def test_round_trip_is_exact(tmp_path):
    facts = sample_facts()
    assert snapshot.read(snapshot.write(facts, tmp_path / "facts.json")) == facts


def test_checked_servers_follow_the_directory_order():
    assert [s.name for s in sample_facts().checked_servers()] == ["EDGE01", "EX01"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"format": "other"}', "not an exchange-compliance facts file"),
        ('{"format": "exchange-compliance-facts/1", "facts": {"org": 1}}', r"snapshot.org: expected str"),
    ],
)
def test_bad_snapshot_is_a_clear_error(text, message):
    with pytest.raises(snapshot.SnapshotError, match=message):
        snapshot.loads(text)


def test_unreadable_snapshot_names_the_file(tmp_path):
    with pytest.raises(snapshot.SnapshotError, match=r"missing\.json: cannot read"):
        snapshot.read(tmp_path / "missing.json")
