"""Facts survive the evidence file: collect at a customer, judge later, replay a bug report."""

import json
import re
import typing
from datetime import UTC, datetime

import pytest

from exchange_compliance import snapshot
from exchange_compliance.facts import (
    AuthConfig,
    Directory,
    ExchangeServer,
    Handshake,
    JudgingSettings,
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
        domain_controller="dc02.contoso.com",
        skipped_controllers=("dc01.contoso.com:636: certificate verify failed: certificate has expired",),
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
        settings=JudgingSettings(hybrid=True, auth_certificate_warning_days=60),
    )


def test_round_trip_is_exact(tmp_path):
    facts = sample_facts()
    assert snapshot.read(snapshot.write(facts, tmp_path / "facts.json")) == facts


def test_evidence_from_before_the_dc_list_still_loads():
    document = json.loads(snapshot.dumps(sample_facts()))
    del document["facts"]["directory"]["domain_controller"], document["facts"]["directory"]["skipped_controllers"]
    directory = snapshot.loads(json.dumps(document)).directory
    assert directory.domain_controller is None and directory.skipped_controllers == ()


def test_an_evidence_file_with_settings_as_a_plain_object_still_loads():
    # Files written before JudgingSettings carry the settings as a JSON object with their two keys, no type tag.
    document = json.loads(snapshot.dumps(sample_facts()))
    document["facts"]["settings"] = {"hybrid": True, "auth_certificate_warning_days": 60}
    facts = snapshot.loads(json.dumps(document))
    assert facts == sample_facts()
    assert facts.settings == JudgingSettings(hybrid=True, auth_certificate_warning_days=60)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hybrid", "yes", "settings.hybrid: expected bool, got 'yes'"),
        ("hybrid", 1, "settings.hybrid: expected bool, got 1"),
        ("auth_certificate_warning_days", 3651, "settings.auth_certificate_warning_days: 3651 is out of range 0..3650"),
        ("auth_certificate_warning_days", -1, "settings.auth_certificate_warning_days: -1 is out of range 0..3650"),
        ("auth_certificate_warning_days", "60", "settings.auth_certificate_warning_days: expected int, got '60'"),
        ("auth_certificate_warning_days", 60.5, "settings.auth_certificate_warning_days: expected int, got 60.5"),
        ("auth_certificate_warning_days", True, "settings.auth_certificate_warning_days: expected int, got True"),
    ],
)
def test_judging_settings_are_checked_when_an_evidence_file_is_read(key, value, message):
    document = json.loads(snapshot.dumps(sample_facts()))
    document["facts"]["settings"][key] = value
    with pytest.raises(snapshot.SnapshotError, match=re.escape(f"evidence.{message}")):
        snapshot.loads(json.dumps(document), "evidence")


def test_an_evidence_file_without_judging_settings_is_refused():
    document = json.loads(snapshot.dumps(sample_facts()))
    del document["facts"]["settings"]["auth_certificate_warning_days"]
    with pytest.raises(snapshot.SnapshotError, match=r"^evidence\.settings\.auth_certificate_warning_days: missing$"):
        snapshot.loads(json.dumps(document), "evidence")


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


def test_not_utf8_snapshot_is_a_clear_error(tmp_path):
    path = tmp_path / "facts.json"
    path.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(snapshot.SnapshotError, match=r"facts\.json: not UTF-8 text \(byte 12\)"):
        snapshot.read(path)


def test_type_hints_are_resolved_once_per_class(monkeypatch):
    # Resolving string annotations evals each one; a 200-server org decodes thousands of objects.
    calls = []
    original = typing.get_type_hints
    monkeypatch.setattr(typing, "get_type_hints", lambda kind, *args: calls.append(kind) or original(kind, *args))
    snapshot._hints.cache_clear()
    text = snapshot.dumps(sample_facts())
    for _ in range(3):
        snapshot.loads(text)
    assert len(calls) == len(set(calls)) and Principal in calls


def test_the_evidence_file_is_parsed_once_per_run(suite, pytester, tmp_path):
    # The org name comes from the file, and so do the facts: one parse, not one for each.
    pytester.makepyfile(
        count_parses="""
        from exchange_compliance import snapshot

        parsed = []
        original = snapshot.loads


        def loads(text, source="snapshot"):
            parsed.append(source)
            return original(text, source)


        snapshot.loads = loads


        def pytest_unconfigure(config):
            print("PARSED", parsed)
        """
    )
    path = snapshot.write(sample_facts(), tmp_path / "evidence.json")
    run = suite(None, "-p", "count_parses", "--org-snapshot", str(path))
    assert run.ret in (0, 1), run.stdout + run.stderr
    assert f"PARSED [{str(path)!r}]" in run.stdout
