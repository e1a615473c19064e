"""The server probe: its command stays under cmd.exe's limit, and its output parses or fails clearly."""

import base64
import json
import re
from dataclasses import replace
from importlib import resources

import pytest
from factories import exchange_self_signed, probe, store_cert, thumb

from exchange_compliance.collect.probe import (
    CMD_LINE_LIMIT,
    ProbeError,
    command_line_length,
    parse_probe_output,
    probe_command,
    probe_script,
)
from exchange_compliance.collect.probe_fields import PROBE, described_keys
from exchange_compliance.names import normalize_thumbprint

# IIS's application ID {4dc3e181-e14b-4a21-b022-59fc669b0914} as the AppId REG_BINARY holds it: the GUID
# structure's bytes, Data1..Data3 little-endian.
IIS_APPID_BYTES = "81E1C34D4BE1214AB02259FC669B0914"


def test_encoded_probe_fits_the_cmd_exe_command_line():
    command, arguments = probe_command()
    assert arguments[:3] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    length = command_line_length(command, arguments)
    # pywinrm sends the line through cmd.exe, which refuses lines over 8191 characters. Keep room for more
    # fields: 1,500 characters of line are about 560 characters of script.
    assert length < CMD_LINE_LIMIT - 1500, f"the probe's command line is {length} characters"


def test_comments_and_indentation_are_not_sent():
    source = resources.files("exchange_compliance.collect").joinpath("probe.ps1").read_text(encoding="utf-8")
    sent = probe_script()
    assert "\n# " in source and "\n  " in source
    assert not any(line.startswith(("#", " ")) for line in sent.splitlines())
    assert [line.strip() for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")] == (
        sent.splitlines()
    )


def test_encoded_probe_decodes_back_to_the_script():
    _, arguments = probe_command()
    assert base64.b64decode(arguments[-1]).decode("utf-16-le") == probe_script()


def test_probe_script_only_reads():
    script = probe_script().lower()
    for verb in ("set-", "new-", "remove-", "add-", "import-pfx", "restart-", "stop-", "netsh http add", "update"):
        assert verb not in script.replace("import-module", ""), verb


def test_probe_reads_no_display_text():
    # netsh's labels (and any cmdlet's formatted output) are translated on a German or French server.
    script = probe_script().lower()
    assert "netsh" not in script and "out-string" not in script and "format-" not in script
    assert r"sslbindinginfo" in script and "sslsnibindinginfo" in script and "sslccsbindinginfo" in script


def test_every_key_the_script_writes_is_described_and_every_described_key_written():
    written = set(re.findall(r"(?:\$o\.|(?<![$\w.]))(\w+) = ", probe_script()))
    assert written - {"probe", "error"} == described_keys()


def test_the_description_reads_back_what_it_writes():
    self_signed = exchange_self_signed()
    # The probe reads thumbprints upper-case (the factory's is deliberately lower-case).
    entry = replace(store_cert(self_signed, friendly_name="Microsoft Exchange"), thumbprint=thumb(self_signed))
    facts = probe(entry, backend=thumb(self_signed), frontend=thumb(self_signed))
    assert facts.ssl_bindings and facts.bindings
    document = json.loads(json.dumps({"probe": 1, **PROBE.write(facts)}))
    assert parse_probe_output(json.dumps(document)) == facts


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
        # One element: ConvertTo-Json may print it without the array.
        "http": {
            "table": "SslBindingInfo",
            "key": "0.0.0.0:444",
            "hash": "6A5B2D52F8E0B5B07D4F3C8E9A1B2C3D4E5F6A7B",
            "appId": IIS_APPID_BYTES,
            "store": "My",
        },
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
    (binding,) = probe.ssl_bindings
    assert (binding.kind, binding.ip_port, binding.store_name) == ("ipport", "0.0.0.0:444", "My")
    assert binding.certificate_hash == "6A5B2D52F8E0B5B07D4F3C8E9A1B2C3D4E5F6A7B"
    assert binding.application_id == "{4dc3e181-e14b-4a21-b022-59fc669b0914}"
    assert probe.last_boot.tzinfo is not None


def test_sni_and_central_store_bindings_keep_their_kind():
    http = [
        {"table": "SslSniBindingInfo", "key": "mail.contoso.com:443", "hash": "ab12", "appId": IIS_APPID_BYTES},
        {"table": "SslCcsBindingInfo", "key": "443", "hash": None, "appId": IIS_APPID_BYTES, "store": None},
    ]
    probe = parse_probe_output(document(http=http))
    assert [(b.kind, b.ip_port, b.certificate_hash, b.store_name) for b in probe.ssl_bindings] == [
        ("hostnameport", "mail.contoso.com:443", "AB12", None),
        ("ccs", "443", None, None),
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"table": "SslFooBindingInfo", "key": "0.0.0.0:444"}, r"http\[0\]\.table is none of SslBindingInfo"),
        ({"table": "SslBindingInfo"}, r"missing or mangles http\[0\]\.key"),
        ({"table": "SslBindingInfo", "key": "0.0.0.0:444", "appId": "zz"}, r"http\[0\]\.appId is not a GUID"),
    ],
)
def test_bad_http_sys_binding_is_named(entry, message):
    with pytest.raises(ProbeError, match=message):
        parse_probe_output(document(http=[entry]))


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
    with pytest.raises(ProbeError, match=r"certificates\[0\]\.raw is not base64"):
        parse_probe_output(json.dumps(broken))


def test_bad_date_is_named():
    broken = json.loads(document())
    broken["certificates"]["notAfter"] = "someday"
    with pytest.raises(ProbeError, match=r"certificates\[0\].notAfter is not a date"):
        parse_probe_output(json.dumps(broken))
