"""Kerberos without a lab: the [kerberos] and [directory] auth settings, keytabs, and what each failure says.

The lab-backed proof (a whole run on Kerberos, the KDC's refusals, sealing, channel binding) is in
test_lab_kerberos.py.
"""

from __future__ import annotations

import secrets
import struct
from pathlib import Path

import pytest
from test_config import error_of

from exchange_compliance.collect import kerberos
from exchange_compliance.config import ConfigError, load_org_config

AES256 = 18
PRINCIPAL = "svc-excompliance@CONTOSO.COM"


def make_keytab(path: Path, entries: list[tuple[str, bytes]], hole: bool = False) -> Path:
    """A keytab in MIT's format (0x502) as ktpass or ktutil write it: one AES-256 key per principal, kvno 2;
    `hole` puts a removed entry's gap first, as ktutil leaves one."""

    def counted(text: str) -> bytes:
        return struct.pack(">H", len(text.encode())) + text.encode()

    data = b"\x05\x02" + (struct.pack(">i", -12) + bytes(12) if hole else b"")
    for principal, key in entries:
        name, realm = principal.rsplit("@", 1)
        parts = name.split("/")
        body = struct.pack(">H", len(parts)) + counted(realm) + b"".join(counted(p) for p in parts)
        body += struct.pack(">IIB", 1, 0, 2) + struct.pack(">HH", AES256, len(key)) + key + struct.pack(">I", 2)
        data += struct.pack(">i", len(body)) + body
    path.write_bytes(data)
    return path


def org(tmp_path: Path, kerberos_table: str = f'keytab_env = "T_KEYTAB"\nprincipal = "{PRINCIPAL}"\n',
        directory: str = 'auth = "kerberos"\n', winrm: str = 'transport = "kerberos"\n') -> Path:  # fmt: skip
    path = tmp_path / "prod.toml"
    text = f'[directory]\nservers = ["dc01.contoso.com"]\n{directory}\n[winrm]\n{winrm}'
    if kerberos_table is not None:
        text += f"\n[kerberos]\n{kerberos_table}"
    path.write_text(text)
    return path


# --- the settings ---------------------------------------------------------------------------------------


def test_kerberos_settings_and_no_ldap_password(tmp_path, monkeypatch):
    (tmp_path / "realm.conf").write_text("[libdefaults]\n")
    config = load_org_config(org(tmp_path, f'principal = "{PRINCIPAL}"\nconfig_file = "realm.conf"\n'))
    assert config.kerberos is not None
    assert config.kerberos.keytab_env == "KRB5_CLIENT_KTNAME"  # the default variable, as MIT's own
    assert config.kerberos.config_file == tmp_path / "realm.conf"
    assert config.kerberos_principal() == PRINCIPAL
    assert config.directory.auth == "kerberos" and config.directory.port == 636
    monkeypatch.delenv("T_LDAP_PASSWORD", raising=False)
    assert config.directory_credentials() is None  # no LDAP user or password is needed, nor read


def test_principal_may_come_from_the_environment(tmp_path, monkeypatch):
    config = load_org_config(org(tmp_path, 'principal_env = "T_PRINCIPAL"\n'))
    monkeypatch.delenv("T_PRINCIPAL", raising=False)
    with pytest.raises(ConfigError, match=r"\[kerberos\] principal_env: environment variable T_PRINCIPAL is not set"):
        config.kerberos_principal()
    monkeypatch.setenv("T_PRINCIPAL", PRINCIPAL)
    assert config.kerberos_principal() == PRINCIPAL


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("", "[kerberos] principal: give principal or principal_env (one of them)"),
        (f'principal = "{PRINCIPAL}"\nprincipal_env = "P"\n', "give principal or principal_env (one of them)"),
        ('principal = "svc-excompliance"\n', "[kerberos] principal: expected name@REALM, got 'svc-excompliance'"),
        (f'principal = "{PRINCIPAL}"\nkeytab = "/etc/x.keytab"\n', "[kerberos] keytab: unknown key"),
        (f'principal = "{PRINCIPAL}"\nconfig_file = "nowhere.conf"\n', "[kerberos] config_file: cannot read"),
    ],
)
def test_kerberos_section_mistakes_are_one_line(tmp_path, table, message):
    assert message in error_of(org(tmp_path, table))


def test_a_secret_in_place_of_the_keytab_variable_is_never_shown(tmp_path):
    text = error_of(org(tmp_path, f'principal = "{PRINCIPAL}"\nkeytab_env = "s3cr3t pass!"\n'))
    assert "[kerberos] keytab_env: must name an environment variable" in text and "s3cr3t" not in text


def test_ldap_without_tls_only_with_kerberos(tmp_path):
    sealed = load_org_config(org(tmp_path, directory='auth = "kerberos"\ntls = "none"\n'))
    assert (sealed.directory.tls, sealed.directory.port) == ("none", 389)
    simple = 'tls = "none"\nuser_env = "U"\npassword_env = "P"\n'
    assert '[directory] tls: "none" only with auth = "kerberos"' in error_of(org(tmp_path, directory=simple))


def test_simple_bind_still_needs_the_ldap_user(tmp_path):
    assert "[directory] user_env: required key is missing" in error_of(org(tmp_path, directory=""))


# --- the keytab -----------------------------------------------------------------------------------------


def test_keytab_principals_are_read_in_order_past_a_hole(tmp_path):
    path = make_keytab(
        tmp_path / "k", [(PRINCIPAL, bytes(32)), ("HTTP/ex01.contoso.com@CONTOSO.COM", bytes(32))], hole=True
    )
    assert kerberos.keytab_principals(path) == [PRINCIPAL, "HTTP/ex01.contoso.com@CONTOSO.COM"]


@pytest.fixture
def acquiring(tmp_path, monkeypatch):
    """acquire() with T_KEYTAB naming a file of the test's; the process's Kerberos variables restored after."""
    for name in ("KRB5CCNAME", "KRB5_CLIENT_KTNAME", "KRB5_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = load_org_config(org(tmp_path))

    def acquire(keytab: Path | None) -> str:
        if keytab is None:
            monkeypatch.delenv("T_KEYTAB", raising=False)
        else:
            monkeypatch.setenv("T_KEYTAB", str(keytab))
        with pytest.raises(ConfigError) as caught:
            kerberos.acquire(config)
        return str(caught.value)

    return acquire


def test_unset_keytab_variable_is_named(acquiring, tmp_path):
    assert acquiring(None).endswith("[kerberos] keytab_env: environment variable T_KEYTAB is not set")


def test_unreadable_keytab_is_named(acquiring, tmp_path):
    assert acquiring(tmp_path / "gone.keytab").endswith(
        f"cannot read the keytab {tmp_path / 'gone.keytab'}: No such file or directory"
    )
    assert acquiring(tmp_path).endswith(f"cannot read the keytab {tmp_path}: Is a directory")
    (tmp_path / "notes.txt").write_text("svc-excompliance:Passw0rd\n")
    message = acquiring(tmp_path / "notes.txt")
    assert message.endswith("notes.txt: not a keytab (MIT format 0x502 expected)") and "Passw0rd" not in message


def test_keytab_without_the_principal_says_what_it_holds(acquiring, tmp_path):
    keytab = make_keytab(tmp_path / "other.keytab", [("HTTP/ex01.contoso.com@CONTOSO.COM", secrets.token_bytes(32))])
    assert acquiring(keytab).endswith(
        f"[kerberos] principal: {keytab} holds no key for {PRINCIPAL} (it holds: HTTP/ex01.contoso.com@CONTOSO.COM)"
    )


# --- what the errors say --------------------------------------------------------------------------------


class FakeGSSError(Exception):
    def __init__(self, min_code: int, text: str) -> None:
        super().__init__(f"Major (851968): Unspecified GSS failure., Minor ({min_code}): {text}")
        self.min_code = min_code


def test_kerberos_errors_say_what_they_mean():
    skew = FakeGSSError(kerberos.CLOCK_SKEW + (1 << 32), "Clock skew too great")  # gssapi reports it unsigned
    assert kerberos.describe(skew) == (
        "Kerberos: clock skew: this host's clock and the KDC's differ by more than the allowed 5 minutes "
        "[Clock skew too great]"
    )
    # pywinrm's Kerberos transport (pykerberos) puts the (message, code) pairs in its text.
    pykerberos = Exception(
        "authGSSClientStep() failed: (('Unspecified GSS failure.  Minor code may provide more information', 851968), "
        "('Server not found in Kerberos database', -1765328377))"
    )
    assert kerberos.describe(pykerberos, "HTTP/ex01.contoso.com").startswith(
        "Kerberos (HTTP/ex01.contoso.com): no account in the directory has this SPN"
    )
    assert kerberos.minor_code(Exception("Connection refused")) is None


def test_missing_gssapi_stops_the_run_with_exit_4(suite, tmp_path):
    # A stand-in package that fails to import, first on the path: as on a host where gssapi was never installed.
    stub = tmp_path / "stub"
    (stub / "gssapi").mkdir(parents=True)
    (stub / "gssapi" / "__init__.py").write_text("raise ImportError('No module named gssapi')\n")
    keytab = make_keytab(tmp_path / "svc.keytab", [(PRINCIPAL, bytes(32))])
    config = org(tmp_path)
    pythonpath = f"{stub}:{Path(__file__).resolve().parents[1]}"
    run = suite(None, "--org", str(config), env={"PYTHONPATH": pythonpath, "T_KEYTAB": str(keytab)})
    assert run.ret == 4, run.stdout + run.stderr
    assert kerberos.GSSAPI_MISSING in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
