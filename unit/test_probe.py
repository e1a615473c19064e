"""The server probe: its command stays under cmd.exe's limit, and its output parses or fails clearly."""

import base64
import json

import pytest

from exchange_compliance.collect.probe import (
    CMD_LINE_LIMIT,
    ProbeError,
    command_line_length,
    parse_netsh_sslcert,
    parse_probe_output,
    probe_command,
    probe_script,
)
from exchange_compliance.names import normalize_thumbprint

NETSH_444 = """
SSL Certificate bindings:
-------------------------

    IP:port                      : 0.0.0.0:444
    Certificate Hash             : 6a5b2d52f8e0b5b07d4f3c8e9a1b2c3d4e5f6a7b
    Application ID               : {4dc3e181-e14b-4a21-b022-59fc669b0914}
    Certificate Store Name       : My
    Verify Client Certificate Revocation : Enabled
    Verify Revocation Using Cached Client Certificate Only : Disabled
    Usage Check                  : Enabled
    Revocation Freshness Time    : 0
    URL Retrieval Timeout        : 0
    Ctl Identifier               : (null)
    Ctl Store Name               : (null)
    DS Mapper Usage              : Disabled
    Negotiate Client Certificate : Disabled
    Reject Connections           : Disabled
    Disable HTTP2                : Not Set

"""

NETSH_MISSING = "\nThe system cannot find the file specified.\n\n"


def test_encoded_probe_fits_the_cmd_exe_command_line():
    command, arguments = probe_command()
    assert arguments[:3] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    length = command_line_length(command, arguments)
    # pywinrm sends the line through cmd.exe, which refuses lines over 8191 characters.
    assert length < CMD_LINE_LIMIT, f"the probe's command line is {length} characters"


def test_encoded_probe_decodes_back_to_the_script():
    _, arguments = probe_command()
    assert base64.b64decode(arguments[-1]).decode("utf-16-le") == probe_script()


def test_probe_script_only_reads():
    script = probe_script().lower()
    for verb in ("set-", "new-", "remove-", "add-", "import-pfx", "restart-", "stop-", "netsh http add", "update"):
        assert verb not in script.replace("import-module", ""), verb


def test_netsh_binding_parsed():
    (binding,) = parse_netsh_sslcert(NETSH_444)
    assert binding.ip_port == "0.0.0.0:444"
    assert binding.certificate_hash == "6A5B2D52F8E0B5B07D4F3C8E9A1B2C3D4E5F6A7B"
    assert binding.application_id == "{4dc3e181-e14b-4a21-b022-59fc669b0914}"
    assert binding.store_name == "My"


def test_netsh_without_binding_has_none():
    assert parse_netsh_sslcert(NETSH_MISSING) == []


def test_thumbprints_normalized():
    assert normalize_thumbprint("a7 f9 ca\u200e") == "A7F9CA"
    assert normalize_thumbprint("  ") is None


def document(**overrides):
    doc = {
        "probe": 1,
        "computer": "EX01",
        "boot": "2026-11-20T03:04:05.1234567Z",
        "certificates": {
            "thumbprint": "ab12",
            "subject": "CN=EX01",
            "issuer": "CN=EX01",
            "dns": "EX01",
            "notBefore": "2025-01-01T00:00:00.0000000Z",
            "notAfter": "2030-01-01T00:00:00.0000000Z",
            "privateKey": True,
            "friendlyName": "Microsoft Exchange",
            "raw": base64.b64encode(b"\x30\x00").decode(),
        },
        "bindings": [
            {"site": "Exchange Back End", "protocol": "https", "info": "*:444:", "hash": "AB12", "store": "My"},
            {"site": "Default Web Site", "protocol": "http", "info": "*:80:", "hash": None, "store": None},
        ],
        "netsh": {"0.0.0.0:444": NETSH_444, "0.0.0.0:443": NETSH_MISSING},
    }
    doc.update(overrides)
    return json.dumps(doc)


def test_probe_document_parsed_with_powershell_single_element_flattening():
    probe = parse_probe_output(("\ufeff" + document()).encode())
    assert probe.computer_name == "EX01"
    (certificate,) = probe.certificates
    assert certificate.thumbprint == "AB12" and certificate.dns_names == ("EX01",)
    assert certificate.not_after.year == 2030 and certificate.der == b"\x30\x00"
    assert [b.port for b in probe.bindings] == [444, 80]
    assert probe.bindings[1].certificate_hash is None
    assert [b.ip_port for b in probe.ssl_bindings] == ["0.0.0.0:444"]
    assert probe.last_boot.tzinfo is not None


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("", "printed nothing"),
        ("Get-ChildItem : Access is denied", "something other than its JSON document"),
        ('{"hello": 1}', "not its document"),
        ('{"probe": 1, "error": "Cannot find drive Cert"}', "the probe failed on the server: Cannot find drive Cert"),
        ('{"probe": 1, "computer": "EX01"}', "missing or mangles"),
    ],
)
def test_bad_probe_output_is_a_clear_error(output, message):
    with pytest.raises(ProbeError, match=message):
        parse_probe_output(output)


def test_bad_certificate_names_its_index():
    broken = json.loads(document())
    broken["certificates"]["raw"] = "***"
    with pytest.raises(ProbeError, match=r"certificates\[0\] is malformed"):
        parse_probe_output(json.dumps(broken))


def test_bad_date_is_named():
    broken = json.loads(document())
    broken["certificates"]["notAfter"] = "someday"
    with pytest.raises(ProbeError, match=r"certificates\[0\].notAfter is not a date"):
        parse_probe_output(json.dumps(broken))
