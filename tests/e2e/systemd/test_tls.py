"""TLS under the real units, set up by running docs/install.md §7 as it is written: the
coordinator serves HTTPS with mTLS, the agent registers over it and runs a job, an agent
without a client certificate is refused, and `systemctl reload` rotates the server
certificate under a connected agent. One booted container serves the whole class."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.systemd.install_md import Block, edit_config, tls_section
from tests.e2e.systemd.machine import ADMIN_TOKEN, NODE_NAME, SystemdHost
from tests.e2e.systemd.test_units import AGENT, COORDINATOR, agent_status, deploy_web, wait_ready

pytestmark = [pytest.mark.slow]

WORKDIR = "/root/fleet"
"""The operator's working directory of §7 (``./fleet-ca``, ``./certs``); here the container
plays the operator's workstation, the coordinator host and the agent host at once."""
COORDINATOR_HOST = "coordinator.example.internal"
"""The coordinator's name in §7; the container's /etc/hosts points it at loopback."""
CA_FILE = "/etc/fleetwave/tls/ca.pem"
SERVER_CERT = "/etc/fleetwave/tls/coordinator.pem"
NO_CERT_AGENT = "fleetwave-agent-nocert"

PREAMBLE = (
    "export PATH=/opt/fleetwave/bin:$PATH\n"  # §1 installs the CLI there
    f"export FLEETWAVE_TOKEN={ADMIN_TOKEN}\n"  # the operator's token (§2)
    f"cd {WORKDIR}\n"
)

SERVED_CERTIFICATE = """
import hashlib, socket, ssl, sys
ca, host = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=ca)
with socket.create_connection((host, 7400), timeout=5) as raw:
    with context.wrap_socket(raw, server_hostname=host) as tls:
        print(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
"""
"""Prints the SHA-256 of the certificate a brand-new, verified TLS connection is shown."""

FILE_CERTIFICATE = """
import hashlib, ssl, sys
print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest())
"""

COORDINATOR_CONNECTIONS = """
import os, sys
pid = sys.argv[1]
sockets = set()
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        sockets.add(target[8:-1])
for line in open(f"/proc/{pid}/net/tcp").readlines()[1:]:
    fields = line.split()
    if fields[3] == "01" and fields[2].endswith(":1CE8") and fields[9] in sockets:
        print(int(fields[1].split(":")[1], 16))
"""
"""Prints the local ports of process ``pid``'s established TCP connections to port 7400."""


def run_block(host: SystemdHost, block: Block) -> str:
    """Do what a block of §7 says on the container; a shell block's output."""
    if block.lang == "sh":
        return host.run(["sh", "-e", "-c", PREAMBLE + block.text], check=True).stdout
    assert block.lang == "toml", block
    assert block.target, f"no config file named before {block}"
    config = host.run(["cat", block.target], check=True).stdout
    host.run(["tee", block.target], input=edit_config(config, block.text), check=True)
    return ""


def prepare_hosts(root: Path) -> None:
    """Before boot: the agent host is set up after the coordinator's TLS (§7 step 4), so the
    agent must not start and register over plain HTTP first; and the coordinator's name
    resolves to this machine."""
    (root / "etc/systemd/system/multi-user.target.wants/fleetwave-agent.service").unlink()
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.0.1 {COORDINATOR_HOST}\n")


@pytest.fixture(scope="class")
def tls_host(systemd_images: list[Path]) -> Iterator[SystemdHost]:
    """A container where the installed coordinator was switched to HTTPS with mTLS and the
    agent host set up afterwards, by the commands of install.md §7 steps 1 to 5."""
    with SystemdHost(systemd_images, prepare=prepare_hosts) as host:
        host.run(["mkdir", "-p", WORKDIR], check=True)
        setup, _ = tls_section()
        for block in setup:
            run_block(host, block)
        host.coordinator = f"https://{COORDINATOR_HOST}:7400"
        host.ca_file = CA_FILE
        yield host


def journal_events(host: SystemdHost, unit: str, event: str) -> list[dict[str, object]]:
    """The unit's JSON log lines whose event is ``event``, oldest first."""
    lines = host.journal(unit, lines=1000).splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in events if e.get("event") == event]


def served_certificate(host: SystemdHost) -> str:
    return host.run(
        ["python3", "-c", SERVED_CERTIFICATE, CA_FILE, COORDINATOR_HOST], check=True
    ).stdout.strip()


def certificate_file(host: SystemdHost, path: str) -> str:
    return host.run(["python3", "-c", FILE_CERTIFICATE, path], check=True).stdout.strip()


def coordinator_connections(host: SystemdHost, pid: int) -> set[int]:
    out = host.run(["python3", "-c", COORDINATOR_CONNECTIONS, str(pid)], check=True).stdout
    return {int(port) for port in out.split()}


def node(host: SystemdHost, name: str = NODE_NAME) -> dict[str, str] | None:
    nodes = host.api("GET", "/v1/nodes").body["nodes"]
    return next((n for n in nodes if n["name"] == name), None)


def node_status(host: SystemdHost, name: str = NODE_NAME) -> str | None:
    found = node(host, name)
    return None if found is None else found["status"]


def heartbeat(host: SystemdHost) -> datetime:
    found = node(host)
    assert found is not None
    return datetime.fromisoformat(found["last_heartbeat"])


class TestTlsUnderTheUnits:
    def test_agent_registers_over_mtls_and_runs_a_job(self, tls_host: SystemdHost) -> None:
        """Set up as install.md §7 says, the coordinator serves HTTPS and asks agents for
        client certificates, the agent registers over it and runs a job to healthy, and the
        operator CLI lists the node with only its token and the CA."""
        host = tls_host
        started = journal_events(host, COORDINATOR, "coordinator_started")[-1]
        assert (started["listen"], started["tls"], started["mtls"]) == ("0.0.0.0:7400", True, True)
        assert host.show(COORDINATOR, "StatusText")["StatusText"] == "listening on 0.0.0.0:7400"
        assert journal_events(host, AGENT, "node_registered")
        deploy_web(host)
        host.wait_until(lambda: "1 healthy" in agent_status(host), what="the job healthy")
        assert node_status(host) == "ready"

        operator = tls_section()[0][-1]  # step 5
        assert "fleetwave node list" in operator.text
        listing = run_block(host, operator)
        assert NODE_NAME in listing, listing
        assert "ready" in listing, listing

    def test_agent_without_a_client_certificate_is_refused(self, tls_host: SystemdHost) -> None:
        """An agent that trusts the fleet's CA but has no client certificate gets 401
        client_certificate_required, keeps retrying, and never becomes a node."""
        host = tls_host
        config = (
            f'coordinators = ["https://{COORDINATOR_HOST}:7400"]\n'
            f'ca_file = "{CA_FILE}"\n'
            'join_token_file = "/etc/fleetwave/join.token"\n'
            'name = "no-cert"\n'
            'data_dir = "/var/lib/fleetwave-agent-nocert"\n'
            'listen = "off"\n'
        )
        host.run(["tee", "/etc/fleetwave/agent-nocert.toml"], input=config, check=True)
        host.run(
            ["systemd-run", f"--unit={NO_CERT_AGENT}", "--setenv=FLEETWAVE_LOG_FORMAT=json",
             "/opt/fleetwave/bin/fleetwave-agent", "--config", "/etc/fleetwave/agent-nocert.toml"],
            check=True,
        )  # fmt: skip
        host.wait_until(
            lambda: "require a client certificate" in host.journal(NO_CERT_AGENT),
            what="the agent without a certificate to be refused",
        )
        assert host.show(NO_CERT_AGENT, "ActiveState")["ActiveState"] == "active"
        assert node_status(host, "no-cert") is None
        host.systemctl("stop", NO_CERT_AGENT, check=True)

        register = {"join_token": "x", "name": "curl", "labels": {}, "resources": {}}
        refused = host.api("POST", "/v1/agent/register", register, token="")
        assert refused.status == 401
        assert refused.body["error"]["code"] == "client_certificate_required"

    def test_reload_rotates_the_certificate_while_the_agent_stays_connected(
        self, tls_host: SystemdHost
    ) -> None:
        """§7's renewal (a new certificate over the old files, `systemctl reload
        fleetwave-coordinator`): fresh connections get the new certificate, while the
        coordinator keeps its process and the agent its process, connection and heartbeats."""
        host = tls_host
        wait_ready(host)
        old = served_certificate(host)
        assert old == certificate_file(host, SERVER_CERT)
        coordinator_pid = host.main_pid(COORDINATOR)
        agent_pid = host.main_pid(AGENT)
        connections = coordinator_connections(host, agent_pid)
        assert connections, "the agent has no connection open to the coordinator"
        unreachable = len(journal_events(host, AGENT, "coordinator_unreachable"))

        for block in tls_section()[1]:
            run_block(host, block)

        new = certificate_file(host, SERVER_CERT)
        assert new != old
        host.wait_until(lambda: served_certificate(host) == new, what="the new certificate served")
        assert journal_events(host, COORDINATOR, "tls_reloaded")
        assert host.main_pid(COORDINATOR) == coordinator_pid
        seen = heartbeat(host)
        host.wait_until(
            lambda: heartbeat(host) > seen + timedelta(seconds=2),
            what="three more heartbeats after the reload",
        )
        assert host.show(AGENT, "MainPID", "NRestarts") == {
            "MainPID": str(agent_pid),
            "NRestarts": "0",
        }
        assert connections & coordinator_connections(host, agent_pid)
        assert len(journal_events(host, AGENT, "coordinator_unreachable")) == unreachable
        assert node_status(host) == "ready"
        assert "synced at index" in agent_status(host)
