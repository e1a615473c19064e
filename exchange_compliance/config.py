"""Org configuration: orgs/<name>.toml, what its tables and keys mean. Strict, because a typo in a nightly job's
config must not pass silently: read with strict_toml.StrictTable (unknown keys, types, ranges, one-line errors).

Secrets are never in the file: it names the environment variables that hold them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .facts import WARNING_DAYS_RANGE, JudgingSettings
from .strict_toml import ConfigError, StrictTable, read_text, read_toml, shown

# how many runs' files reports/<org>/ keeps unless [reports] keep says otherwise
REPORTS_KEEP = 30
# Servers probed at once, by default and at most. A probe mostly waits (seconds of PowerShell on the server), so
# the default is every server of a 200-server org at once: a thread and a socket each on the audit host, and one
# connection to each server, which WinRM's per-server limits (MaxShellsPerUser 30) allow. Above it a thousand
# servers are bound by the audit host's CPU (about 13 ms a server), not by waiting. Measured: unit/bench_scale.py.
MAX_WORKERS = 256
# An email address as [notify] takes it: a plain addr-spec (dot-atom local part, a domain of host labels), no
# display name, nothing a header could be bent with.
EMAIL_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?")
NOTIFY_ON = ("change", "always", "never")
SMTP_SECURITY = ("starttls", "tls", "none")
# An org's name becomes reports/<org>/ and orgs/<org>.waivers.toml: one path component, never "..", no separator,
# no control character, whether it came from --org, a config file's name or an evidence file.
ORG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class DirectorySettings:
    servers: tuple[str, ...]
    port: int
    tls: str  # "ldaps", "starttls", or "none" (Kerberos only: signed and sealed by Kerberos instead)
    ca_file: Path | None
    # None with auth = "kerberos": the run's ticket is the credential
    user_env: str | None
    password_env: str | None
    timeout_seconds: float
    base_dn: str | None
    auth: str = "simple"  # "simple" (user and password over TLS) or "kerberos" (SASL GSSAPI)
    # Global catalogs, tried in order as `servers` are; () when not given: the hosts of `servers`, on the GC port.
    global_catalog: tuple[str, ...] = ()
    global_catalog_port: int = 3269

    @property
    def global_catalog_hosts(self) -> tuple[str, ...]:
        return self.global_catalog or self.servers


@dataclass(frozen=True)
class KerberosSettings:
    """[kerberos]: the run takes its own ticket from a keytab (collect/kerberos.py)."""

    keytab_env: str  # the variable holding the keytab's path
    principal: str | None
    principal_env: str | None  # instead of principal: the variable holding it
    config_file: Path | None  # a krb5.conf for the org's realm (KRB5_CONFIG), when the host's does not know it


@dataclass(frozen=True)
class WinRMSettings:
    port: int
    scheme: str
    transport: str
    ca_file: Path | None
    validate_certificate: bool
    # None with transport = "kerberos": the ticket in the cache (ops/nightly's kinit) is the credential
    user_env: str | None
    password_env: str | None
    read_timeout_seconds: int
    operation_timeout_seconds: int


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # "starttls", "tls" (implicit TLS), or "none" (a loopback host only)
    user_env: str | None  # both or neither: the login
    password_env: str | None
    ca_file: Path | None  # the CA bundle the server's certificate is checked against; the system store if None
    sender: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class NotifySettings:
    """[notify]: who hears of a run (plugin/notify.py), by email, a webhook, or both."""

    on: str  # "change" (the verdict, or the failing or unchecked rows, differ from the last run), "always", "never"
    smtp: SmtpSettings | None
    webhook_url_env: str | None  # the variable holding the webhook's URL: a secret (Teams and Slack URLs carry tokens)
    timeout_seconds: float


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class OrgConfig:
    name: str
    source: Path
    display_name: str
    hybrid: bool
    directory: DirectorySettings
    winrm: WinRMSettings
    tls_timeout_seconds: float
    auth_certificate_warning_days: int
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    addresses: dict[str, str]
    max_workers: int
    server_timeout_seconds: float
    reports_keep: int = REPORTS_KEEP  # the plugin prunes older runs' files; --keep-reports overrides
    kerberos: KerberosSettings | None = None
    notify: NotifySettings | None = None

    def address_of(self, host: str) -> str:
        """The address to connect to for a host name: an override if the config has one, else the name itself."""
        return self.addresses.get(host.lower(), host)

    def directory_credentials(self) -> Credentials | None:
        """The LDAP account from the environment; None with Kerberos, where the run's ticket is the account."""
        if self.directory.user_env is None or self.directory.password_env is None:
            return None
        return Credentials(
            _env(self, "directory", "user_env", self.directory.user_env),
            _env(self, "directory", "password_env", self.directory.password_env),
        )

    def kerberos_principal(self) -> str:
        """[kerberos] principal, or the variable principal_env names."""
        settings = self.kerberos
        assert settings is not None
        if settings.principal is not None:
            return settings.principal
        return _env(self, "kerberos", "principal_env", settings.principal_env)  # type: ignore[arg-type]

    def winrm_credentials(self) -> Credentials | None:
        """The WinRM account from the environment; None with Kerberos, where the ticket cache holds it."""
        if self.winrm.user_env is None or self.winrm.password_env is None:
            return None
        return Credentials(
            _env(self, "winrm", "user_env", self.winrm.user_env),
            _env(self, "winrm", "password_env", self.winrm.password_env),
        )

    def insecure_settings(self) -> tuple[str, ...]:
        """Settings that weaken what the run's credentials are protected by, one line each: said at the start of
        the run, in the report's header and in latest.json."""
        if self.winrm.validate_certificate:
            return ()
        return (
            f"{self.source}: [winrm] validate_certificate = false: the servers' WinRM certificates are not checked, "
            "so whoever answers in a server's name gets the WinRM logon and the probe",
        )

    def judging_settings(self) -> JudgingSettings:
        """The settings the judges need; kept with the facts so a snapshot is judged as it was collected."""
        return JudgingSettings(self.hybrid, self.auth_certificate_warning_days)


def _env(config: OrgConfig, section: str, key: str, variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        # `variable` passed ENV_NAME (strict_toml) when the file was read: it names a variable, never echoes a secret.
        raise ConfigError(f"{config.source}: [{section}] {key}: environment variable {variable} is not set")
    return value


def _hosts_file(path: Path, where: str) -> dict[str, str]:
    """Address overrides in /etc/hosts format: `address name [alias ...]`."""
    addresses: dict[str, str] = {}
    for number, line in enumerate(read_text(path, f"{where}: {path}").splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if len(words) == 1:
            raise ConfigError(f"{where}: {path} line {number}: an address with no host name")
        for name in words[1:]:
            addresses[name.lower()] = words[0]
    return addresses


def check_org_name(value: object, source: str) -> str:
    """`value` if it is an org name; else a ConfigError naming `source` and the value, escaped (repr: a line break
    or an escape sequence in it is shown, not acted on)."""
    if isinstance(value, str) and ORG_NAME.fullmatch(value):
        return value
    raise ConfigError(
        f"{source}: {shown(value)} is not an org name (letters, digits, '.', '_' and '-', a letter or digit first)"
    )


def resolve_org_path(org: str, orgs_dir: Path) -> Path:
    """`--org NAME` is orgs/NAME.toml; `--org path/to/file.toml` is that file."""
    if org.endswith(".toml") or "/" in org or os.sep in org:
        return Path(org)
    return orgs_dir / f"{org}.toml"


def load_org_config(path: Path, name: str | None = None) -> OrgConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such org config (copy orgs/example-prod.toml to start one)")
    data = read_toml(path)

    root = StrictTable(data, path, "")
    org = root.table("org")
    directory = root.table("directory")
    winrm = root.table("winrm")
    backend = root.table("backend")
    thresholds = root.table("thresholds")
    servers = root.table("servers")
    network = root.table("network")
    collection = root.table("collection")
    reports = root.table("reports")
    kerberos_table = root.table("kerberos")
    notify_table = root.table("notify")

    directory_auth = directory.choice("auth", ("simple", "kerberos"), "simple")
    tls = directory.choice("tls", ("ldaps", "starttls", "none"), "ldaps")
    if tls == "none" and directory_auth != "kerberos":
        raise ConfigError(
            f'{path}: [directory] tls: "none" only with auth = "kerberos" (a password is never sent without TLS)'
        )
    dc_servers = directory.strings("servers", None)  # type: ignore[arg-type]
    if not dc_servers:
        raise ConfigError(f"{path}: [directory] servers: name at least one domain controller")
    # With Kerberos the run's ticket is the account: user_env and password_env are optional and never read.
    ldap_kerberos = directory_auth == "kerberos"
    ldap_user_env = directory.optional_env_name("user_env") if ldap_kerberos else directory.env_name("user_env")
    ldap_password_env = (
        directory.optional_env_name("password_env") if ldap_kerberos else directory.env_name("password_env")
    )
    # The global catalog answers on 3269 over TLS from the first byte, on 3268 in clear (StartTLS, or Kerberos
    # sealing), as AD's DCs do; the same TLS settings and credentials as the DCs.
    global_catalog_port = directory.integer("global_catalog_port", 3269 if tls == "ldaps" else 3268, low=1)
    directory_settings = DirectorySettings(
        global_catalog=_hosts(directory, "global_catalog", path),
        global_catalog_port=global_catalog_port,
        servers=dc_servers,
        port=directory.integer("port", 636 if tls == "ldaps" else 389, low=1),
        tls=tls,
        ca_file=directory.file("ca_file"),
        user_env=None if ldap_kerberos else ldap_user_env,
        password_env=None if ldap_kerberos else ldap_password_env,
        timeout_seconds=directory.number("timeout_seconds", 15),
        base_dn=directory.text("base_dn", None),
        auth=directory_auth,
    )
    scheme = winrm.choice("scheme", ("https", "http"), "https")
    read_timeout = winrm.integer("read_timeout_seconds", 60, low=1, high=3600)
    operation_timeout = winrm.integer("operation_timeout_seconds", 50, low=1, high=3600)
    if read_timeout <= operation_timeout:
        raise ConfigError(
            f"{path}: [winrm] read_timeout_seconds: must exceed operation_timeout_seconds ({operation_timeout})"
        )
    transport = winrm.choice("transport", ("ntlm", "kerberos", "credssp", "basic"), "ntlm")
    # With Kerberos the run's ticket is the credential ([kerberos], or an external kinit): user_env and
    # password_env are optional (still checked to be variable names), never read nor given to pywinrm.
    kerberos = transport == "kerberos"
    user_env = winrm.optional_env_name("user_env") if kerberos else winrm.env_name("user_env")
    password_env = winrm.optional_env_name("password_env") if kerberos else winrm.env_name("password_env")
    validate_certificate = winrm.flag("validate_certificate", True)
    if transport == "basic":
        _refuse_basic_in_clear(path, scheme, validate_certificate)
    winrm_settings = WinRMSettings(
        port=winrm.integer("port", 5986 if scheme == "https" else 5985, low=1),
        scheme=scheme,
        transport=transport,
        ca_file=winrm.file("ca_file"),
        validate_certificate=validate_certificate,
        user_env=None if kerberos else user_env,
        password_env=None if kerberos else password_env,
        read_timeout_seconds=read_timeout,
        operation_timeout_seconds=operation_timeout,
    )
    addresses = {name.lower(): address for name, address in _address_table(network, path).items()}
    hosts_file = network.file("hosts_file")
    if hosts_file is not None:
        addresses = {**_hosts_file(hosts_file, f"{path}: [network] hosts_file"), **addresses}

    config = OrgConfig(
        name=check_org_name(name or path.stem, f"{path}: the org's name"),
        source=path,
        display_name=org.text("display_name", name or path.stem),
        hybrid=org.flag("hybrid", False),
        directory=directory_settings,
        winrm=winrm_settings,
        tls_timeout_seconds=backend.number("timeout_seconds", 10),
        auth_certificate_warning_days=thresholds.integer("auth_certificate_warning_days", 60, *WARNING_DAYS_RANGE),
        include=servers.strings("include"),
        exclude=servers.strings("exclude"),
        addresses=addresses,
        max_workers=collection.integer("max_workers", MAX_WORKERS, low=1, high=MAX_WORKERS),
        server_timeout_seconds=collection.number("server_timeout_seconds", 120),
        reports_keep=reports.integer("keep", REPORTS_KEEP, low=1, high=10000),
        kerberos=_kerberos(kerberos_table, path) if "kerberos" in data else None,
        notify=_notify(notify_table, path) if "notify" in data else None,
    )
    directory.retired("bind", '[directory] auth says how: "simple" (the default) or "kerberos"')
    backend.retired("port", "the Exchange Back End site always listens on 444")
    sections = (
        *(org, directory, winrm, backend, thresholds, servers, network, collection, reports, kerberos_table),
        notify_table,
    )
    for section in (*sections, root):
        section.finish()
    return config


def _refuse_basic_in_clear(path: Path, scheme: str, validate_certificate: bool) -> None:
    """Basic sends the password itself, base64-encoded, in every request: only inside TLS to a server whose
    certificate is checked. NTLM, Kerberos and CredSSP send no password in clear over http: pywinrm encrypts their
    messages there (collect/winrm.py asks it to, always)."""
    if scheme == "http":
        raise ConfigError(
            f'{path}: [winrm] scheme: "http" with transport = "basic" would send the password in clear (base64): '
            'use scheme = "https" with validate_certificate = true, or transport = "ntlm" or "kerberos"'
        )
    if not validate_certificate:
        raise ConfigError(
            f'{path}: [winrm] validate_certificate: false with transport = "basic" would send the password to any '
            "host that answers in the server's name: validate the certificate, or use ntlm or kerberos"
        )


def _kerberos(section: StrictTable, path: Path) -> KerberosSettings:
    principal = section.text("principal", None)
    principal_env = section.optional_env_name("principal_env")
    if (principal is None) == (principal_env is None):
        raise ConfigError(f"{path}: [kerberos] principal: give principal or principal_env (one of them)")
    if principal is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", principal):
        raise ConfigError(f"{path}: [kerberos] principal: expected name@REALM, got {principal!r}")
    keytab_env = section.optional_env_name("keytab_env")
    return KerberosSettings(
        keytab_env=keytab_env or "KRB5_CLIENT_KTNAME",
        principal=principal,
        principal_env=principal_env,
        config_file=section.file("config_file"),
    )


def _notify(section: StrictTable, path: Path) -> NotifySettings:
    where = f"{path}: [notify]"
    on = section.choice("on", NOTIFY_ON, "change")
    host = section.text("smtp_host", None)
    smtp = _smtp(section, where, host) if host is not None else None
    if smtp is None:
        stray = [key for key in ("smtp_port", "smtp_security", "smtp_user_env", "smtp_password_env", "smtp_ca_file",
                                 "from", "to") if key in section.data]  # fmt: skip
        if stray:
            raise ConfigError(f"{where} {stray[0]}: mail needs smtp_host too")
    webhook = section.optional_env_name("webhook_url_env")
    timeout = section.number("timeout_seconds", 30)
    if smtp is None and webhook is None and on != "never":
        raise ConfigError(
            f'{where}: name a mail server (smtp_host, from, to) or a webhook (webhook_url_env), or set on = "never"'
        )
    return NotifySettings(on, smtp, webhook, timeout)


def _smtp(section: StrictTable, where: str, host: str) -> SmtpSettings:
    if not HOST_NAME.fullmatch(host):
        raise ConfigError(f"{where} smtp_host: {host!r} is not a host name or address")
    security = section.choice("smtp_security", SMTP_SECURITY, "starttls")
    if security == "none" and not is_loopback(host):
        raise ConfigError(
            f'{where} smtp_security: "none" only to a loopback host (localhost, 127.0.0.1, ::1): the message, and '
            "a password, would cross the network in clear"
        )
    port = section.integer("smtp_port", {"starttls": 587, "tls": 465, "none": 25}[security], low=1)
    user_env = section.optional_env_name("smtp_user_env")
    password_env = section.optional_env_name("smtp_password_env")
    if (user_env is None) != (password_env is None):
        raise ConfigError(f"{where} {'smtp_password_env' if user_env else 'smtp_user_env'}: give both, or neither")
    ca_file = section.file("smtp_ca_file")
    if ca_file is not None and security == "none":
        raise ConfigError(f'{where} smtp_ca_file: no certificate is checked with smtp_security = "none"')
    sender = _email_address(where, "from", section.text("from"))
    listed = section.strings("to", None)  # type: ignore[arg-type]
    if not listed:
        raise ConfigError(f"{where} to: name at least one recipient")
    recipients = tuple(_email_address(where, "to", address) for address in listed)
    return SmtpSettings(host, port, security, user_env, password_env, ca_file, sender, recipients)


def _email_address(where: str, key: str, value: str) -> str:
    if not EMAIL_ADDRESS.fullmatch(value) or len(value) > 254:
        raise ConfigError(f"{where} {key}: {value!r} is not an email address (name@example.com)")
    return value


# A host name or an address as a DC's certificate names it: no scheme, no port, no space.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\]")


def _hosts(table: StrictTable, key: str, path: Path) -> tuple[str, ...]:
    """A list of host names, strictly: a port, a scheme or a duplicate is an error naming the value."""
    if key not in table.data:
        table.read.add(key)
        return ()
    hosts = table.strings(key)
    where = f"{path}: [directory] {key}"
    if not hosts:
        raise ConfigError(f"{where}: name at least one host, or leave the key out (the servers, on the GC port)")
    for host in hosts:
        if ":" in host and not host.startswith("["):
            raise ConfigError(f"{where}: {host!r}: a host name only; the port is global_catalog_port")
        if not _HOST.fullmatch(host):
            raise ConfigError(f"{where}: {host!r} is not a host name")
    repeated = next((h for i, h in enumerate(hosts) if h.lower() in (o.lower() for o in hosts[:i])), None)
    if repeated is not None:
        raise ConfigError(f"{where}: {repeated!r} is listed twice")
    return hosts


def _address_table(network: StrictTable, path: Path) -> dict[str, str]:
    table = network.get("addresses", dict, {}, what="a table of host name = address")
    for host, address in table.items():  # type: ignore[union-attr]
        if not isinstance(address, str):
            raise ConfigError(f"{path}: [network.addresses] {host}: expected an address string, got {address!r}")
    return table  # type: ignore[return-value]
