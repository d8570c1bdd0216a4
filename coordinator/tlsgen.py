"""A private CA and its server and agent certificates, for ``fleetwave tls``: ECDSA P-256,
written as PEM files readable only by their owner (0600), like ``nomad tls``."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=5 * 365)
CERT_VALIDITY = datetime.timedelta(days=365)
CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
BACKDATE = datetime.timedelta(minutes=5)
"""Certificates start a little in the past: a host whose clock is slightly behind accepts them."""


@dataclass(frozen=True)
class Issued:
    """The files one ``create`` wrote."""

    cert: Path
    key: Path
    serial: int


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to a new or replaced file that only its owner can read (0600 from birth)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # a file that existed keeps its old mode through O_CREAT


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(
    out: Path, name: str = "Fleetwave CA", now: datetime.datetime | None = None
) -> Issued:
    """A self-signed CA (5 years) as ``out/ca.pem`` and ``out/ca-key.pem``."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    issued = Issued(out / CA_CERT, out / CA_KEY, cert.serial_number)
    _write(issued.key, _key_pem(key))
    _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM))
    return issued


def load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA that ``create_ca`` wrote into ``ca_dir``; ValueError naming what is wrong."""
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(
            f"cannot read the CA in {ca_dir}: {exc.strerror}: {exc.filename}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_dir / CA_KEY} is not an ECDSA key")
    return cert, key


def create_cert(
    ca_dir: Path,
    out: Path,
    *,
    name: str,
    server: bool,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    now: datetime.datetime | None = None,
) -> Issued:
    """A certificate (1 year) signed by the CA in ``ca_dir``, as ``out/<name>.pem`` and
    ``out/<name>-key.pem``: serverAuth for a coordinator, clientAuth for an agent.

    ``name`` is the common name and, for a server, also a DNS name; a server always gets
    ``localhost`` and ``127.0.0.1`` too, so the coordinator's own host can reach it.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key = load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [*dns, name, "localhost"] if server else [*dns]
    addresses = [*ips, "127.0.0.1"] if server else [*ips]
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(names)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses)]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + CERT_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(out / f"{name}.pem", out / f"{name}-key.pem", cert.serial_number)
    _write(issued.key, _key_pem(key))
    _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM))
    return issued
