"""Tests for configuration loading: precedence, parsing and error messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agent.config import load_settings, resolve_join_token
from agent.errors import ConfigError

TOML = """
coordinators = ["http://file-a:7400", "http://file-b:7400"]
join_token = "from-file"
name = "file-node"
labels = { zone = "z1", role = "db" }
listen = "off"
poll_wait = "5s"
log_max_bytes = 2048
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(TOML)
    return path


class TestPrecedence:
    def test_file_over_defaults(self, config_file: Path) -> None:
        """Values in the file replace the defaults; unset options keep theirs."""
        s = load_settings({"config_file": config_file})
        assert s.coordinators == ["http://file-a:7400", "http://file-b:7400"]
        assert s.name == "file-node"
        assert s.labels == {"zone": "z1", "role": "db"}
        assert s.poll_wait == timedelta(seconds=5)
        assert s.log_max_bytes == 2048
        assert s.data_dir == Path("/var/lib/fleetwave-agent")

    def test_env_over_file(self, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """FLEETWAVE_* variables beat the file; lists and maps are comma-separated."""
        monkeypatch.setenv("FLEETWAVE_COORDINATOR", "http://env-a:1, http://env-b:2/")
        monkeypatch.setenv("FLEETWAVE_LABELS", "zone=z9,rack=r1")
        monkeypatch.setenv("FLEETWAVE_NAME", "env-node")
        s = load_settings({"config_file": config_file})
        assert s.coordinators == ["http://env-a:1", "http://env-b:2"]
        assert s.labels == {"zone": "z9", "rack": "r1"}
        assert s.name == "env-node"
        assert s.join_token == "from-file"

    def test_flags_over_env(self, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Given flags beat env and file; flags not given (None, empty) do not."""
        monkeypatch.setenv("FLEETWAVE_NAME", "env-node")
        monkeypatch.setenv("FLEETWAVE_LISTEN", "127.0.0.1:9000")
        s = load_settings(
            {
                "config_file": config_file,
                "name": "flag-node",
                "labels": ("a=1", "b=2"),
                "coordinators": ("http://flag:1",),
                "listen": None,
                "join_token": None,
            }
        )
        assert s.name == "flag-node"
        assert s.labels == {"a": "1", "b": "2"}
        assert s.coordinators == ["http://flag:1"]
        assert s.listen == "127.0.0.1:9000"
        assert s.listen_address() == ("127.0.0.1", 9000)
        assert s.join_token == "from-file"

    def test_config_file_from_env(self, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """FLEETWAVE_CONFIG names the file when --config is not given."""
        monkeypatch.setenv("FLEETWAVE_CONFIG", str(config_file))
        assert load_settings({}).name == "file-node"


class TestErrors:
    def test_missing_explicit_file(self, tmp_path: Path) -> None:
        """A config file named explicitly must exist."""
        with pytest.raises(ConfigError, match=r"^config_file: .*nope.toml does not exist$"):
            load_settings({"config_file": tmp_path / "nope.toml"})

    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            ({"listen": "nowhere"}, r"^listen: 'nowhere' must be HOST:PORT"),
            ({"labels": ("novalue",)}, r"^labels: 'novalue' is not KEY=VALUE$"),
            ({"labels": ("zone=" + "v" * 256,)}, r"^labels: label 'zone': value longer than 255"),
            ({"labels": tuple(f"k{i}=v" for i in range(65))}, r"^labels: at most 64 labels"),
            ({"coordinators": ("ftp://x",)}, r"^coordinators: 'ftp://x' is not an http"),
            ({"name": "bad name!"}, r"^name: "),
            ({"poll_wait": "soon"}, r"^poll_wait: invalid duration"),
        ],
    )
    def test_bad_values_name_the_option(self, flags: dict[str, object], message: str) -> None:
        """Each invalid option gives one line that starts with the option's name."""
        with pytest.raises(ConfigError, match=message) as info:
            load_settings(flags)
        assert "\n" not in str(info.value)

    def test_unknown_key_in_file(self, tmp_path: Path) -> None:
        """A typo in the file is reported rather than ignored."""
        path = tmp_path / "agent.toml"
        path.write_text('coordinatorz = ["http://x:1"]\n')
        with pytest.raises(ConfigError, match=r"^coordinatorz: unknown option$"):
            load_settings({"config_file": path})

    def test_invalid_toml(self, tmp_path: Path) -> None:
        """A file that is not TOML is reported with its path."""
        path = tmp_path / "agent.toml"
        path.write_text("name = \n")
        with pytest.raises(ConfigError, match=r"^config_file: .* is not valid TOML"):
            load_settings({"config_file": path})


class TestJoinToken:
    def test_read_from_file(self, tmp_path: Path) -> None:
        """join_token_file supplies the token (stripped) when join_token is not set."""
        token_file = tmp_path / "join.token"
        token_file.write_text("s3cret\n")
        s = load_settings({"join_token_file": token_file, "config_file": None})
        assert resolve_join_token(s) == "s3cret"

    def test_direct_token_wins(self, tmp_path: Path) -> None:
        """An explicit join_token is used as is."""
        s = load_settings({"join_token": "direct", "join_token_file": tmp_path / "none"})
        assert resolve_join_token(s) == "direct"

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A join token file that cannot be read is a config error naming the option."""
        s = load_settings({"join_token_file": tmp_path / "missing"})
        with pytest.raises(ConfigError, match=r"^join_token_file: cannot read"):
            resolve_join_token(s)

    def test_token_not_in_repr(self) -> None:
        """The join token never shows up in the settings' repr (and so in logs)."""
        assert "direct" not in repr(load_settings({"join_token": "direct"}))
