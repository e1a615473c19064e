"""Decoding what Exchange keeps in AD (EXCHANGE_FACTS.md §1-§3)."""

from datetime import UTC, datetime

import pytest

from exchange_compliance.collect import values
from exchange_compliance.facts import Version
from exchange_compliance.names import rdn_value


@pytest.mark.parametrize(
    ("serial", "expected"),
    [
        ("Version 15.1 (Build 32507.6)", Version(15, 1, 2507, 6)),
        ("Version 15.2 (Build 31544.4)", Version(15, 2, 1544, 4)),
        ("Version 15.0 (Build 31497.2)", Version(15, 0, 1497, 2)),
        ("version 15.1 (build 31034.26)", Version(15, 1, 1034, 26)),
        ("Version 8.3 (Build 10083.6)", Version(8, 3, 83, 6)),
        ("Version 6.5 (Build 7638.2)", Version(6, 5, 7638, 2)),
        ("Version 15.2 (Build 31544)", Version(15, 2, 1544, None)),
        ("garbage", None),
    ],
)
def test_serial_number(serial, expected):
    assert values.version_from_serial_number(serial) == expected


def test_version_number_example_from_exchange():
    assert values.version_from_version_number(1942063563) == Version(15, 1, 2507)


def test_version_names_product():
    assert Version(15, 1, 1034, 26).product == "Exchange 2016"
    assert str(Version(15, 1, 1034, 26)) == "15.1.1034.26"


def test_fqdn_from_network_address():
    addresses = ["ncacn_vns_spp:EX01", "netbios:EX01", "ncacn_ip_tcp:ex01.contoso.com", "ncalrpc:EX01"]
    assert values.fqdn_from_network_address(addresses) == "ex01.contoso.com"
    assert values.fqdn_from_network_address(["netbios:EX01"]) is None


def test_auth_thumbprint_slots():
    raw = ["2:aa bb cc", "0:A7F9CAA2C9016DB2A80F1E2972E2ED0E2FAE089D", "1:1111"]
    assert values.auth_thumbprints(raw) == ("A7F9CAA2C9016DB2A80F1E2972E2ED0E2FAE089D", "1111", "AABBCC")


def test_auth_thumbprint_without_index_is_current():
    assert values.auth_thumbprints(["a7f9caa2"]) == ("A7F9CAA2", None, None)
    assert values.auth_thumbprints([]) == (None, None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20261122103000.0Z", datetime(2026, 11, 22, 10, 30, tzinfo=UTC)),
        ("20261122103000Z", datetime(2026, 11, 22, 10, 30, tzinfo=UTC)),
        ("20261122103000.0+0100", datetime(2026, 11, 22, 9, 30, tzinfo=UTC)),
        ("not a time", None),
    ],
)
def test_generalized_time(text, expected):
    assert values.parse_generalized_time(text) == expected


def test_well_known_groups_found_by_guid_not_name():
    raw = [
        "B:32:A7D2016C83F003458132789EEB127B84:CN=Exchange-Server,OU=Gruppen,DC=contoso,DC=de",
        "B:32:ea876a58db6dd04c9006939818f800eb:CN=ETS,OU=Microsoft Exchange Security Groups,DC=contoso,DC=com",
        "B:32:00000000000000000000000000000000:CN=Other,DC=contoso,DC=com",
    ]
    assert values.well_known_groups(raw) == {
        "exchange_servers": "CN=Exchange-Server,OU=Gruppen,DC=contoso,DC=de",
        "exchange_trusted_subsystem": "CN=ETS,OU=Microsoft Exchange Security Groups,DC=contoso,DC=com",
    }


def test_sid_round_trip():
    sid = "S-1-5-21-1004336348-1177238915-682003330-512"
    assert values.sid_from_bytes(values.sid_to_bytes(sid)) == sid
    with pytest.raises(ValueError):
        values.sid_from_bytes(b"\x01\x05abc")


def test_rdn_value_keeps_escaped_commas():
    assert rdn_value("CN=Smith\\, John,OU=People,DC=x") == "Smith, John"
    assert rdn_value("CN=EX01,CN=Servers,DC=x") == "EX01"
