"""Lab scenarios: TOML data files that say what the lab org looks like, so a new case needs no code.

A scenario starts from "as Exchange setup leaves it" and plants faults by saying what differs.
Every key is documented in lab/scenarios/README.md; an unknown key is an error naming the file and key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

DEFAULT_MEMBER_OF = ("Exchange Servers", "Exchange Trusted Subsystem")
DEFAULT_ROLES = ("Mailbox", "ClientAccess")
DEFAULT_VERSION = "15.2.1544.4"  # Exchange 2019 CU14
LAB_DOMAIN = "lab.contoso.test"
AUTH_SUBJECT = "CN=Microsoft Exchange Server Auth Certificate"


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class CertificateSpec:
    """A certificate. `{name}` and `{fqdn}` in subject or SANs make it a per-server template."""

    name: str
    subject: str
    sans: tuple[str, ...] = ()
    issuer: str = "self"  # "self" or "lab-ca"
    valid_from_days: float = -30
    valid_to_days: float = 1800
    key_size: int = 2048
    friendly_name: str = ""

    @property
    def is_template(self) -> bool:
        return any("{" in value for value in (self.subject, *self.sans))


@dataclass(frozen=True)
class AuthSpec:
    current: str | None = "auth"
    previous: str | None = None
    next: str | None = None
    next_effective_days: float | None = None
    raw_thumbprint_values: tuple[str, ...] | None = None
    absent: bool = False


@dataclass(frozen=True)
class ServerSpec:
    name: str
    roles: tuple[str, ...] = DEFAULT_ROLES
    version: str = DEFAULT_VERSION
    site: str = "Default-First-Site-Name"
    member_of: tuple[str, ...] = DEFAULT_MEMBER_OF
    protect_dacl: bool = False
    ews_internal_url: str | None = None  # None: https://<fqdn>/EWS/Exchange.asmx; "": not set
    ews_external_url: str | None = None  # None: https://mail.<domain>/EWS/Exchange.asmx; "": not set
    latency_ms: int = 0  # added before every response (network, TLS and HTTP)
    # How long the probe's command runs on the server: powershell.exe starting, WebAdministration loading, the
    # store read. A real server takes seconds; WinRM's Receive answers nothing until the command is done.
    probe_seconds: float = 0.0
    unreachable: bool = False
    store: tuple[str, ...] | None = None  # None: "exchange" plus "auth" (and "auth-next" if staged) on MBX/CAS
    no_private_key: tuple[str, ...] = ()
    backend_certificate: str = "exchange"  # "none": no https binding on 444
    frontend_certificate: str = "exchange"
    presented_certificate: str | None = None  # None: what the 444 binding names

    @property
    def fqdn(self) -> str:
        return f"{self.name.lower()}.{LAB_DOMAIN}"

    @property
    def is_edge(self) -> bool:
        return "Edge" in self.roles


@dataclass(frozen=True)
class GroupSpec:
    name: str
    member_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class AceSpec:
    """SDDL ACE(s) added to an object: "org", "admin-group", "servers-container", "server:<NAME>", or a DN.
    `{sid:<account>}` is replaced."""

    object: str
    sddl: str


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    org_name: str = "Contoso"
    servers: tuple[ServerSpec, ...] = ()
    groups: tuple[GroupSpec, ...] = ()
    aces: tuple[AceSpec, ...] = ()
    certificates: dict[str, CertificateSpec] = field(default_factory=dict)
    auth: AuthSpec = AuthSpec()

    def server(self, name: str) -> ServerSpec:
        for server in self.servers:
            if server.name.lower() == name.lower():
                return server
        raise KeyError(name)

    def store_of(self, server: ServerSpec) -> tuple[str, ...]:
        if server.store is not None:
            return server.store
        if server.is_edge:
            return ("exchange",)
        staged = (self.auth.next,) if self.auth.next else ()
        return ("exchange", *(c for c in (self.auth.current, *staged) if c))


def default_certificates() -> dict[str, CertificateSpec]:
    return {
        "exchange": CertificateSpec(
            name="exchange",
            subject="CN={name}",
            sans=("{name}", "{fqdn}"),
            valid_from_days=-200,
            valid_to_days=1625,
            friendly_name="Microsoft Exchange",
        ),
        "auth": CertificateSpec(
            name="auth",
            subject=AUTH_SUBJECT,
            valid_from_days=-200,
            valid_to_days=1600,
            friendly_name="Microsoft Exchange Server Auth Certificate",
        ),
    }


def _build(cls, raw: dict, where: str, **fixed):
    allowed = {f.name for f in fields(cls)} - set(fixed)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()}
    try:
        return cls(**values, **fixed)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def parse_scenario(data: dict, source: str) -> Scenario:
    data = dict(data)
    top = {"description", "org_name", "servers", "groups", "aces", "certificates", "auth"}
    unknown = sorted(set(data) - top)
    if unknown:
        raise ScenarioError(f"{source}: unknown key {unknown[0]!r}")
    certificates = default_certificates()
    for name, raw in (data.get("certificates") or {}).items():
        certificates[name] = _build(CertificateSpec, raw, f"{source}: certificates.{name}", name=name)
    servers = tuple(
        _build(ServerSpec, raw, f"{source}: servers[{i}] ({raw.get('name', '?')})")
        for i, raw in enumerate(data.get("servers") or [])
    )
    if not servers:
        raise ScenarioError(f"{source}: no servers")
    for server in servers:
        for key in ("latency_ms", "probe_seconds"):
            value = getattr(server, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ScenarioError(f"{source}: server {server.name}: {key} must be a number of at least 0: {value!r}")
    names = [s.name.lower() for s in servers]
    if len(set(names)) != len(names):
        raise ScenarioError(f"{source}: a server name appears twice")
    scenario = Scenario(
        name=Path(source).stem,
        description=data.get("description", ""),
        org_name=data.get("org_name", "Contoso"),
        servers=servers,
        groups=tuple(
            _build(GroupSpec, raw, f"{source}: groups[{i}]") for i, raw in enumerate(data.get("groups") or [])
        ),
        aces=tuple(_build(AceSpec, raw, f"{source}: aces[{i}]") for i, raw in enumerate(data.get("aces") or [])),
        certificates=certificates,
        auth=_build(AuthSpec, data.get("auth") or {}, f"{source}: auth"),
    )
    _check_references(scenario, source)
    return scenario


def _check_references(scenario: Scenario, source: str) -> None:
    known = set(scenario.certificates)
    for server in scenario.servers:
        named = [*scenario.store_of(server), *server.no_private_key, server.frontend_certificate]
        named += [c for c in (server.backend_certificate, server.presented_certificate) if c not in (None, "none")]
        for cert in named:
            if cert not in known:
                raise ScenarioError(f"{source}: server {server.name} names unknown certificate {cert!r}")
    for cert in (scenario.auth.current, scenario.auth.previous, scenario.auth.next):
        if cert is not None and cert not in known:
            raise ScenarioError(f"{source}: auth names unknown certificate {cert!r}")


def scenario_names() -> list[str]:
    folder = resources.files(__package__).joinpath("scenarios")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_scenario(name: str | None = None, path: str | Path | None = None) -> Scenario:
    if path is not None:
        source = Path(path)
        text = source.read_text(encoding="utf-8")
    else:
        name = name or "healthy"
        if name not in scenario_names():
            raise ScenarioError(f"no scenario {name!r}; there are: {', '.join(scenario_names())}")
        source = Path(f"{name}.toml")
        text = resources.files(__package__).joinpath("scenarios", f"{name}.toml").read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    return parse_scenario(data, str(source))


def generated_servers(count: int, latency_ms: int = 0, probe_seconds: float = 0.0) -> tuple[ServerSpec, ...]:
    """`up --servers N`: N healthy servers of mixed versions and roles, for scale runs, each answering after
    `latency_ms` and running the probe for `probe_seconds`."""
    versions = ("15.2.1544.4", "15.1.2507.6", "15.0.1497.2")
    return tuple(
        ServerSpec(
            name=f"EX{i + 1:03d}",
            version=versions[i % 3],
            roles=("Mailbox", "ClientAccess") if i % 5 else ("Mailbox",),
            latency_ms=latency_ms,
            probe_seconds=probe_seconds,
        )
        for i in range(count)
    )
