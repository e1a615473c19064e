"""The run's own Kerberos ticket, taken from a keytab into a private in-memory ticket cache, and what Kerberos
errors mean to an admin.

With `[kerberos]` in the org config the suite needs no `kinit`: `acquire` reads the keytab the config names
(through an environment variable), asks the KDC for a ticket-granting ticket as the configured principal, and
keeps it in a MEMORY: cache of this process. LDAP binds with that credential (gssapi); pywinrm's Kerberos
transport (pykerberos) uses the process's default cache, so KRB5CCNAME is pointed at the same cache before any
collecting thread starts, and KRB5_CLIENT_KTNAME at the keytab, so that a ticket that expires mid-run is renewed
from it.

Without `[kerberos]`, Kerberos uses the ticket cache the environment names (an external `kinit`).

A keytab that cannot be read, that holds no key for the principal, or a missing package is the config's fault
(ConfigError, exit 4); a KDC that refuses or cannot be reached is the org's (KerberosFailed, exit 6).
"""

from __future__ import annotations

import os
import re
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, OrgConfig

DEFAULT_KEYTAB_ENV = "KRB5_CLIENT_KTNAME"
GSSAPI_MISSING = "Kerberos needs the python package gssapi: pip install gssapi (it builds against libkrb5-dev)"

# MIT krb5 error codes (com_err table krb5, base -1765328384) and what each means for the run.
_KRB5 = -1765328384
C_PRINCIPAL_UNKNOWN = _KRB5 + 6
S_PRINCIPAL_UNKNOWN = _KRB5 + 7
ETYPE_NOSUPP = _KRB5 + 14
CLIENT_REVOKED = _KRB5 + 18
KEY_EXPIRED = _KRB5 + 23
PREAUTH_FAILED = _KRB5 + 24
TICKET_EXPIRED = _KRB5 + 32
CLOCK_SKEW = _KRB5 + 37
KDC_UNREACHABLE = -1765328228
KDC_UNRESOLVED = -1765328164
KDC_NOT_FOUND = -1765328230
MEANINGS = {
    C_PRINCIPAL_UNKNOWN: "the KDC does not know the principal",
    S_PRINCIPAL_UNKNOWN: "no account in the directory has this SPN: the server is not in the domain (an Edge "
    "Transport server), or its SPN is missing (setspn -L <server>)",
    ETYPE_NOSUPP: "the account holding the SPN has no keys the client accepts (no password set, or no AES keys)",
    CLIENT_REVOKED: "the account is disabled, locked out or expired",
    KEY_EXPIRED: "the account's password has expired",
    PREAUTH_FAILED: "the KDC refused the keytab's key: the account's password changed after the keytab was made",
    TICKET_EXPIRED: "the ticket has expired",
    CLOCK_SKEW: "clock skew: this host's clock and the KDC's differ by more than the allowed 5 minutes",
    KDC_UNREACHABLE: "no KDC of the realm answered",
    KDC_UNRESOLVED: "the realm's KDC names do not resolve",
    KDC_NOT_FOUND: "no KDC is configured for the realm (krb5.conf [realms], or DNS SRV records)",
}


class KerberosFailed(Exception):
    """The org's KDC refused the run's ticket, or could not be reached: exit 6, the reason in the report."""


@dataclass(frozen=True)
class Ticket:
    """The run's Kerberos credential: from the keytab (principal and keytab set), or the environment's cache."""

    credentials: object = field(repr=False)  # gssapi.Credentials, usage initiate
    principal: str | None = None
    keytab: Path | None = None
    ccache: str | None = None


def tls_server_end_point(certificate_der: bytes) -> bytes:
    """The TLS channel binding of a server certificate (RFC 5929 tls-server-end-point): its hash with the
    certificate's signature hash, SHA-256 for MD5 and SHA-1. What WinRM and AD's LDAP channel binding check."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    algorithm = x509.load_der_x509_certificate(certificate_der).signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate_der)
    return b"tls-server-end-point:" + digest.finalize()


def gssapi_module():
    """python-gssapi, or a ConfigError saying how to install it."""
    try:
        import gssapi
    except ImportError:
        raise ConfigError(GSSAPI_MISSING) from None
    return gssapi


def keytab_principals(path: Path) -> list[str]:
    """The principals a keytab holds (MIT keytab format, version 0x502 as ktpass, ktutil and Samba write it)."""
    data = path.read_bytes()
    if data[:2] != b"\x05\x02":
        raise ValueError("not a keytab (MIT format 0x502 expected)")
    found: list[str] = []
    offset = 2
    try:
        while offset + 4 <= len(data):
            (size,) = struct.unpack_from(">i", data, offset)
            offset += 4
            if size <= 0:  # a hole left by a removed entry
                offset += -size
                continue
            entry, offset = data[offset : offset + size], offset + size
            (count,) = struct.unpack_from(">H", entry, 0)
            pos, parts = 2, []
            for _ in range(count + 1):  # the realm, then the name's components
                (length,) = struct.unpack_from(">H", entry, pos)
                parts.append(entry[pos + 2 : pos + 2 + length].decode("utf-8"))
                pos += 2 + length
            principal = f"{'/'.join(parts[1:])}@{parts[0]}"
            if principal not in found:
                found.append(principal)
    except (struct.error, UnicodeDecodeError):
        raise ValueError("not a keytab (an entry is cut short or not UTF-8)") from None
    return found


def describe(exc: BaseException, what: str = "") -> str:
    """One line: what Kerberos said and what it means. `what` names the principal or SPN concerned."""
    code = minor_code(exc)
    meaning = MEANINGS.get(code) if code is not None else None
    said = _kerberos_words(exc)
    subject = f" ({what})" if what else ""
    if meaning:
        return f"Kerberos{subject}: {meaning} [{said}]" if said else f"Kerberos{subject}: {meaning}"
    return f"Kerberos{subject}: {said or type(exc).__name__}"


def minor_code(exc: BaseException) -> int | None:
    """The krb5 error code of a gssapi error, signed as krb5 defines it; or one found in pykerberos' message."""
    code = getattr(exc, "min_code", None)
    if isinstance(code, int) and code:
        return code - (1 << 32) if code >= 1 << 31 else code
    # pykerberos (pywinrm's Kerberos transport): "(('<major text>', 851968), ('<minor text>', -1765328377))"
    found = re.findall(r"-17653\d{5}", str(exc))
    return int(found[-1]) if found else None


def _kerberos_words(exc: BaseException) -> str:
    """The minor message Kerberos gave ("Clock skew too great"), without the GSSAPI boilerplate."""
    text = str(exc)
    minor = re.search(r"Minor \(\d+\): (.*)$", text)
    if minor:
        return minor.group(1).strip()
    pairs = re.findall(r"\('([^']*)', -?\d+\)", text)  # pykerberos' (message, code) pairs
    if pairs:
        return pairs[-1]
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def acquire(config: OrgConfig) -> Ticket | None:
    """The run's credential when anything of the org uses Kerberos, else None.

    With [kerberos], a fresh ticket from the keytab in this process's own MEMORY: cache (made the process's default
    cache too, for pywinrm); without it, the default cache of the environment (an external kinit).
    """
    if config.directory.auth != "kerberos" and config.winrm.transport != "kerberos":
        return None
    settings = config.kerberos
    if settings is None and config.directory.auth != "kerberos":
        return None  # WinRM alone, on the cache of an external kinit: pywinrm finds it as before
    if settings is not None and settings.config_file is not None:
        os.environ["KRB5_CONFIG"] = str(settings.config_file)  # read by libkrb5 at each context, so set first
    gssapi = gssapi_module()
    if settings is None:
        try:
            return Ticket(gssapi.Credentials(usage="initiate"))
        except gssapi.exceptions.GSSError as exc:
            raise KerberosFailed(
                f"{describe(exc, 'the ticket cache')}; take a ticket first (kinit), or name a keytab in [kerberos]"
            ) from None
    keytab = _keytab(config)
    principal = config.kerberos_principal()
    held = _principals(config, keytab)
    if principal not in held:
        holds = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "") if held else "nothing"
        raise ConfigError(
            f"{config.source}: [kerberos] principal: {keytab} holds no key for {principal} (it holds: {holds})"
        )
    ccache = f"MEMORY:exchange-compliance-{secrets.token_hex(8)}"
    name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
    try:
        credentials = gssapi.Credentials(
            name=name, usage="initiate", store={"client_keytab": str(keytab), "ccache": ccache}
        )
    except gssapi.exceptions.GSSError as exc:
        raise KerberosFailed(f"no ticket for {principal} from {keytab}: {describe(exc)}") from None
    # pywinrm's Kerberos transport asks for the default credential: this cache, renewable from the same keytab.
    os.environ["KRB5CCNAME"] = ccache
    os.environ["KRB5_CLIENT_KTNAME"] = str(keytab)
    return Ticket(credentials, principal, keytab, ccache)


def _keytab(config: OrgConfig) -> Path:
    variable = config.kerberos.keytab_env  # type: ignore[union-attr]
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"{config.source}: [kerberos] keytab_env: environment variable {variable} is not set")
    # KRB5_CLIENT_KTNAME may carry a type prefix; only file keytabs are read here.
    return Path(value.removeprefix("FILE:"))


def _principals(config: OrgConfig, keytab: Path) -> list[str]:
    where = f"{config.source}: [kerberos] keytab_env"
    try:
        return keytab_principals(keytab)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the keytab {keytab}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {keytab}: {exc}") from None
