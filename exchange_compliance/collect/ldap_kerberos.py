"""The LDAP bind with Kerberos: SASL GSSAPI (RFC 4752) on an open ldap3 connection, with what ldap3 2.9.1's own
GSSAPI bind lacks.

- Without TLS (389), the SASL security layer: every LDAP message after the bind is wrapped by Kerberos,
  signed and sealed (ldap3 only implements "no security layer", which a DC requiring LDAP signing refuses).
- Over TLS (LDAPS or StartTLS), the TLS channel binding (tls-server-end-point, RFC 5929) in the Kerberos
  authenticator, which a DC enforcing LDAP channel binding (LdapEnforceChannelBinding = 2) checks, and no
  security layer: Active Directory and Samba both refuse signing or sealing inside TLS. Samba's default
  (`ldap server require strong auth = yes`) refuses SASL over TLS altogether; `allow_sasl_over_tls` allows it,
  as AD does.
"""

from __future__ import annotations

import socket
import struct

import ldap3
from ldap3.core.exceptions import LDAPBindError, LDAPSocketReceiveError
from ldap3.protocol.sasl.sasl import send_sasl_negotiation

from .kerberos import Ticket, describe, gssapi_module, tls_server_end_point

NO_LAYER, INTEGRITY, CONFIDENTIALITY = 1, 2, 4
# The largest wrapped message this client takes: the SASL maximum (3 bytes), as a page of entries can be large.
MAX_RECEIVE = 0xFFFFFF
SASL_BIND_IN_PROGRESS = 14
STRONGER_AUTH_REQUIRED = 8


def bind(connection: ldap3.Connection, host: str, ticket: Ticket, *, tls: bool) -> int:
    """Bind `connection` (open, TLS started if any) as the ticket's principal to ldap/<host>; LDAPBindError says why
    not, in one line. Returns the security layer in force: NO_LAYER over TLS, CONFIDENTIALITY without."""
    gssapi = gssapi_module()
    connection.sasl_mechanism = ldap3.KERBEROS
    layer = NO_LAYER if tls else CONFIDENTIALITY
    certificate = connection.socket.getpeercert(binary_form=True) if tls else None
    try:
        context = security_context(ticket, "ldap", host, sealed=not tls, certificate=certificate)
        result = _negotiate(connection, context, layer)
    except gssapi.exceptions.GSSError as exc:
        raise LDAPBindError(describe(exc, f"ldap/{host}")) from None
    if result.get("result") != 0:
        reason = f"{result.get('description')}: {result.get('message') or ''}".strip(": ")
        if tls and result.get("result") == STRONGER_AUTH_REQUIRED:
            reason += ' (the DC takes no SASL bind over TLS: use tls = "none", which Kerberos seals)'
        raise LDAPBindError(f"Kerberos bind to ldap/{host} refused: {reason}")
    connection.bound = True
    if layer != NO_LAYER:
        connection.socket = SaslSocket(connection.socket, context)
    return layer


def security_context(ticket: Ticket, service: str, host: str, *, sealed: bool, certificate: bytes | None) -> object:
    """The initiator's Kerberos context for <service>/<host>, mutually authenticated; able to sign and seal when
    `sealed`; bound to the TLS channel of the server `certificate` (DER) when one is given."""
    gssapi = gssapi_module()
    flags = gssapi.RequirementFlag.mutual_authentication
    if sealed:
        flags |= gssapi.RequirementFlag.integrity | gssapi.RequirementFlag.confidentiality
    bindings = None
    if certificate is not None:
        bindings = gssapi.raw.ChannelBindings(application_data=tls_server_end_point(certificate))
    return gssapi.SecurityContext(
        name=gssapi.Name(f"{service}@{host}", gssapi.NameType.hostbased_service),
        creds=ticket.credentials,
        usage="initiate",
        mech=gssapi.MechType.kerberos,
        flags=flags,
        channel_bindings=bindings,
    )


def _negotiate(connection: ldap3.Connection, context: object, layer: int) -> dict:
    """The SASL GSSAPI exchange: the Kerberos tokens, then the security layer (RFC 4752 section 3.1)."""
    token = context.step()  # type: ignore[attr-defined]
    while True:
        result = send_sasl_negotiation(connection, None, token or b"")
        if result.get("result") != SASL_BIND_IN_PROGRESS:
            return result  # refused (or a server that skips the layer negotiation: not a DC)
        received = result.get("saslCreds") or b""
        if context.complete:  # type: ignore[attr-defined]
            break
        token = context.step(received)  # type: ignore[attr-defined]
    # The DC's offer: which layers, and the largest message it takes.
    offer = context.unwrap(received).message  # type: ignore[attr-defined]
    if len(offer) != 4:
        raise LDAPBindError("Kerberos bind: the DC's security layer offer is malformed")
    if not offer[0] & layer:
        offered = ", ".join(n for bit, n in ((1, "none"), (2, "signing"), (4, "sealing")) if offer[0] & bit)
        raise LDAPBindError(f"Kerberos bind: the DC offers security layers {offered or 'none'}, not the one needed")
    size = MAX_RECEIVE if layer != NO_LAYER else 0
    answer = bytes([layer]) + size.to_bytes(3, "big")
    return send_sasl_negotiation(connection, None, context.wrap(answer, False).message)  # type: ignore[attr-defined]


class SaslSocket:
    """The connection's socket, every LDAP message after the bind signed and sealed with the Kerberos context
    (RFC 4752): a 4-byte length and a wrap token each way. ldap3 reads and writes through sendall/recv only."""

    def __init__(self, sock: socket.socket, context: object) -> None:
        self._socket = sock
        self._context = context
        self._plain = b""

    def sendall(self, data: bytes) -> None:
        token = self._context.wrap(bytes(data), True).message  # type: ignore[attr-defined]
        self._socket.sendall(struct.pack(">I", len(token)) + token)

    def recv(self, size: int) -> bytes:
        if not self._plain:
            header = self._read(4)
            if not header:
                return b""  # the DC closed the connection
            token = self._read(struct.unpack(">I", header)[0])
            unwrapped = self._context.unwrap(token)  # type: ignore[attr-defined]
            if not unwrapped.encrypted:
                raise LDAPSocketReceiveError("the DC sent an LDAP message that is not sealed")
            self._plain = unwrapped.message
        data, self._plain = self._plain[:size], self._plain[size:]
        return data

    def _read(self, count: int) -> bytes:
        chunks, left = [], count
        while left:
            chunk = self._socket.recv(left)
            if not chunk:
                if chunks:
                    raise LDAPSocketReceiveError("the DC closed the connection inside a sealed message")
                return b""
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def __getattr__(self, name: str) -> object:
        return getattr(self._socket, name)  # settimeout, shutdown, close, getpeername, ...
