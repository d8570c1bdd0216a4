"""Enrollment and node identity with real processes: a real coordinator, real agents, real
sockets and a real SQLite file. Managed join tokens (expired, used up), manual approval,
name takeover, revocation during an open long-poll, purge, and node token rotation."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import pytest

from coordinator.client import ApiClient, ApiError
from coordinator.demo.fleet import LocalFleet, free_port, wait_for
from tests.integration.test_first_rollout import service_spec

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def agent_events(fleet: LocalFleet, name: str) -> list[dict[str, Any]]:
    """The JSON log lines an agent wrote so far."""
    path = fleet.base_dir / "logs" / f"agent-{name}.log"
    events = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def logged(fleet: LocalFleet, name: str, text: str) -> bool:
    """Whether agent ``name`` logged a line that contains ``text``."""
    return any(text in json.dumps(event) for event in agent_events(fleet, name))


def logged_lines(fleet: LocalFleet, name: str, text: str) -> list[bool]:
    """One True per log line of agent ``name`` that contains ``text`` (all its runs)."""
    return [True for event in agent_events(fleet, name) if text in json.dumps(event)]


def create_token(fleet: LocalFleet, **body: Any) -> dict[str, Any]:
    created: dict[str, Any] = fleet.api.request("POST", "/v1/tokens", body).body
    return created


def node_named(fleet: LocalFleet, name: str) -> dict[str, Any] | None:
    return next((n for n in fleet.nodes() if n["name"] == name), None)


def wait_status(fleet: LocalFleet, name: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        node = node_named(fleet, name)
        return node if node is not None and node["status"] == status else None

    return wait_for(f"node {name} to be {status}", reached, timeout=30)


def node_token(fleet: LocalFleet, name: str) -> str:
    identity = json.loads((fleet.base_dir / "agents" / name / "identity.json").read_text())
    return str(identity["node_token"])


def test_expired_and_used_up_join_tokens_are_refused(fleet: LocalFleet) -> None:
    fleet.start_coordinator()
    once = create_token(fleet, name="one-host", kind="join", max_uses=1)
    fleet.start_agent("n1", join_token=once["secret"])
    wait_status(fleet, "n1", "ready")
    fleet.start_agent("n2", join_token=once["secret"])
    wait_for("n2 to be refused", lambda: logged(fleet, "n2", "is used up (1 of 1 uses)"))

    short = create_token(fleet, name="short", kind="join", ttl="2s")
    raw = ApiClient(fleet.url, None)

    def expired() -> bool:
        """Try to enroll a probe host: 201 (or 409 once it is enrolled) while the token
        lives, 401 once it expired."""
        body = {"join_token": short["secret"], "name": "probe"}
        try:
            raw.request("POST", "/v1/agent/register", body)
        except ApiError as exc:
            if exc.status == 401 and "expired at" in exc.message:
                return True
            if exc.status != 409:
                raise AssertionError(f"unexpected answer: {exc.status} {exc.message}") from None
        return False

    wait_for("the short join token to expire", expired, timeout=30)
    fleet.start_agent("n3", join_token=short["secret"])
    wait_for("n3 to be refused", lambda: logged(fleet, "n3", "expired at"))
    names = {n["name"] for n in fleet.nodes()}
    assert "n1" in names
    assert not names & {"n2", "n3"}
    assert fleet.agents["n2"].alive()  # they retry, no crash
    assert fleet.agents["n3"].alive()


def test_a_manual_approval_node_gets_nothing_until_approved(fleet: LocalFleet) -> None:
    ports = {"n1": free_port(), "n2": free_port()}
    fleet.start_coordinator()
    review = create_token(fleet, name="review", kind="join", approval="manual")
    fleet.start_agent("n1", {"port": str(ports["n1"])})
    fleet.start_agent("n2", {"port": str(ports["n2"])}, join_token=review["secret"])
    wait_status(fleet, "n1", "ready")
    pending = wait_status(fleet, "n2", "pending")
    spec = service_spec("hello") | {"rollout": {"canary": 0, "waves": 1, "healthy_deadline": "30s"}}
    fleet.api.request("PUT", "/v1/jobs/web", spec)
    fleet.wait_state("web", "running")
    rows = fleet.api.request("GET", "/v1/jobs/web/nodes").body["nodes"]
    assert [r["node_name"] for r in rows] == ["n1"]
    assert logged(fleet, "n2", "node_pending_approval")
    assert not any(p.cmdline()[-1:] == ["n2"] for p in fleet.workload_processes()), (
        "a pending node started a workload"
    )

    approved = fleet.api.request("POST", f"/v1/nodes/{pending['id']}/approve").body
    assert approved["status"] == "ready"

    def serving_on_n2() -> bool:
        rows = fleet.api.request("GET", "/v1/jobs/web/nodes").body["nodes"]
        return any(
            r["node_name"] == "n2" and (r["execution"] or {}).get("state") == "healthy"
            for r in rows
        )

    wait_for("web to run on the approved node", serving_on_n2, timeout=60)


def test_a_name_belongs_to_its_node(fleet: LocalFleet) -> None:
    """Another host (another data dir, so another node key) cannot take a node's name, not
    even while that node is down; after a purge it can."""
    fleet.start_coordinator()
    fleet.start_agent("n1")
    first = wait_status(fleet, "n1", "ready")
    fleet.start_agent("impostor", extra=("--name", "n1"))  # its own data dir and node key
    wait_for("the impostor to get 409", lambda: logged(fleet, "impostor", "belongs to node"))
    assert [n["id"] for n in fleet.nodes()] == [first["id"]]
    assert not (fleet.base_dir / "agents" / "impostor" / "identity.json").exists()

    # Down, the name is still the node's.
    fleet.stop(fleet.agents["n1"])
    wait_status(fleet, "n1", "down")
    fleet.stop(fleet.agents["impostor"])
    fleet.start_agent("impostor", extra=("--name", "n1"))
    wait_for(
        "the impostor to get 409 again",
        lambda: sum(logged_lines(fleet, "impostor", "belongs to node")) >= 2,
    )
    assert [n["id"] for n in fleet.nodes()] == [first["id"]]

    # The real host returns (same key): it is the same node, ready again.
    fleet.start_agent("n1")
    assert wait_status(fleet, "n1", "ready")["id"] == first["id"]


def test_revoke_ends_the_open_long_poll(fleet: LocalFleet) -> None:
    """A real agent long-polls; so does a raw client with the node's token. A revoke answers
    the open long-poll with 401 node_revoked at once (long before its 60 s wait); the agent
    logs that it was revoked, keeps running, and never gets a new token."""
    fleet.start_coordinator()
    fleet.start_agent("n1")
    node = wait_status(fleet, "n1", "ready")
    token = node_token(fleet, "n1")
    agent_api = ApiClient(fleet.url, token, timeout=90)
    index = agent_api.request("GET", "/v1/agent/assignments").body["index"]
    result: dict[str, Any] = {}

    def long_poll() -> None:
        try:
            agent_api.request(
                "GET", "/v1/agent/assignments", query={"index": str(index), "wait": "60s"}
            )
            result["status"] = 200
        except ApiError as exc:
            result["status"], result["code"] = exc.status, exc.code
        result["at"] = time.monotonic()

    poller = threading.Thread(target=long_poll, daemon=True)
    poller.start()
    wait_for("the long-poll to be open", lambda: _long_polls(fleet) >= 2)
    revoked_at = time.monotonic()
    fleet.api.request("POST", f"/v1/nodes/{node['id']}/revoke")
    poller.join(timeout=30)
    assert (result.get("status"), result.get("code")) == (401, "node_revoked")
    latency = result["at"] - revoked_at
    print(f"revoke -> long-poll refused: {latency * 1000:.0f} ms")
    assert latency < 30, "the long-poll ran to its wait instead of ending at the revoke"
    wait_for("the agent to be told", lambda: logged(fleet, "n1", "was revoked by an operator"))
    assert wait_status(fleet, "n1", "revoked")
    assert fleet.agents["n1"].alive()
    assert node_token(fleet, "n1") == token  # no new registration got through

    # Purged, the name is free: the host enrolls again as a new node.
    fleet.stop(fleet.agents["n1"])
    fleet.api.request("DELETE", f"/v1/nodes/{node['id']}")
    assert fleet.nodes() == []
    (fleet.base_dir / "agents" / "n1" / "identity.json").unlink()
    fleet.start_agent("n1")
    again = wait_status(fleet, "n1", "ready")
    assert again["id"] != node["id"]


def _long_polls(fleet: LocalFleet) -> float:
    """Assignment long-polls open in the coordinator (its own metric)."""
    with urllib.request.urlopen(f"{fleet.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith('fleetwave_long_polls_open{endpoint="assignments"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_agent_rotates_its_token_before_it_expires(fleet: LocalFleet) -> None:
    """Node tokens of 6 s: the agent rotates each after ~4 s and stays ready for several
    lifetimes; every token it gave up is refused."""
    fleet.start_coordinator("--node-token-ttl", "6s")
    fleet.start_agent("n1")
    wait_status(fleet, "n1", "ready")
    first = node_token(fleet, "n1")
    wait_for(
        "three rotations",
        lambda: sum(e.get("event") == "node_token_rotated" for e in agent_events(fleet, "n1")) >= 3,
        timeout=60,
    )
    assert node_named(fleet, "n1")["status"] == "ready"  # type: ignore[index]
    assert not logged(fleet, "n1", "node_token_rejected")
    with pytest.raises(ApiError) as refused:
        ApiClient(fleet.url, first).request("POST", "/v1/agent/report", {"seq": 10**9})
    assert refused.value.status == 401
    assert node_token(fleet, "n1") != first
    assert sum(e.get("event") == "node_registered" for e in agent_events(fleet, "n1")) == 1
