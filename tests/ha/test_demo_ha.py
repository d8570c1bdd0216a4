"""``fleetwave demo --ha`` as a real process: the leader killed mid-rollout for the viewer,
its own database created and dropped; and a clear error when no PostgreSQL answers."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from coordinator.cli import cli
from coordinator.demo.fleet import free_port
from tests.integration.test_demo import assert_no_survivors, demo_argv, demo_env
from tests.pg import SERVER

DATABASE = re.compile(r"Created database (fleetwave_demo_[0-9a-f]+)")


def database_exists(name: str) -> bool:
    async def look() -> bool:
        conn = await asyncpg.connect(SERVER, timeout=5)
        try:
            found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            return found is not None
        finally:
            await conn.close()

    return asyncio.run(look())


@pytest.mark.slow
@pytest.mark.integration
def test_the_ha_demo_kills_the_leader_and_the_rollout_completes(
    tmp_path: Path, ha_database: str
) -> None:
    """The demo narrates a takeover with a higher epoch, the same rollout going on, and
    exits 0; it leaves no process and drops its database."""
    # (ha_database: the test server answers, else this is skipped or fails like the others)
    env = demo_env(tmp_path) | {"FLEETWAVE_DEMO_PG": SERVER}
    result = subprocess.run(
        [*demo_argv(), "--ha", "--agents", "6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    took = re.search(r"(c\d) took over as leader with epoch (\d+), ([\d.]+)s after the kill", text)
    assert took is not None, text
    assert int(took.group(2)) >= 2
    assert f"{took.group(1)} goes on with the same rollout" in text
    assert "NOT the same rollout" not in text
    assert "6 nodes answer 'hello from version 2' (version 2)" in text
    created = DATABASE.search(text)
    assert created is not None, text
    assert f"Dropped database {created.group(1)}." in text
    assert not database_exists(created.group(1))
    assert_no_survivors(tmp_path, text)


def test_without_a_postgresql_server_the_ha_demo_says_so() -> None:
    """No server at the URL: one message naming it (without its password) and what to do,
    exit 1, nothing started."""
    port = free_port()
    url = f"postgresql://demo:hunter2@127.0.0.1:{port}/postgres"
    result = CliRunner().invoke(cli, ["demo", "--ha"], env={"FLEETWAVE_DEMO_PG": url})
    assert result.exit_code == 1
    assert f"cannot reach PostgreSQL at postgresql://demo:***@127.0.0.1:{port}/" in result.output
    assert "--database-url or FLEETWAVE_DEMO_PG" in result.output
    assert "hunter2" not in result.output
