"""``fleetwave tls``: a private CA and the coordinator's and agents' certificates."""

from __future__ import annotations

import re
from pathlib import Path

import click

from coordinator.cliutil import fail


@click.group()
def tls() -> None:
    """Make a private CA and server (coordinator) and agent certificates."""


@tls.group("ca")
def ca() -> None:
    """The private certificate authority."""


@ca.command("create")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for ca.pem and ca-key.pem (files mode 0600).",
)
@click.option("--name", default="Fleetwave CA", show_default=True, help="The CA's common name.")
def ca_create(out: Path, name: str) -> None:
    """Create a CA (ECDSA P-256, valid 5 years): ca.pem and ca-key.pem in --out."""
    from coordinator.tlsgen import CA_CERT, create_ca

    if (out / CA_CERT).exists():
        fail(f"{out / CA_CERT} exists: refusing to replace a CA (remove it first)")
    issued = create_ca(out, name)
    click.echo(f"==> CA certificate: {issued.cert}\n==> CA key (keep it secret): {issued.key}")


@tls.group("cert")
def cert() -> None:
    """Certificates signed by the private CA."""


@cert.command("create")
@click.option(
    "--ca",
    "ca_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory holding ca.pem and ca-key.pem (from `tls ca create`).",
)
@click.option("--server", "kind", flag_value="server", help="A coordinator (serverAuth) cert.")
@click.option("--agent", "kind", flag_value="agent", help="An agent (clientAuth) certificate.")
@click.option("--name", required=True, help="Common name; the files are NAME.pem, NAME-key.pem.")
@click.option("--dns", multiple=True, metavar="HOST", help="DNS name to add; repeat for several.")
@click.option("--ip", multiple=True, metavar="ADDR", help="IP address to add; repeat for several.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for NAME.pem and NAME-key.pem (files mode 0600).",
)
def cert_create(
    ca_dir: Path,
    kind: str | None,
    name: str,
    dns: tuple[str, ...],
    ip: tuple[str, ...],
    out: Path,
) -> None:
    """Create a certificate (ECDSA P-256, valid 1 year) signed by the CA in --ca.

    A --server certificate also names NAME, localhost and 127.0.0.1; give every name and
    address agents use to reach the coordinator with --dns and --ip.
    """
    import ipaddress

    from coordinator.tlsgen import create_cert

    if kind is None:
        fail("say which kind of certificate: --server (coordinator) or --agent")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}", name):
        fail(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names the files)")
    for address in ip:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            fail(f"--ip {address!r} is not an IP address")
    try:
        issued = create_cert(ca_dir, out, name=name, server=kind == "server", dns=dns, ips=ip)
    except ValueError as exc:
        fail(str(exc))
    click.echo(f"==> certificate: {issued.cert}\n==> key: {issued.key}")
