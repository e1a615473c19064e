"""A wrong org config stops the run with one short message naming the file and the key."""

from dataclasses import fields
from pathlib import Path

import pytest

from conftest import CREDENTIALS
from exchange_compliance.collect import collect_org, winrm
from exchange_compliance.config import ConfigError, load_org_config, resolve_org_path
from exchange_compliance.facts import JudgingSettings

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
    assert config.tls_timeout_seconds == 10
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
    message = error_of(write(tmp_path, MINIMAL.replace("[winrm]", '[winrm]\nport = "5986"')))
    assert "[winrm] port: expected int, got '5986'" in message and "prod.toml" in message


def test_boolean_is_not_a_port(tmp_path):
    assert "[winrm] port: expected int, got True" in error_of(
        write(tmp_path, MINIMAL.replace("[winrm]", "[winrm]\nport = true"))
    )


def test_out_of_range(tmp_path):
    assert "[winrm] port: 70000 is out of range" in error_of(
        write(tmp_path, MINIMAL.replace("[winrm]", "[winrm]\nport = 70000"))
    )


@pytest.mark.parametrize(
    ("section", "key", "why"),
    [
        ("backend", "port = 444", "the Exchange Back End site always listens on 444"),
        ("directory", 'bind = "simple"', '[directory] auth says how: "simple" (the default) or "kerberos"'),
    ],
)
def test_keys_of_earlier_versions_say_what_to_do(tmp_path, section, key, why):
    # Both were in the shipped example: a config copied from it is told to drop the key, not "unknown key".
    text = (
        MINIMAL.replace("[directory]", f"[directory]\n{key}")
        if section == "directory"
        else MINIMAL + f"\n[{section}]\n{key}\n"
    )
    name = key.split(" ")[0]
    assert (
        error_of(write(tmp_path, text))
        == f"{tmp_path / 'prod.toml'}: [{section}] {name}: no longer a setting ({why}): remove it"
    )


def test_backend_port_is_not_a_judging_setting(tmp_path):
    # The judges and probe.ps1 read 444: a port recorded with the facts would claim a choice there is not.
    assert load_org_config(write(tmp_path, MINIMAL)).judging_settings() == JudgingSettings(
        hybrid=False, auth_certificate_warning_days=60
    )
    assert [field.name for field in fields(JudgingSettings)] == ["hybrid", "auth_certificate_warning_days"]


def test_missing_required_key(tmp_path):
    text = MINIMAL.replace('password_env = "T_LDAP_PASSWORD"\n', "")
    assert "[directory] password_env: required key is missing" in error_of(write(tmp_path, text))


@pytest.mark.parametrize("secret", ["Sup3r secret!", "9Lives", "Pässwörd", "hunter-2", "p@ss", ""])
def test_secret_in_place_of_a_variable_name_is_refused_and_never_shown(tmp_path, secret):
    message = error_of(write(tmp_path, MINIMAL.replace('"T_LDAP_PASSWORD"', f'"{secret}"')))
    assert message == (
        f"{tmp_path / 'prod.toml'}: [directory] password_env: must name an environment variable "
        "(the secret itself never goes in the file)"
    )


@pytest.mark.parametrize("name", ["EXCOMP_LDAP_PASSWORD", "_x", "a1"])
def test_variable_names_are_accepted(tmp_path, name):
    assert (
        load_org_config(write(tmp_path, MINIMAL.replace('"T_LDAP_PASSWORD"', f'"{name}"'))).directory.password_env
        == name
    )


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


UMLAUT = "\u00fc".encode("cp1252")  # what a Windows editor saves for ü: not UTF-8


def test_config_not_in_utf8_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "prod.toml"
    data = MINIMAL.replace("[winrm]", '[org]\ndisplay_name = "Z\u00fcrich"\n\n[winrm]').encode("cp1252")
    path.write_bytes(data)
    assert error_of(path) == f"{path}: not UTF-8 text (byte {data.index(UMLAUT)}): save it as UTF-8"


def test_hosts_file_not_in_utf8_is_named(tmp_path):
    hosts = tmp_path / "org.hosts"
    hosts.write_bytes(data := "10.0.0.11 ex01.contoso.com # Z\u00fcrich\n".encode("cp1252"))
    message = error_of(write(tmp_path, MINIMAL + '\n[network]\nhosts_file = "org.hosts"\n'))
    where = f"{tmp_path / 'prod.toml'}: [network] hosts_file: {hosts}"
    assert message == f"{where}: not UTF-8 text (byte {data.index(UMLAUT)}): save it as UTF-8"


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


# --- Kerberos for WinRM: the ticket is the credential -------------------------------------------------------------


def kerberos_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "kerberos.toml"
    path.write_text(
        '[directory]\nservers = ["127.0.0.1"]\nport = 1\nuser_env = "T_LDAP_USER"\npassword_env = "T_LDAP_PASSWORD"\n'
        '\n[winrm]\ntransport = "kerberos"\n' + extra
    )
    return path


def test_kerberos_gives_pywinrm_no_user_or_password_and_the_host_name_for_the_spn(tmp_path, monkeypatch):
    monkeypatch.setenv("T_WINRM_PASSWORD", "never-sent")
    extra = 'user_env = "T_WINRM_USER"\npassword_env = "T_WINRM_PASSWORD"\n\n[network]\n'
    config = load_org_config(kerberos_config(tmp_path, extra + 'addresses = { "ex01.contoso.com" = "10.0.0.11" }\n'))
    seen: dict = {}

    class Protocol:
        def __init__(self, **kwargs: object) -> None:
            seen.update(kwargs)
            self.transport = type("T", (), {"build_session": lambda _self: type("S", (), {"mount": print})()})()

    monkeypatch.setattr(winrm, "Protocol", Protocol)
    winrm.open_protocol("ex01.contoso.com", config, config.winrm_credentials())
    assert seen["endpoint"] == "https://10.0.0.11:5986/wsman"
    assert seen["username"] is None and seen["password"] is None
    assert seen["kerberos_hostname_override"] == "ex01.contoso.com"


def test_kerberos_without_its_package_is_a_config_error_before_any_server(tmp_path, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(winrm, "HAVE_KERBEROS", False)
    with pytest.raises(ConfigError, match=r"\[winrm\] transport: kerberos needs .*pip install 'pywinrm\[kerberos\]'"):
        collect_org(load_org_config(kerberos_config(tmp_path)))  # not DirectoryUnreachable: checked first


def test_kerberos_needs_no_winrm_user_or_password(tmp_path, monkeypatch):
    monkeypatch.delenv("T_WINRM_USER", raising=False)
    monkeypatch.delenv("T_WINRM_PASSWORD", raising=False)
    config = load_org_config(kerberos_config(tmp_path))
    assert config.winrm.user_env is None and config.winrm.password_env is None
    assert config.winrm_credentials() is None


def test_kerberos_still_refuses_a_secret_in_place_of_a_variable_name(tmp_path):
    message = error_of(kerberos_config(tmp_path, 'password_env = "Sup3r secret!"\n'))
    assert "[winrm] password_env: must name an environment variable" in message and "Sup3r" not in message


def test_other_transports_need_the_winrm_user(tmp_path):
    path = kerberos_config(tmp_path, 'password_env = "T_WINRM_PASSWORD"\n')
    path.write_text(path.read_text().replace('"kerberos"', '"ntlm"'))
    assert "[winrm] user_env: required key is missing" in error_of(path)


# --- the global catalog --------------------------------------------------------------------------------------


def test_global_catalog_defaults_to_the_servers_on_the_gc_port(tmp_path):
    directory = load_org_config(write(tmp_path, MINIMAL)).directory
    assert directory.global_catalog_hosts == ("dc01.contoso.com",) and directory.global_catalog_port == 3269
    starttls = MINIMAL.replace("[directory]", '[directory]\ntls = "starttls"')
    assert load_org_config(write(tmp_path, starttls)).directory.global_catalog_port == 3268


def test_global_catalog_hosts_and_port_are_taken_as_given(tmp_path):
    text = MINIMAL.replace("[directory]", '[directory]\nglobal_catalog = ["gc01.contoso.com", "GC02.contoso.com"]')
    text = text.replace("[directory]", "[directory]\nglobal_catalog_port = 3270")
    directory = load_org_config(write(tmp_path, text)).directory
    assert directory.global_catalog_hosts == ("gc01.contoso.com", "GC02.contoso.com")
    assert directory.global_catalog_port == 3270 and directory.servers == ("dc01.contoso.com",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "name at least one host, or leave the key out"),
        ('"gc01.contoso.com"', "expected a list of strings"),
        ('["gc01.contoso.com:3269"]', "'gc01.contoso.com:3269': a host name only; the port is global_catalog_port"),
        ('["ldaps://gc01"]', "a host name only"),
        ('["gc01 gc02"]', "'gc01 gc02' is not a host name"),
        ('["gc01", "GC01"]', "'GC01' is listed twice"),
        ("[1]", "expected a list of strings"),
    ],
)
def test_a_wrong_global_catalog_is_one_line_naming_the_value(tmp_path, value, message):
    text = MINIMAL.replace("[directory]", f"[directory]\nglobal_catalog = {value}")
    error = error_of(write(tmp_path, text))
    assert error.startswith(f"{tmp_path / 'prod.toml'}: [directory] global_catalog") and message in error


@pytest.mark.parametrize("port", ["0", "65536", "true", '"3269"'])
def test_a_wrong_global_catalog_port_is_refused(tmp_path, port):
    text = MINIMAL.replace("[directory]", f"[directory]\nglobal_catalog_port = {port}")
    assert "[directory] global_catalog_port" in error_of(write(tmp_path, text))
