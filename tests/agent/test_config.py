"""Tests for configuration loading: precedence, parsing and error messages."""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path

import pytest

from agent.config import (
    ENV_VARS,
    AgentSettings,
    HostPolicy,
    coordinator_tls,
    load_settings,
    resolve_join_token,
    transport_problem,
)
from agent.errors import ConfigError
from coordinator.tlsgen import create_ca, create_cert
from shared.spec import Driver

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


class TestPolicy:
    def load(self, tmp_path: Path, table: str) -> AgentSettings:
        path = tmp_path / "agent.toml"
        path.write_text(table)
        return load_settings({"config_file": path})

    def test_defaults_without_a_table(self, tmp_path: Path) -> None:
        """No [policy] table is the default policy: root refused, loader variables denied."""
        assert self.load(tmp_path, 'name = "n"\n').policy == HostPolicy()

    def test_every_key_is_read_from_the_table(self, tmp_path: Path) -> None:
        """[policy] sets allow_root, allowed_users, _drivers, _commands and denied_env."""
        policy = self.load(
            tmp_path,
            "[policy]\n"
            "allow_root = true\n"
            'allowed_users = ["app", "nobody"]\n'
            'allowed_drivers = ["exec"]\n'
            'allowed_commands = ["/usr/bin/*", "/opt/app/**"]\n'
            'denied_env = ["LD_PRELOAD"]\n',
        ).policy
        assert policy == HostPolicy(
            allow_root=True,
            allowed_users=("app", "nobody"),
            allowed_drivers=(Driver.EXEC,),
            allowed_commands=("/usr/bin/*", "/opt/app/**"),
            denied_env=("LD_PRELOAD",),
        )

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            (
                "[policy]\nallow_roots = true\n",
                r"^policy\.allow_roots: unknown option \(the \[policy\] keys are allow_root,"
                r" allowed_users, allowed_drivers, allowed_commands, denied_env\)$",
            ),
            ('[policy]\nallowed_drivers = ["docker"]\n', r"^policy\.allowed_drivers\.0: "),
            (
                '[policy]\nallowed_commands = ["bin/*"]\n',
                r"^policy\.allowed_commands: 'bin/\*' must be an absolute path glob",
            ),
            ('[policy]\nallow_root = "yes please"\n', r"^policy\.allow_root: "),
            ('[policy]\nallowed_users = [""]\n', r"^policy\.allowed_users: names must not"),
        ],
    )
    def test_bad_keys_and_values_name_the_key(
        self, tmp_path: Path, table: str, message: str
    ) -> None:
        """A typo or a bad value in [policy] stops the agent with one line naming the key."""
        with pytest.raises(ConfigError, match=message):
            self.load(tmp_path, table)

    def test_no_env_var_sets_it(self) -> None:
        """Only the host's config file speaks for the host owner."""
        assert not any("POLICY" in var or "ROOT" in var for var in ENV_VARS)


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


class TestTransport:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:7400",
            "http://localhost:7400",
            "http://[::1]:7400",
            "https://coordinator.example:7400",
        ],
    )
    def test_loopback_http_and_any_https_are_fine(self, url: str) -> None:
        """Plain HTTP on this machine and HTTPS anywhere need no permission."""
        assert coordinator_tls(load_settings({"coordinators": (url,)})) is None

    @pytest.mark.parametrize(
        "url", ["http://10.0.0.7:7400", "http://coordinator.example", "http://[2001:db8::1]:7400"]
    )
    def test_plain_http_elsewhere_is_refused_naming_the_option(self, url: str) -> None:
        """An http:// coordinator on another host is refused; the error says how to allow it."""
        settings = load_settings({"coordinators": ("http://127.0.0.1:7400", url)})
        with pytest.raises(ConfigError, match=r"^coordinators: refusing plain HTTP to .*"):
            coordinator_tls(settings)
        assert "allow_plain_http" in str(transport_problem(settings))

    def test_allow_plain_http_from_flag_env_or_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The flag, FLEETWAVE_ALLOW_PLAIN_HTTP or the file key allow it, in that precedence."""
        remote = ("http://10.0.0.7:7400",)
        flags = {"coordinators": remote, "allow_plain_http": True}
        assert transport_problem(load_settings(flags)) is None
        file = tmp_path / "agent.toml"
        file.write_text('coordinators = ["http://10.0.0.7:7400"]\nallow_plain_http = true\n')
        assert transport_problem(load_settings({"config_file": file})) is None
        monkeypatch.setenv("FLEETWAVE_ALLOW_PLAIN_HTTP", "false")
        assert transport_problem(load_settings({"config_file": file})) is not None
        monkeypatch.setenv("FLEETWAVE_ALLOW_PLAIN_HTTP", "1")
        assert transport_problem(load_settings({"coordinators": remote})) is None

    def test_tls_options_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """FLEETWAVE_CA_FILE, FLEETWAVE_TLS_CERT and FLEETWAVE_TLS_KEY set the TLS files."""
        monkeypatch.setenv("FLEETWAVE_CA_FILE", "/ca.pem")
        monkeypatch.setenv("FLEETWAVE_TLS_CERT", "/c.pem")
        monkeypatch.setenv("FLEETWAVE_TLS_KEY", "/k.pem")
        s = load_settings({"tls_key": Path("/flag-k.pem")})
        assert (s.ca_file, s.tls_cert, s.tls_key) == (
            Path("/ca.pem"),
            Path("/c.pem"),
            Path("/flag-k.pem"),
        )

    def test_a_certificate_needs_its_key(self) -> None:
        """tls_cert without tls_key is refused, naming the missing one."""
        settings = load_settings({"tls_cert": Path("/c.pem")})
        with pytest.raises(ConfigError, match=r"^tls_key: "):
            coordinator_tls(settings)

    def test_context_from_real_files(self, tmp_path: Path) -> None:
        """With a CA and a client certificate the context verifies and presents them;
        an unreadable file is a config error naming the options."""
        create_ca(tmp_path / "ca")
        issued = create_cert(tmp_path / "ca", tmp_path, name="n1", server=False)
        flags = {"ca_file": tmp_path / "ca" / "ca.pem", "tls_cert": issued.cert}
        context = coordinator_tls(load_settings(flags | {"tls_key": issued.key}))
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED
        with pytest.raises(ConfigError, match=r"^ca_file/tls_cert/tls_key: cannot load"):
            coordinator_tls(load_settings(flags | {"tls_key": tmp_path / "missing.pem"}))


class TestWorkloadSlice:
    def test_env_sets_the_slice_and_empty_turns_it_off(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """FLEETWAVE_WORKLOAD_SLICE names the slice (the unit's way); empty means no scopes."""
        assert load_settings({}).workload_slice == ""
        monkeypatch.setenv("FLEETWAVE_WORKLOAD_SLICE", "fleetwave-workloads.slice")
        assert load_settings({}).workload_slice == "fleetwave-workloads.slice"
        monkeypatch.setenv("FLEETWAVE_WORKLOAD_SLICE", "")
        assert load_settings({}).workload_slice == ""

    @pytest.mark.parametrize("value", ["workloads", "a b.slice", "../x.slice", "x.service"])
    def test_not_a_slice_name(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        """Only a slice unit name is accepted, and the error names the option."""
        monkeypatch.setenv("FLEETWAVE_WORKLOAD_SLICE", value)
        with pytest.raises(ConfigError, match=r"^workload_slice: "):
            load_settings({})
