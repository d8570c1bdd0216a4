"""The coordinator's TLS: certificates from ``fleetwave tls``, the transport rules of its
configuration, the agent endpoints that need a client certificate, and SIGHUP's reload."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from structlog.testing import capture_logs

from coordinator.api.deps import DEPS
from coordinator.cli import cli
from coordinator.config import CoordinatorConfig, load_config
from coordinator.main import reload_certificate, serve
from coordinator.tlsgen import CA_VALIDITY, CERT_VALIDITY, create_ca, create_cert
from shared.errors import ValidationFailed
from shared.tls import server_context
from tests.coordinator.conftest import ADMIN, JOIN, Harness


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return dns, ips


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


class TestCertificates:
    def test_ca_is_a_p256_ca_for_five_years(self, tmp_path: Path) -> None:
        """The CA is a self-signed ECDSA P-256 CA valid for 5 years."""
        issued = create_ca(tmp_path)
        ca = load(issued.cert)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        key = ca.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
        assert ca.not_valid_after_utc - ca.not_valid_before_utc >= CA_VALIDITY
        ca.verify_directly_issued_by(ca)

    def test_server_certificate_names_every_address(self, tmp_path: Path) -> None:
        """A server certificate is serverAuth, signed by the CA, for its name, the given DNS
        names and IPs, plus localhost and 127.0.0.1; valid one year."""
        create_ca(tmp_path / "ca")
        issued = create_cert(
            tmp_path / "ca",
            tmp_path,
            name="coord",
            server=True,
            dns=("coord.example",),
            ips=("10.0.0.7", "::1"),
        )
        cert = load(issued.cert)
        cert.verify_directly_issued_by(load(tmp_path / "ca" / "ca.pem"))
        assert usages(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
        dns, ips = sans(cert)
        assert set(dns) == {"coord.example", "coord", "localhost"}
        assert set(ips) == {"10.0.0.7", "::1", "127.0.0.1"}
        validity = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert CERT_VALIDITY <= validity <= CERT_VALIDITY + datetime.timedelta(hours=1)
        assert cert.serial_number == issued.serial

    def test_agent_certificate_is_for_clients_only(self, tmp_path: Path) -> None:
        """An agent certificate is clientAuth with its name as the common name."""
        create_ca(tmp_path / "ca")
        cert = load(create_cert(tmp_path / "ca", tmp_path, name="web-07", server=False).cert)
        assert usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert cert.subject.rfc4514_string() == "CN=web-07"

    def test_files_are_0600(self, tmp_path: Path) -> None:
        """Every file written, keys and certificates, is readable by its owner only."""
        create_ca(tmp_path / "ca")
        create_cert(tmp_path / "ca", tmp_path / "out", name="a", server=False)
        files = [*(tmp_path / "ca").iterdir(), *(tmp_path / "out").iterdir()]
        assert len(files) == 4
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}


class TestTlsCommands:
    def invoke(self, *args: str) -> Any:
        return CliRunner().invoke(cli, list(args), prog_name="fleetwave")

    def test_ca_then_server_and_agent_certificates(self, tmp_path: Path) -> None:
        """`tls ca create` then `tls cert create --server/--agent` write the named files."""
        ca = str(tmp_path / "ca")
        assert self.invoke("tls", "ca", "create", "--out", ca).exit_code == 0
        out = str(tmp_path / "certs")
        server = self.invoke(
            "tls", "cert", "create", "--ca", ca, "--server", "--name", "coord",
            "--dns", "coord.example", "--ip", "10.0.0.7", "--out", out,
        )  # fmt: skip
        assert server.exit_code == 0, server.output
        agent = self.invoke(
            "tls", "cert", "create", "--ca", ca, "--agent", "--name", "n1", "--out", out
        )
        assert agent.exit_code == 0, agent.output
        assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == [
            "coord-key.pem", "coord.pem", "n1-key.pem", "n1.pem",
        ]  # fmt: skip
        assert sans(load(tmp_path / "certs" / "coord.pem"))[1][0] == "10.0.0.7"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--name", "x"], "--server (coordinator) or --agent"),
            (["--agent", "--name", "x", "--ip", "not-an-ip"], "is not an IP address"),
            (["--agent", "--name", "../escape"], "it names the files"),
        ],
    )
    def test_usage_errors_exit_2(self, tmp_path: Path, args: list[str], message: str) -> None:
        """A missing kind or a bad address exits 2 naming the fix."""
        create_ca(tmp_path / "ca")
        result = self.invoke(
            "tls", "cert", "create", "--ca", str(tmp_path / "ca"), "--out", str(tmp_path), *args
        )
        assert result.exit_code == 2
        assert message in result.output

    def test_missing_ca_exits_2_naming_it(self, tmp_path: Path) -> None:
        """`tls cert create` with a directory holding no CA says which file is missing."""
        result = self.invoke(
            "tls", "cert", "create", "--ca", str(tmp_path / "none"), "--agent",
            "--name", "x", "--out", str(tmp_path),
        )  # fmt: skip
        assert result.exit_code == 2
        assert "ca.pem" in result.output

    def test_an_existing_ca_is_never_replaced(self, tmp_path: Path) -> None:
        """Creating a CA where one exists fails and leaves the old one in place."""
        before = create_ca(tmp_path).serial
        result = self.invoke("tls", "ca", "create", "--out", str(tmp_path))
        assert result.exit_code == 2
        assert load(tmp_path / "ca.pem").serial_number == before


class TestTransportConfig:
    @pytest.mark.parametrize("listen", ["127.0.0.1:7400", "localhost:7400", "[::1]:7400"])
    def test_loopback_without_tls_is_fine(self, listen: str) -> None:
        """The default loopback setups need no TLS (the demo, the tests)."""
        assert load_config(None, {}, {"listen": listen}).tls is False

    @pytest.mark.parametrize("listen", ["0.0.0.0:7400", ":7400", "10.0.0.7:7400"])
    def test_plain_http_elsewhere_is_refused_naming_the_option(self, listen: str) -> None:
        """A non-loopback address without TLS is refused; the error names the way out."""
        with pytest.raises(ValidationFailed) as refused:
            load_config(None, {}, {"listen": listen})
        [error] = refused.value.errors
        assert error.field == "listen"
        assert "--allow-plain-http" in error.message
        assert "--tls-cert" in error.message

    def test_allow_plain_http_from_flag_env_or_file(self, tmp_path: Path) -> None:
        """--allow-plain-http, FLEETWAVE_ALLOW_PLAIN_HTTP or the file key allow it."""
        flags = {"listen": "0.0.0.0:7400"}
        assert load_config(None, {}, flags | {"allow_plain_http": True}).allow_plain_http
        assert load_config(None, {"FLEETWAVE_ALLOW_PLAIN_HTTP": "true"}, flags).allow_plain_http
        file = tmp_path / "c.toml"
        file.write_text('listen = "0.0.0.0:7400"\nallow_plain_http = true\n')
        assert load_config(file, {}, {}).allow_plain_http

    def test_tls_from_env_allows_any_address(self) -> None:
        """FLEETWAVE_TLS_* set HTTPS (and mTLS), which may listen anywhere."""
        env = {
            "FLEETWAVE_TLS_CERT": "/c.pem",
            "FLEETWAVE_TLS_KEY": "/k.pem",
            "FLEETWAVE_TLS_CLIENT_CA": "/ca.pem",
        }
        config = load_config(None, env, {"listen": "0.0.0.0:7400"})
        assert config.tls
        assert config.tls_client_ca == Path("/ca.pem")

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"tls_cert": "/c.pem"}, "tls_key"),
            ({"tls_key": "/k.pem"}, "tls_cert"),
            ({"tls_client_ca": "/ca.pem"}, "tls_client_ca"),
        ],
    )
    def test_half_a_tls_setup_is_refused(self, options: dict[str, str], field: str) -> None:
        """A certificate without its key (or the reverse), or a client CA without TLS."""
        with pytest.raises(ValidationFailed) as refused:
            load_config(None, {}, options)
        assert [e.field for e in refused.value.errors] == [field]

    def test_the_command_exits_2(self, tmp_path: Path) -> None:
        """`fleetwave coordinator` on 0.0.0.0 without TLS exits 2 before starting."""
        result = CliRunner().invoke(
            cli,
            ["coordinator", "--listen", "0.0.0.0:7400", "--data-dir", str(tmp_path / "d")],
            env={"FLEETWAVE_CONFIG": ""},
        )
        assert result.exit_code == 2
        assert "--allow-plain-http" in result.output
        assert not (tmp_path / "d").exists()


class TestServeAndReload:
    @pytest.fixture
    def pki(self, tmp_path: Path) -> Path:
        create_ca(tmp_path / "ca")
        create_cert(tmp_path / "ca", tmp_path, name="server", server=True)
        return tmp_path

    async def test_unreadable_tls_files_stop_the_start_early(self, tmp_path: Path) -> None:
        """A missing certificate is a configuration error before any state is created."""
        data_dir = tmp_path / "data"
        config = CoordinatorConfig(
            data_dir=data_dir, tls_cert=tmp_path / "no.pem", tls_key=tmp_path / "no-key.pem"
        )
        with pytest.raises(ValidationFailed) as refused:
            await serve(config)
        assert refused.value.errors[0].field == "tls_cert"
        assert sorted(p.name for p in data_dir.iterdir()) == []

    def test_reload_with_a_bad_file_keeps_serving_the_old_pair(self, pki: Path) -> None:
        """A failed reload is logged and leaves the context as it was."""
        ctx = server_context(pki / "server.pem", pki / "server-key.pem")
        (pki / "broken.pem").write_text("not a certificate")
        with capture_logs() as logs:
            reload_certificate(ctx, pki / "broken.pem", pki / "server-key.pem")
            reload_certificate(ctx, pki / "server.pem", pki / "server-key.pem")
        assert [e["event"] for e in logs] == ["tls_reload_failed", "tls_reloaded"]
        assert isinstance(ctx, ssl.SSLContext)


class TestClientCertificateRule:
    async def test_agent_endpoints_need_a_client_certificate(self, harness: Harness) -> None:
        """With mTLS on, an agent request over a connection without a verified client
        certificate gets 401 naming the problem, even with a valid join token."""
        harness.client.app[DEPS].require_client_cert = True
        resp = await harness.client.post(
            "/v1/agent/register", json={"join_token": JOIN, "name": "n1", "labels": {}}
        )
        assert resp.status == 401
        body = await resp.json()
        assert "client certificate" in body["error"]["message"]

    async def test_operators_need_only_their_token(self, harness: Harness) -> None:
        """With mTLS on, operator endpoints still take the bearer token alone."""
        harness.client.app[DEPS].require_client_cert = True
        resp = await harness.client.get("/v1/nodes", headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.status == 200
