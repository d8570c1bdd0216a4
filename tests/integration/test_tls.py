"""TLS end to end with real processes, real certificates and real sockets: a coordinator
serving HTTPS with mTLS, agents with and without the right client certificate, operators
with a bearer token only, and a certificate rotated by SIGHUP under a connected agent."""

from __future__ import annotations

import json
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509

from coordinator.cli import cli
from coordinator.client import ApiClient, ApiError
from coordinator.demo.fleet import ADMIN_TOKEN, LocalFleet, wait_for
from coordinator.tlsgen import create_ca, create_cert
from shared.tls import client_context
from tests.helpers import JOBS_AS_PYTEST_USER
from tests.integration.conftest import print_logs_on_failure

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def tls_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """A coordinator over HTTPS that requires agent client certificates from the fleet's CA."""
    fleet = LocalFleet(
        tmp_path,
        heartbeat_interval="1s",
        heartbeat_ttl="10s",
        tls=True,
        policy=JOBS_AS_PYTEST_USER,
    )
    try:
        fleet.start_coordinator()
        yield fleet
    finally:
        fleet.close()


def sleeper(name: str) -> dict[str, Any]:
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    return {"name": name, "task": {"command": command, "kill_timeout": "2s"}}


def served_serial(fleet: LocalFleet) -> int:
    """The serial of the certificate the coordinator shows a brand-new connection."""
    context = client_context(fleet.ca_file)
    with (
        socket.create_connection(("127.0.0.1", fleet.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def agent_log(fleet: LocalFleet, name: str) -> str:
    return fleet.agents[name].log_path.read_text(errors="replace")


def test_agent_over_mtls_runs_a_job_and_keeps_running_through_a_sighup_rotation(
    tls_fleet: LocalFleet,
) -> None:
    """An agent with a CA-signed client certificate registers and runs a job over HTTPS; a
    SIGHUP swaps the coordinator's certificate for new handshakes while the agent stays
    connected, ready and able to run the next job; the operator needs only its token."""
    fleet = tls_fleet
    try:
        fleet.start_agent("n1")
        [node] = fleet.wait_nodes_ready(1)
        fleet.api.request("PUT", "/v1/jobs/one", sleeper("one"))
        fleet.wait_state("one", "running", timeout=30)

        old_serial = served_serial(fleet)
        new = create_cert(
            fleet.ca_file.parent, fleet.tls_dir, name="coordinator", server=True
        )  # same paths as the running coordinator's files
        assert new.serial != old_serial
        assert fleet.coordinator is not None
        fleet.coordinator.popen.send_signal(signal.SIGHUP)
        wait_for("the new certificate", lambda: served_serial(fleet) == new.serial, 10)

        fleet.api.request("PUT", "/v1/jobs/two", sleeper("two"))
        fleet.wait_state("two", "running", timeout=30)
        assert fleet.coordinator.alive()
        assert fleet.agents["n1"].alive()
        [after] = fleet.wait_nodes_ready(1)
        assert after["id"] == node["id"]
        assert "coordinator_unreachable" not in agent_log(fleet, "n1")

        # The agent's own certificate renewed in place: SIGHUP (`systemctl reload`) loads
        # it for new connections, and the agent lives on.
        create_cert(fleet.ca_file.parent, fleet.tls_dir, name="agent-n1", server=False)
        fleet.agents["n1"].popen.send_signal(signal.SIGHUP)
        wait_for("the agent to reload", lambda: "tls_reloaded" in agent_log(fleet, "n1"), 10)
        fleet.api.request("PUT", "/v1/jobs/three", sleeper("three"))
        fleet.wait_state("three", "running", timeout=30)
        assert fleet.agents["n1"].alive()
    except BaseException:
        print(print_logs_on_failure(fleet))
        raise


def test_agents_without_a_certificate_of_the_ca_are_refused(
    tls_fleet: LocalFleet, tmp_path: Path
) -> None:
    """An agent with no client certificate gets a 401 naming the certificate; one whose
    certificate comes from another CA fails the handshake; neither becomes a node, while a
    bearer-token operator without any certificate is served and a plain-HTTP caller is not."""
    fleet = tls_fleet
    try:
        fleet.start_agent("nocert", client_cert=False)
        other = tmp_path / "other-ca"
        create_ca(other, "Another CA")
        stranger = create_cert(other, other, name="stranger", server=False)
        fleet.start_agent(
            "stranger", extra=["--tls-cert", str(stranger.cert), "--tls-key", str(stranger.key)]
        )
        wait_for(
            "the certificate-less agent to be refused",
            lambda: "require a client certificate" in agent_log(fleet, "nocert"),
            20,
        )
        wait_for(
            "the other CA's agent to be refused",
            lambda: "coordinator_unreachable" in agent_log(fleet, "stranger"),
            20,
        )
        assert fleet.nodes() == []  # the operator, token only: served over HTTPS
        listed = CliRunner().invoke(
            cli,
            ["--addr", fleet.url, "--ca-file", str(fleet.ca_file), "node", "list", "--json"],
            env={"FLEETWAVE_TOKEN": ADMIN_TOKEN},
        )
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.output)["nodes"] == []

        bare = ApiClient(fleet.url, None, timeout=5, ssl_context=client_context(fleet.ca_file))
        with pytest.raises(ApiError) as refused:
            bare.request("GET", "/v1/agent/assignments")
        assert refused.value.status == 401
        assert "client certificate" in refused.value.message

        plain = ApiClient(f"http://127.0.0.1:{fleet.port}", ADMIN_TOKEN, timeout=5)
        with pytest.raises(ApiError):
            plain.request("GET", "/v1/nodes")
        with pytest.raises(ApiError) as unverified:
            ApiClient(fleet.url, ADMIN_TOKEN, timeout=5).request("GET", "/v1/nodes")
        assert "CERTIFICATE_VERIFY_FAILED" in unverified.value.message
    except BaseException:
        print(print_logs_on_failure(fleet))
        raise
