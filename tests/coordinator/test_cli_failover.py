"""The operator CLI with several coordinators in FLEETWAVE_ADDR: a real coordinator process
(SQLite) listed after addresses that refuse connections, answer 503 or break connections.
The CLI reaches the real one; a change is never sent twice; when every address fails the
error names each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from coordinator.cli import cli
from coordinator.demo.fleet import ADMIN_TOKEN, LocalFleet
from tests.coordinator.standins import refusing, standin

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """One real coordinator and no agents: the CLI's calls are what is tested."""
    fleet = LocalFleet(tmp_path_factory.mktemp("cli-failover"), policy={})
    try:
        fleet.start_coordinator()
        yield fleet
    finally:
        fleet.close()


def run(addr: str, *args: str) -> Any:
    env = {"FLEETWAVE_ADDR": addr, "FLEETWAVE_TOKEN": ADMIN_TOKEN}
    return CliRunner().invoke(cli, list(args), env=env, prog_name="fleetwave")


def spec(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n[task]\ncommand = ["sleep", "60"]\n')
    return str(path)


def audited(fleet: LocalFleet, job: str) -> list[str]:
    entries = fleet.api.request("GET", "/v1/audit", query={"job": job}).body["entries"]
    return [f"{e['method']} {e['path']}" for e in entries]


class TestFailover:
    def test_reads_and_changes_reach_the_coordinator_behind_dead_and_503_ones(
        self, fleet: LocalFleet, tmp_path: Path
    ) -> None:
        """A refused address and a coordinator whose database is down come first: `job run`
        (a PUT) and `job list` reach the real coordinator, which applies the change once."""
        with standin("503") as down:
            addr = f"{refusing()},{down.url},{fleet.url}"
            result = run(addr, "job", "run", "--detach", spec(tmp_path, "alpha"))
            assert result.exit_code == 0, result.output
            assert "version 1 submitted" in result.output
            listed = run(addr, "job", "list")
            assert listed.exit_code == 0, listed.output
            assert "alpha" in listed.output
            assert down.methods() == ["PUT /v1/jobs/alpha", "GET /v1/jobs"]
        assert audited(fleet, "alpha") == ["PUT /v1/jobs/alpha"]

    def test_a_change_whose_connection_broke_is_not_resent(
        self, fleet: LocalFleet, tmp_path: Path
    ) -> None:
        """`job stop` whose connection breaks after it was sent exits 2 saying it may or may
        not have been applied and how to check; the coordinator after it never gets it. A
        read through the same list goes on to the real coordinator."""
        assert run(fleet.url, "job", "run", "--detach", spec(tmp_path, "beta")).exit_code == 0
        with standin("break") as broken:
            addr = f"{broken.url},{fleet.url}"
            result = run(addr, "job", "stop", "beta")
            assert result.exit_code == 2
            assert "POST /v1/jobs/beta/stop may or may not have been applied" in result.stderr
            assert broken.url in result.stderr
            assert "fleetwave audit" in result.stderr
            status = run(addr, "job", "status", "beta", "--json")
            assert status.exit_code == 0, status.output
            assert broken.methods() == ["POST /v1/jobs/beta/stop", "GET /v1/jobs/beta/status"]
        assert audited(fleet, "beta") == ["PUT /v1/jobs/beta"]  # no stop reached it

    def test_every_address_failing_names_each_and_what_it_said(self) -> None:
        """No coordinator serves the call: exit 2, every address with its reason."""
        dead = refusing()
        with standin("503") as down:
            result = run(f"{dead},{down.url}", "job", "list")
        assert result.exit_code == 2
        assert "no coordinator could serve the request (tried 2)" in result.stderr
        assert f"{dead}: connection refused" in result.stderr
        assert f"{down.url}: 503 store_unavailable" in result.stderr
        assert "FLEETWAVE_ADDR (or --addr)" in result.stderr

    @pytest.mark.parametrize(
        ("addr", "says"),
        [("http://127.0.0.1:1,,http://127.0.0.1:2", "item 2 is empty"), ("coord:7400", "http://")],
    )
    def test_a_bad_list_is_a_usage_error(self, addr: str, says: str) -> None:
        """An empty item or an address that is no URL: exit 2 naming FLEETWAVE_ADDR/--addr."""
        result = run(addr, "job", "list")
        assert result.exit_code == 2
        assert "FLEETWAVE_ADDR (or --addr)" in result.stderr
        assert says in result.stderr
