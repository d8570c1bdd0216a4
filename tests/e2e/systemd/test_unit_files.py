"""The shipped unit files and example configs, checked on the host without booting anything."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.config import ENV_VARS, HostPolicy, load_settings
from coordinator.config import CoordinatorConfig, load_config

REPO = Path(__file__).resolve().parents[3]
SYSTEMD = REPO / "systemd"
AGENT_UNIT = SYSTEMD / "fleetwave-agent.service"
COORDINATOR_UNIT = SYSTEMD / "fleetwave-coordinator.service"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)


def directives(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file (all sections), values in order of appearance."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def installed_units(tmp_path: Path) -> list[Path]:
    """Copies of both units whose ExecStart points at this checkout's venv (verify needs the
    binary to exist)."""
    bin_dir = Path(shutil.which("fleetwave-agent") or REPO / ".venv/bin/fleetwave-agent").parent
    out = []
    for unit in (AGENT_UNIT, COORDINATOR_UNIT):
        text = unit.read_text().replace("/opt/fleetwave/bin/", f"{bin_dir}/")
        copy = tmp_path / unit.name
        copy.write_text(text)
        out.append(copy)
    return out


class TestUnits:
    def test_agent_unit_keeps_workloads_and_uses_the_watchdog(self) -> None:
        """The agent is a notify unit with a watchdog that restarts on failure and only ever
        signals its main process, and it tells the agent to leave workloads running."""
        unit = directives(AGENT_UNIT)
        assert unit["Type"] == ["notify"]
        assert unit["Restart"] == ["on-failure"]
        assert unit["KillMode"] == ["process"]
        assert unit["WatchdogSec"] == ["30s"]
        assert unit["OOMPolicy"] == ["continue"]
        assert "FLEETWAVE_ON_STOP=keep-workloads" in unit["Environment"]
        assert unit["ExecStart"][0].startswith("/opt/fleetwave/bin/fleetwave-agent ")
        assert "User" not in unit, "the agent runs as root to start jobs as their users"

    def test_coordinator_unit_is_unprivileged(self) -> None:
        """The coordinator runs as a dynamic user with a state directory and no capabilities."""
        unit = directives(COORDINATOR_UNIT)
        assert unit["Type"] == ["notify"]
        assert unit["DynamicUser"] == ["yes"]
        assert unit["StateDirectory"] == ["fleetwave"]
        assert unit["CapabilityBoundingSet"] == [""]

    @needs_analyze
    def test_units_verify(self, installed_units: list[Path]) -> None:
        """systemd-analyze verify accepts both units without a warning."""
        result = subprocess.run(
            ["systemd-analyze", "verify", *map(str, installed_units)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == ""

    @needs_analyze
    def test_coordinator_exposure_at_most_2(self) -> None:
        """systemd-analyze security --offline=true rates the coordinator 2.0 or better."""
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(COORDINATOR_UNIT)],
            capture_output=True,
            text=True,
            check=False,
        )
        match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
        assert match, result.stdout + result.stderr
        assert float(match[1]) <= 2.0


class TestExampleConfigs:
    def test_agent_example_loads(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """agent.toml.example is valid for the agent's config loader."""
        monkeypatch.delenv("FLEETWAVE_ON_STOP", raising=False)
        settings = load_settings({"config_file": SYSTEMD / "agent.toml.example"})
        assert settings.coordinators == ["http://coordinator.example.internal:7400"]
        assert settings.join_token_file == Path("/etc/fleetwave/join.token")
        assert settings.labels == {"role": "web", "zone": "eu-1a"}
        assert settings.policy == HostPolicy()  # said explicitly; the defaults refuse root

    def test_coordinator_example_loads(self) -> None:
        """coordinator.toml.example is valid for the coordinator's config loader."""
        config = load_config(SYSTEMD / "coordinator.toml.example", {}, {})
        assert config.listen == "0.0.0.0:7400"
        assert config.data_dir == Path("/var/lib/fleetwave")

    @pytest.mark.parametrize("name", ["agent.env.example", "coordinator.env.example"])
    def test_env_examples_only_name_known_variables(self, name: str) -> None:
        """Every variable the env examples mention is one the daemons read."""
        text = (SYSTEMD / name).read_text()
        known = set(ENV_VARS) | {
            f"FLEETWAVE_{key.upper()}" for key in CoordinatorConfig.model_fields
        }
        assert set(re.findall(r"FLEETWAVE_[A-Z_]+", text)) <= known
