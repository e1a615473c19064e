"""Where the lab keeps its state, and the addresses its servers answer on."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "lab.contoso.test"
REALM = DOMAIN.upper()
NETBIOS_DOMAIN = "LAB"
DC_HOST = f"dc01.{DOMAIN}"
DC_ADDRESS = "127.0.0.1"
WINRM_PORT = 5986
BACKEND_PORT = 444
AUDIT_ACCOUNT = "excompliance"
# Each lab server answers on its own loopback address: 127.0.10.1, 127.0.10.2, ...
_FIRST_SERVER_ADDRESS = ipaddress.IPv4Address("127.0.10.1")


def server_address(index: int) -> str:
    """The address of the index-th server (0-based) of a scenario."""
    return str(_FIRST_SERVER_ADDRESS + index)


@dataclass(frozen=True)
class LabLayout:
    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def hosts_file(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "credentials.env"

    @property
    def kerberos_file(self) -> Path:
        """What orgs/lab-kerberos.toml names: the audit keytab's path and the principal, no secret."""
        return self.state_dir / "kerberos.env"

    @property
    def dc_ca_file(self) -> Path:
        return self.state_dir / "dc-ca.pem"

    @property
    def winrm_ca_file(self) -> Path:
        return self.state_dir / "lab-ca.pem"

    @property
    def krb5_conf(self) -> Path:
        return self.state_dir / "krb5.conf"

    @property
    def audit_keytab(self) -> Path:
        """The audit account's keys: what an admin exports for the suite (ktpass, or an account's keytab)."""
        return self.state_dir / "audit.keytab"

    @property
    def servers_keytab(self) -> Path:
        """The keys of the lab servers' computer accounts (which hold their HTTP/ SPNs), which their Kerberos
        acceptor reads (KRB5_KTNAME)."""
        return self.state_dir / "servers.keytab"

    @property
    def samba_dir(self) -> Path:
        return self.state_dir / "samba"

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"
