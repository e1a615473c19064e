"""A wrong org config stops the run with one short message naming the file and the key."""

from pathlib import Path

import pytest

from exchange_compliance.config import ConfigError, load_org_config, resolve_org_path

MINIMAL = """
[directory]
servers = ["dc01.contoso.com"]
user_env = "T_LDAP_USER"
password_env = "T_LDAP_PASSWORD"

[winrm]
user_env = "T_WINRM_USER"
password_env = "T_WINRM_PASSWORD"
"""


def write(tmp_path: Path, text: str, name: str = "prod.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_org_config(path)
    return str(caught.value)


def test_minimal_config_gets_documented_defaults(tmp_path):
    config = load_org_config(write(tmp_path, MINIMAL))
    assert config.name == "prod"
    assert config.directory.port == 636 and config.directory.tls == "ldaps"
    assert config.winrm.port == 5986 and config.winrm.transport == "ntlm"
    assert config.backend_port == 444
    assert config.auth_certificate_warning_days == 60
    assert config.hybrid is False


def test_shipped_example_config_is_valid():
    config = load_org_config(Path(__file__).parents[1] / "orgs" / "example-prod.toml")
    assert config.hybrid is True and config.directory.servers == ("dc01.contoso.com", "dc02.contoso.com")


def test_unknown_key_is_named_with_its_section(tmp_path):
    message = error_of(write(tmp_path, MINIMAL + "\n[backend]\nprot = 444\n"))
    assert message == f"{tmp_path / 'prod.toml'}: [backend] prot: unknown key"


def test_unknown_section_is_named(tmp_path):
    assert "[] thresholdz: unknown key" in error_of(write(tmp_path, MINIMAL + "\n[thresholdz]\nx = 1\n"))


def test_wrong_type_names_key_and_value(tmp_path):
    message = error_of(write(tmp_path, MINIMAL + '\n[backend]\nport = "444"\n'))
    assert "[backend] port: expected int, got '444'" in message and "prod.toml" in message


def test_boolean_is_not_a_port(tmp_path):
    assert "[backend] port: expected int, got True" in error_of(write(tmp_path, MINIMAL + "\n[backend]\nport = true\n"))


def test_out_of_range(tmp_path):
    assert "[backend] port: 70000 is out of range" in error_of(write(tmp_path, MINIMAL + "\n[backend]\nport = 70000\n"))


def test_missing_required_key(tmp_path):
    text = MINIMAL.replace('password_env = "T_LDAP_PASSWORD"\n', "")
    assert "[directory] password_env: required key is missing" in error_of(write(tmp_path, text))


def test_secret_in_place_of_a_variable_name_is_refused(tmp_path):
    text = MINIMAL.replace('"T_LDAP_PASSWORD"', '"Sup3r secret!"')
    message = error_of(write(tmp_path, text))
    assert "[directory] password_env: must name an environment variable" in message
    assert "Sup3r" not in message


def test_missing_environment_variable_is_named_when_secrets_are_needed(tmp_path, monkeypatch):
    monkeypatch.delenv("T_LDAP_USER", raising=False)
    config = load_org_config(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match=r"\[directory\] user_env: environment variable T_LDAP_USER is not set"):
        config.directory_credentials()


def test_credentials_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("T_LDAP_USER", "audit@contoso.com")
    monkeypatch.setenv("T_LDAP_PASSWORD", "pw")
    credentials = load_org_config(write(tmp_path, MINIMAL)).directory_credentials()
    assert credentials.user == "audit@contoso.com" and credentials.password == "pw"
    assert "pw" not in repr(credentials)


def test_unreadable_ca_file_is_named(tmp_path):
    text = MINIMAL.replace("[winrm]", '[winrm]\nca_file = "missing-ca.pem"')
    message = error_of(write(tmp_path, text))
    assert "[winrm] ca_file: cannot read" in message and "missing-ca.pem" in message


def test_ca_file_relative_to_the_config(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    config = load_org_config(write(tmp_path, MINIMAL.replace("[winrm]", '[winrm]\nca_file = "ca.pem"')))
    assert config.winrm.ca_file == (tmp_path / "ca.pem").resolve()


def test_bad_choice(tmp_path):
    text = MINIMAL.replace("[winrm]", '[winrm]\ntransport = "negotiate"')
    assert "[winrm] transport: 'negotiate' is not one of" in error_of(write(tmp_path, text))


def test_read_timeout_must_exceed_operation_timeout(tmp_path):
    text = MINIMAL.replace("[winrm]", "[winrm]\nread_timeout_seconds = 20\noperation_timeout_seconds = 20")
    assert "read_timeout_seconds: must exceed" in error_of(write(tmp_path, text))


def test_invalid_toml(tmp_path):
    assert "not valid TOML" in error_of(write(tmp_path, "[directory\n"))


def test_missing_file(tmp_path):
    assert "no such org config" in error_of(tmp_path / "nope.toml")


def test_address_overrides_inline_and_hosts_file(tmp_path):
    (tmp_path / "org.hosts").write_text("# comment\n10.0.0.11 ex01.contoso.com ex01\n10.0.0.12 EX02.contoso.com\n")
    text = MINIMAL + '\n[network]\nhosts_file = "org.hosts"\naddresses = { "ex02.contoso.com" = "10.9.9.9" }\n'
    config = load_org_config(write(tmp_path, text))
    assert config.address_of("EX01.contoso.com") == "10.0.0.11"
    assert config.address_of("ex02.contoso.com") == "10.9.9.9"
    assert config.address_of("ex03.contoso.com") == "ex03.contoso.com"


def test_bad_hosts_line(tmp_path):
    (tmp_path / "org.hosts").write_text("10.0.0.11\n")
    message = error_of(write(tmp_path, MINIMAL + '\n[network]\nhosts_file = "org.hosts"\n'))
    assert "org.hosts line 1: an address with no host name" in message


def test_org_option_resolves_names_and_paths(tmp_path):
    assert resolve_org_path("prod", tmp_path) == tmp_path / "prod.toml"
    assert resolve_org_path("elsewhere/prod.toml", tmp_path) == Path("elsewhere/prod.toml")
