"""TLS for both daemons and the CLI: the ``ssl.SSLContext`` each side builds, and which
addresses may go without it (loopback only, unless the operator allows plain HTTP)."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS ≥ 1.2 server context; with ``client_ca`` it asks every client for a certificate
    and verifies one signed by that CA when given.

    ``CERT_OPTIONAL``, not ``CERT_REQUIRED``: operators connect with bearer tokens and no
    certificate; the coordinator's middleware refuses agent paths without a verified one.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca_file: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A TLS ≥ 1.2 client context that verifies the server against ``ca_file`` (else the
    system's CAs) and presents ``cert``/``key`` when given."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx
