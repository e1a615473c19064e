"""The TLS probe: what a front end really gets when it proxies to a mailbox server's back end on 444."""

from __future__ import annotations

import socket
import ssl

from ..facts import Handshake

# The Exchange Back End site always listens on 444 (setup binds it; front ends proxy to it). Not a setting:
# the probe (probe.ps1) and the judges read the 444 bindings, so the handshake must be made there too.
BACKEND_PORT = 444


class HandshakeFailed(Exception):
    """No TLS handshake could be completed; the message says where and why."""


def fetch_certificate(host: str, address: str, timeout: float, port: int = BACKEND_PORT) -> Handshake:
    """Handshake with `address:port`, sending `host` as SNI, and return the leaf certificate.

    The certificate is deliberately not trusted or name-checked here: the judges decide whether it is
    valid for the host, and an admin needs to see the certificate even (especially) when it is wrong.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Old back ends (Exchange 2013 on Server 2012) may still speak TLS 1.0; seeing their certificate matters
    # more here than the protocol version, which is not what this probe judges.
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with (
            socket.create_connection((address, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
    except (OSError, ssl.SSLError) as exc:
        # Not the host nor its address: the row names the server, and one reason on many servers is said once.
        raise HandshakeFailed(f"the handshake failed: {exc.strerror or exc or type(exc).__name__}") from None
    if not der:
        raise HandshakeFailed("the server presented no certificate")
    return Handshake(host=host, address=address, port=port, der=der, tls_version=version)
