"""The TLS contexts both daemons build, and which hosts count as this machine."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from coordinator.tlsgen import create_ca, create_cert
from shared.tls import client_context, is_loopback, server_context


class TestIsLoopback:
    @pytest.mark.parametrize(
        "host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost"]
    )
    def test_loopback_hosts(self, host: str) -> None:
        """Loopback addresses (v4, v6, bracketed) and the name localhost are this machine."""
        assert is_loopback(host)

    @pytest.mark.parametrize(
        "host",
        ["0.0.0.0", "::", "10.0.0.1", "coordinator.example", "localhost.evil.example"],  # noqa: S104 - data
    )
    def test_other_hosts(self, host: str) -> None:
        """Wildcard binds, other addresses and other names are not."""
        assert not is_loopback(host)


class TestContexts:
    @pytest.fixture
    def pki(self, tmp_path: Path) -> Path:
        create_ca(tmp_path / "ca")
        create_cert(tmp_path / "ca", tmp_path, name="server", server=True)
        create_cert(tmp_path / "ca", tmp_path, name="agent", server=False)
        return tmp_path

    def test_server_context_is_tls12_plus_without_client_certs(self, pki: Path) -> None:
        """Without a client CA the server asks for no certificate; TLS 1.2 is the minimum."""
        ctx = server_context(pki / "server.pem", pki / "server-key.pem")
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.verify_mode == ssl.CERT_NONE

    def test_server_context_with_client_ca_makes_the_certificate_optional(self, pki: Path) -> None:
        """With a client CA the handshake verifies a certificate when one is presented, but
        lets certificate-less operators in (the middleware guards the agent endpoints)."""
        ctx = server_context(pki / "server.pem", pki / "server-key.pem", pki / "ca" / "ca.pem")
        assert ctx.verify_mode == ssl.CERT_OPTIONAL

    def test_client_context_verifies_the_server(self, pki: Path) -> None:
        """The client verifies the server's certificate and name, with TLS 1.2 at least."""
        ctx = client_context(pki / "ca" / "ca.pem", pki / "agent.pem", pki / "agent-key.pem")
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.check_hostname
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2

    def test_a_key_that_does_not_match_is_refused(self, pki: Path) -> None:
        """A certificate with another certificate's key is an error at load time."""
        with pytest.raises(ssl.SSLError):
            server_context(pki / "server.pem", pki / "agent-key.pem")
