"""No setting sends a password in clear, and every number in the org config is finite and bounded.

Basic authentication is refused unless it runs inside validated TLS; NTLM, Kerberos and CredSSP over http are
allowed because pywinrm encrypts their messages there, which the suite asks it to do always. A certificate check
turned off is said at the start of the run, in the report's header and in latest.json. inf, nan, 1e300, zero,
negative numbers and booleans in a numeric key are one line naming the key (exit 4), not an OverflowError later.
"""

from __future__ import annotations

import json
import re
import tomllib
from html import escape
from pathlib import Path

import pytest
from test_config import MINIMAL
from winrm.transport import Transport

from conftest import CREDENTIALS, live_org
from exchange_compliance.collect import winrm
from exchange_compliance.config import ConfigError, Credentials, load_org_config

EXAMPLE = Path(__file__).resolve().parents[1] / "orgs" / "example-prod.toml"


def config_with(tmp_path: Path, winrm_settings: str) -> Path:
    path = tmp_path / "prod.toml"
    path.write_text(MINIMAL.replace("[winrm]\n", f"[winrm]\n{winrm_settings}\n"))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_org_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- WinRM: no password in clear ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ('scheme = "http"\ntransport = "basic"', 'scheme: "http" with transport = "basic" would send the password'),
        ('scheme = "http"\ntransport = "basic"\nvalidate_certificate = true', "scheme: "),
        ('transport = "basic"\nvalidate_certificate = false', 'validate_certificate: false with transport = "basic"'),
        ('scheme = "https"\ntransport = "basic"\nvalidate_certificate = false', "validate_certificate: "),
    ],
)
def test_basic_authentication_outside_validated_tls_is_refused(tmp_path, settings, key):
    path = config_with(tmp_path, settings)
    assert error_of(path).startswith(f"{path}: [winrm] {key}")


def test_basic_authentication_inside_validated_tls_is_accepted(tmp_path):
    config = load_org_config(config_with(tmp_path, 'scheme = "https"\ntransport = "basic"'))
    assert config.winrm.transport == "basic" and config.winrm.validate_certificate


@pytest.mark.parametrize("transport", ["ntlm", "kerberos", "credssp"])
def test_the_other_transports_are_accepted_over_http(tmp_path, transport):
    config = load_org_config(config_with(tmp_path, f'scheme = "http"\ntransport = "{transport}"'))
    assert config.winrm.scheme == "http" and config.winrm.port == 5985


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("transport", ["ntlm", "kerberos", "credssp", "basic"])
def test_pywinrm_is_asked_to_encrypt_every_message_over_http_and_never_told_not_to(
    tmp_path, monkeypatch, scheme, transport
):
    if transport == "basic" and scheme == "http":
        return  # refused with the config (above)
    config = load_org_config(config_with(tmp_path, f'scheme = "{scheme}"\ntransport = "{transport}"'))
    protocol = winrm.open_protocol("ex01.contoso.com", config, Credentials("u", "pw"))
    assert protocol.transport.message_encryption == ("always" if scheme == "http" else "auto")


# No CA file in this config: pywinrm's notice about the environment's CA bundle says nothing here.
@pytest.mark.filterwarnings("ignore:'pywinrm' will use an environment variable defined CA Trust")
def test_ntlm_over_http_goes_through_pywinrms_message_encryption(tmp_path, monkeypatch):
    # pywinrm (winrm/transport.py build_session) sets up its Encryption for an auth whose session key can seal
    # messages; with "always" it raises instead of sending in clear when it cannot. Shown here without a server:
    # the encryption set-up is the step that would send the first (empty, authenticating) message.
    encrypted: list[str] = []
    monkeypatch.setattr(Transport, "setup_encryption", lambda self, session: encrypted.append(self.auth_method))
    config = load_org_config(config_with(tmp_path, 'scheme = "http"\ntransport = "ntlm"'))
    winrm.open_protocol("ex01.contoso.com", config, Credentials("u", "pw")).transport.build_session()
    assert encrypted == ["ntlm"]


def test_basic_over_http_stops_the_run_with_one_line(suite, tmp_path):
    path = live_org(tmp_path)
    path.write_text(path.read_text().replace("[winrm]\n", '[winrm]\nscheme = "http"\ntransport = "basic"\n'))
    run = suite(None, "--org", str(path), env=CREDENTIALS)
    output = run.stdout + run.stderr
    assert run.ret == 4, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR: ")]
    assert errors == [
        f'ERROR: {path}: [winrm] scheme: "http" with transport = "basic" would send the password in clear (base64): '
        'use scheme = "https" with validate_certificate = true, or transport = "ntlm" or "kerberos"'
    ]
    assert list((run.reports.parent / "prod").iterdir()) == []  # checked writable before the config is read


def test_a_certificate_check_turned_off_is_said_in_the_output_the_report_and_latest_json(suite, tmp_path):
    path = live_org(tmp_path)
    path.write_text(path.read_text().replace("[winrm]\n", "[winrm]\nvalidate_certificate = false\n"))
    run = suite(None, "--org", str(path), env=CREDENTIALS)
    assert run.ret == 6, run.stdout + run.stderr  # the lab-less DC refuses: the warning comes before that
    warning = (
        f"{path}: [winrm] validate_certificate = false: the servers' WinRM certificates are not checked, so whoever "
        "answers in a server's name gets the WinRM logon and the probe"
    )
    lines = run.stdout.splitlines()
    assert lines.count(f"exchange-compliance: warning: {warning}") == 1
    assert lines.index(f"exchange-compliance: warning: {warning}") < next(
        number for number, line in enumerate(lines) if "the org could not be checked" in line
    )
    reports = run.reports.parent / "prod"
    assert json.loads((reports / "latest.json").read_text())["insecure_settings"] == [warning]
    assert f"<tr><td>Warning</td><td>{escape(warning)}</td></tr>" in (reports / "latest.html").read_text()


def test_a_validated_certificate_leaves_no_warning(suite, tmp_path):
    run = suite(None, "--org", str(live_org(tmp_path)), env=CREDENTIALS)
    assert run.ret == 6 and "warning:" not in run.stdout
    assert json.loads((run.reports.parent / "prod" / "latest.json").read_text())["insecure_settings"] == []


# --- numbers -----------------------------------------------------------------------------------------------------


# The example's [notify] is commented out: a table as an admin would fill it in, so its numbers are tried too.
NOTIFY = '\n[notify]\nsmtp_host = "smtp.contoso.com"\nfrom = "a@contoso.com"\nto = ["b@contoso.com"]\n'


def example() -> str:
    return EXAMPLE.read_text() + NOTIFY


def numeric_keys() -> list[tuple[str, str]]:
    """Every numeric key of the example config, set or commented out (the ports are; [notify] is)."""
    found = [
        (section, key)
        for section, table in tomllib.loads(example()).items()
        for key, value in table.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    extra = {("directory", "port"), ("winrm", "port"), ("notify", "smtp_port"), ("notify", "timeout_seconds")}
    return sorted({*found, *extra})


def example_with(section: str, key: str, value: str) -> str:
    """The example config with `key = value` in [section], replacing the key's line, set or commented out."""
    text = example()
    start = re.search(rf"^\[{section}\]\n", text, re.MULTILINE).start()  # type: ignore[union-attr]
    end = text.find("\n[", start + 1)
    end = len(text) if end == -1 else end
    body = text[start:end]
    line = re.compile(rf"^#?\s*{key}\s*=.*$", re.MULTILINE)
    if line.search(body):
        body = line.sub(f"{key} = {value}", body, count=1)
    else:
        body = body.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n")
    return text[:start] + body + text[end:]


def test_every_numeric_key_of_the_example_is_covered():
    assert numeric_keys() == [
        ("backend", "timeout_seconds"),
        ("collection", "max_workers"),
        ("collection", "server_timeout_seconds"),
        ("directory", "port"),
        ("directory", "timeout_seconds"),
        ("notify", "smtp_port"),
        ("notify", "timeout_seconds"),
        ("reports", "keep"),
        ("thresholds", "auth_certificate_warning_days"),
        ("winrm", "operation_timeout_seconds"),
        ("winrm", "port"),
        ("winrm", "read_timeout_seconds"),
    ]


@pytest.mark.parametrize(
    "value",
    ["inf", "-inf", "nan", "+nan", "0", "-5", "-0.5", "1e300", "true", "1e20", "10_000_000_000_000_000_000_000"],
)
@pytest.mark.parametrize(("section", "key"), numeric_keys())
def test_every_number_is_finite_and_bounded_or_one_line_naming_the_key(tmp_path, section, key, value):
    path = tmp_path / "prod.toml"
    path.write_text(example_with(section, key, value))
    if (section, key, value) == ("thresholds", "auth_certificate_warning_days", "0"):
        assert load_org_config(path).auth_certificate_warning_days == 0  # no warning ahead of expiry: allowed
        return
    message = error_of(path)
    assert message.startswith(f"{path}: [{section}] {key}: "), message
    assert len(message) < 250


def test_the_bounds_are_the_documented_ones(tmp_path):
    for section, key in (
        ("directory", "timeout_seconds"),
        ("backend", "timeout_seconds"),
        ("collection", "server_timeout_seconds"),
        ("notify", "timeout_seconds"),
    ):
        path = tmp_path / "prod.toml"
        path.write_text(example_with(section, key, "3600"))
        load_org_config(path)
        path.write_text(example_with(section, key, "3600.5"))
        assert error_of(path) == f"{path}: [{section}] {key}: must be positive and at most 3600, got 3600.5"


def test_an_integer_too_long_to_read_is_one_line(tmp_path):
    path = tmp_path / "prod.toml"
    path.write_text(example_with("reports", "keep", "1" * 5000))
    assert error_of(path) == f"{path}: not valid TOML: an integer too long to read"


def test_an_infinite_timeout_stops_the_run_with_one_line(suite, tmp_path):
    path = live_org(tmp_path, "\n[collection]\nserver_timeout_seconds = inf\n")
    run = suite(None, "--org", str(path), env=CREDENTIALS)
    output = run.stdout + run.stderr
    assert run.ret == 4, output
    assert "Traceback" not in output and "INTERNALERROR" not in output and "OverflowError" not in output
    errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR: ")]
    assert errors == [f"ERROR: {path}: [collection] server_timeout_seconds: must be positive and at most 3600, got inf"]
