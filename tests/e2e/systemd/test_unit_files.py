"""The shipped unit files and example configs, checked on the host without booting anything."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.config import ENV_VARS, HostPolicy, load_settings
from coordinator.config import CoordinatorConfig, load_config
from tests.e2e.systemd.install_md import edit_config, tls_section

REPO = Path(__file__).resolve().parents[3]
SYSTEMD = REPO / "systemd"
AGENT_UNIT = SYSTEMD / "fleetwave-agent.service"
COORDINATOR_UNIT = SYSTEMD / "fleetwave-coordinator.service"

TLS_KEYS = ("coordinators", "ca_file", "tls_cert", "tls_key", "tls_client_ca")

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

    def test_coordinator_unit_reloads_with_sighup(self) -> None:
        """`systemctl reload fleetwave-coordinator` sends SIGHUP, which loads the TLS
        certificate and key again."""
        assert directives(COORDINATOR_UNIT)["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert directives(AGENT_UNIT)["ExecReload"] == ["/bin/kill -HUP $MAINPID"]

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


def uncommented_tls_lines(example: str) -> str:
    """The TLS settings an example config shows commented out, as TOML."""
    return "\n".join(re.findall(rf"^# ((?:{'|'.join(TLS_KEYS)}) = .*)$", example, re.M))


def install_md_settings(target: str) -> dict[str, Any]:
    """What docs/install.md §7 tells the operator to set in the config file ``target``."""
    (block,) = [block for block in tls_section()[0] if block.target == target]
    return tomllib.loads(block.text)


class TestTlsExamples:
    def test_coordinator_example_turns_on_what_install_md_sets(self, tmp_path: Path) -> None:
        """coordinator.toml.example with its TLS lines uncommented and allow_plain_http
        removed is valid and sets exactly what install.md §7 sets."""
        example = (SYSTEMD / "coordinator.toml.example").read_text()
        path = tmp_path / "coordinator.toml"
        path.write_text(edit_config(example, uncommented_tls_lines(example)))
        wanted = install_md_settings("/etc/fleetwave/coordinator.toml")
        config = load_config(path, {}, {})
        assert config.model_dump(mode="json", include=set(wanted)) == wanted
        assert not config.allow_plain_http

    def test_agent_example_turns_on_what_install_md_sets(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """agent.toml.example with its TLS lines uncommented and allow_plain_http removed is
        valid and sets exactly what install.md §7 sets."""
        monkeypatch.delenv("FLEETWAVE_ON_STOP", raising=False)
        example = (SYSTEMD / "agent.toml.example").read_text()
        path = tmp_path / "agent.toml"
        path.write_text(edit_config(example, uncommented_tls_lines(example)))
        wanted = install_md_settings("/etc/fleetwave/agent.toml")
        settings = load_settings({"config_file": path})
        assert settings.model_dump(mode="json", include=set(wanted)) == wanted
        assert not settings.allow_plain_http

    @pytest.mark.parametrize("daemon", ["coordinator", "agent"])
    def test_env_examples_name_the_same_tls_files(self, daemon: str) -> None:
        """The TLS variables an env example suggests hold what install.md §7 puts in the
        config file for the same options."""
        text = (SYSTEMD / f"{daemon}.env.example").read_text()
        suggested = re.findall(r"^# (FLEETWAVE_[A-Z_]+)=(.*)$", text, re.M)

        def option(variable: str) -> str:
            if daemon == "agent":
                return ENV_VARS[variable]
            return variable.removeprefix("FLEETWAVE_").lower()

        tls = {option(var): value for var, value in suggested if option(var) in TLS_KEYS}
        wanted = install_md_settings(f"/etc/fleetwave/{daemon}.toml")
        wanted.pop("listen", None)
        assert {k: [v] if k == "coordinators" else v for k, v in tls.items()} == wanted
