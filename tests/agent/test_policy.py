"""Tests for the host policy decision: every rule, its defaults, globs and PATH lookups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import DEFAULT_DENIED_ENV, HostPolicy
from agent.policy import (
    REFUSED,
    RULES,
    LaunchRequest,
    Program,
    decide,
    describe_launch,
    glob_matches,
    is_executable_file,
    resolve_program,
)
from agent.runtime import LaunchSpec
from agent.runtime.environment import child_environment
from shared.spec import Driver, ExecCheck, HealthCheck, HttpCheck

ROOT, AGENT_UID = 0, 1000


def request(**overrides: object) -> LaunchRequest:
    """A job as user ``app`` (uid 1001) running /usr/bin/app under exec, no env, no checks."""
    values: dict[str, object] = {
        "driver": Driver.EXEC,
        "user": "app",
        "user_uid": 1001,
        "agent_user": "root",
        "env_names": frozenset(),
        "programs": (Program("command", "app", "/usr/bin/app", "/usr/bin/app"),),
    }
    values.update(overrides)
    return LaunchRequest(**values)  # type: ignore[arg-type]


def reason(req: LaunchRequest, policy: HostPolicy, euid: int = ROOT) -> str | None:
    refusal = decide(req, policy, euid=euid)
    return None if refusal is None else refusal.reason


class TestDefaults:
    def test_default_policy(self) -> None:
        """Root refused, any user, driver and command, and the loader variables denied."""
        policy = HostPolicy()
        assert policy.allow_root is False
        assert (policy.allowed_users, policy.allowed_drivers, policy.allowed_commands) == (
            (),
            (),
            (),
        )
        assert policy.denied_env == DEFAULT_DENIED_ENV
        assert DEFAULT_DENIED_ENV == ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH")

    def test_an_ordinary_job_passes_the_default_policy(self) -> None:
        """A job with a non-root user, any program and harmless env is allowed."""
        assert decide(request(env_names=frozenset({"PORT"})), HostPolicy(), euid=ROOT) is None

    def test_a_refusal_names_its_rule_and_starts_with_the_contract_prefix(self) -> None:
        """The message is ``refused by host policy: <reason>``; the rule is a [policy] key."""
        refusal = decide(request(user="root", user_uid=0), HostPolicy(), euid=ROOT)
        assert refusal is not None
        assert refusal.rule == "allow_root"
        assert refusal.rule in RULES
        assert refusal.message == REFUSED + refusal.reason
        assert refusal.message == (
            "refused by host policy: job runs as root (uid 0);"
            " set [policy] allow_root = true on this host to allow it"
        )


class TestAllowRoot:
    def test_a_user_root_job_is_refused_by_default_and_allowed_with_allow_root(self) -> None:
        """``user = "root"`` needs allow_root, whoever the agent runs as."""
        job = request(user="root", user_uid=0)
        for euid in (ROOT, AGENT_UID):
            assert reason(job, HostPolicy(), euid) is not None
            assert reason(job, HostPolicy(allow_root=True), euid) is None

    def test_any_user_with_uid_0_is_root(self) -> None:
        """An alias of root (another name, uid 0) is refused like root, by its name."""
        assert reason(request(user="toor", user_uid=0), HostPolicy()) == (
            "job runs as 'toor' (uid 0); set [policy] allow_root = true on this host to allow it"
        )

    def test_no_user_on_a_root_agent_is_root(self) -> None:
        """A job without ``user`` runs as the agent: refused when the agent is root."""
        assert reason(request(user=None, user_uid=None), HostPolicy(), ROOT) == (
            "job sets no user, so it would run as the agent's user, root (uid 0);"
            " set a user in the job, or set [policy] allow_root = true on this host to allow it"
        )

    def test_no_user_on_an_unprivileged_agent_is_that_user(self) -> None:
        """A job without ``user`` on an agent running as uid 1000 runs as uid 1000: allowed."""
        job = request(user=None, user_uid=None, agent_user="alice")
        assert reason(job, HostPolicy(), AGENT_UID) is None

    def test_no_user_under_systemd_is_root_whoever_the_agent_is(self) -> None:
        """A unit without User= runs as root, so the systemd driver needs a user or allow_root."""
        job = request(user=None, user_uid=None, driver=Driver.SYSTEMD, agent_user="alice")
        assert reason(job, HostPolicy(), AGENT_UID) == (
            "job sets no user, so its systemd unit would run as root (uid 0);"
            " set a user in the job, or set [policy] allow_root = true on this host to allow it"
        )


class TestAllowedUsers:
    POLICY = HostPolicy(allowed_users=("app", "nobody"))

    def test_listed_users_only(self) -> None:
        """A listed user runs; another is refused, naming the key that would allow it."""
        assert reason(request(user="app"), self.POLICY) is None
        assert reason(request(user="www", user_uid=33), self.POLICY) == (
            "job runs as 'www', which is not in [policy] allowed_users ('app', 'nobody');"
            " add it there on this host to allow it"
        )

    def test_the_agents_user_counts_for_a_job_without_user(self) -> None:
        """A job without ``user`` runs as the agent's user, which must be listed too."""
        job = request(user=None, user_uid=None, agent_user="alice")
        assert "'alice', which is not in [policy] allowed_users" in str(
            reason(job, self.POLICY, AGENT_UID)
        )

    def test_root_needs_allow_root_and_a_listing(self) -> None:
        """With allow_root, root still has to be listed when the list is not empty."""
        root = request(user="root", user_uid=0)
        assert reason(root, replace_policy(self.POLICY, allow_root=True)) is not None
        listed = HostPolicy(allow_root=True, allowed_users=("root",))
        assert reason(root, listed) is None
        assert reason(root, HostPolicy(allowed_users=("root",))) is not None  # no allow_root

    def test_an_unknown_user_is_left_to_the_runtime(self) -> None:
        """With no list, a user that does not exist is not a policy matter: the runtime
        fails it as ``does not exist on this node``."""
        assert reason(request(user="ghost", user_uid=None), HostPolicy()) is None


class TestAllowedDrivers:
    def test_only_listed_drivers(self) -> None:
        """An empty list allows every driver; a list allows only its drivers."""
        systemd = request(driver=Driver.SYSTEMD)
        assert reason(systemd, HostPolicy()) is None
        assert reason(systemd, HostPolicy(allowed_drivers=(Driver.EXEC,))) == (
            "driver 'systemd' is not in [policy] allowed_drivers ('exec');"
            " add it there on this host to allow it"
        )
        assert reason(request(), HostPolicy(allowed_drivers=(Driver.EXEC,))) is None


class TestAllowedCommands:
    POLICY = HostPolicy(allowed_commands=("/usr/bin/*", "/opt/app/**"))

    @pytest.mark.parametrize(
        ("path", "allowed"),
        [
            ("/usr/bin/app", True),
            ("/usr/bin/sub/app", False),  # `*` stays within one directory
            ("/opt/app/bin/deep/run", True),  # `**` does not
            ("/usr/local/bin/app", False),
            ("/tmp/app", False),
        ],
    )
    def test_the_found_path_must_match_a_glob(self, path: str, allowed: bool) -> None:
        """The absolute path the runtime would execute is what the globs match."""
        job = request(programs=(Program("command", "app", path, path),))
        assert (reason(job, self.POLICY) is None) is allowed

    def test_a_refusal_shows_the_path_and_what_the_job_gave(self) -> None:
        """The reason names the found path, the program as given, and the globs."""
        job = request(programs=(Program("command", "app", "/tmp/x/app", "/tmp/x/app"),))
        assert reason(job, self.POLICY) == (
            "command /tmp/x/app (from 'app') matches none of [policy] allowed_commands"
            " ('/usr/bin/*', '/opt/app/**'); add a glob that matches it there on this host"
            " to allow it"
        )

    def test_exec_checks_are_judged_too(self) -> None:
        """A health check's program must match as well: it runs on the host like the job."""
        check = Program("health check 2 command", "./check.sh", "./check.sh", "/srv/check.sh")
        job = request(programs=(*request().programs, check))
        assert str(reason(job, self.POLICY)).startswith(
            "health check 2 command /srv/check.sh (from './check.sh') matches none"
        )

    def test_a_program_not_found_cannot_match(self) -> None:
        """With globs, a program not on the PATH is refused; without, the runtime reports it."""
        job = request(programs=(Program("command", "nope", None, None),))
        assert reason(job, self.POLICY) == (
            "command 'nope' is not found on the job's PATH, so it matches none of [policy]"
            " allowed_commands ('/usr/bin/*', '/opt/app/**')"
        )
        assert reason(job, HostPolicy()) is None


class TestDeniedEnv:
    @pytest.mark.parametrize("name", DEFAULT_DENIED_ENV)
    def test_loader_variables_are_denied_by_default(self, name: str) -> None:
        """Each default denied variable in task.env refuses the job."""
        assert reason(request(env_names=frozenset({name, "PORT"})), HostPolicy()) == (
            f"task.env sets {name}, which [policy] denied_env lists;"
            " remove it from the job, or from denied_env on this host to allow it"
        )

    def test_names_match_case_sensitively(self) -> None:
        """``ld_preload`` is another variable (the loader reads only ``LD_PRELOAD``)."""
        assert reason(request(env_names=frozenset({"ld_preload"})), HostPolicy()) is None

    def test_the_list_is_the_host_owners(self) -> None:
        """An empty list allows every variable; a custom list denies its own names."""
        preload = request(env_names=frozenset({"LD_PRELOAD"}))
        assert reason(preload, HostPolicy(denied_env=())) is None
        assert reason(request(env_names=frozenset({"JAVA_TOOL_OPTIONS"})), HostPolicy()) is None
        custom = HostPolicy(denied_env=("JAVA_TOOL_OPTIONS",))
        assert reason(request(env_names=frozenset({"JAVA_TOOL_OPTIONS"})), custom) is not None


class TestOrder:
    def test_the_first_broken_rule_is_reported(self) -> None:
        """A job breaking every rule is refused for the first in RULES order."""
        everything = request(
            driver=Driver.SYSTEMD,
            user="root",
            user_uid=0,
            env_names=frozenset({"LD_PRELOAD"}),
            programs=(Program("command", "x", "/tmp/x", "/tmp/x"),),
        )
        strict = HostPolicy(
            allowed_users=("app",), allowed_drivers=(Driver.EXEC,), allowed_commands=("/usr/*",)
        )
        seen = []
        policy = strict
        for _ in RULES:
            refusal = decide(everything, policy, euid=ROOT)
            assert refusal is not None
            seen.append(refusal.rule)
            policy = relax(policy, refusal.rule)
        assert seen == list(RULES)
        assert decide(everything, policy, euid=ROOT) is None


def replace_policy(policy: HostPolicy, **changes: object) -> HostPolicy:
    return policy.model_copy(update=changes)


def relax(policy: HostPolicy, rule: str) -> HostPolicy:
    """``policy`` with ``rule`` opened up."""
    return replace_policy(policy, **{rule: True if rule == "allow_root" else ()})


class TestGlobs:
    @pytest.mark.parametrize(
        ("pattern", "path", "matches"),
        [
            ("/usr/bin/python3", "/usr/bin/python3", True),
            ("/usr/bin/python3", "/usr/bin/python3.11", False),
            ("/usr/bin/python3*", "/usr/bin/python3.11", True),
            ("/usr/bin/*", "/usr/bin/x/y", False),
            ("/usr/**", "/usr/bin/x/y", True),
            ("/usr/bin/?", "/usr/bin/a", True),
            ("/usr/bin/?", "/usr/bin//", False),
            ("/opt/py[23]", "/opt/py3", True),
            ("/opt/py[!23]", "/opt/py3", False),
            ("/opt/py[!23]", "/opt/py4", True),
            ("/opt/a.b", "/opt/axb", False),  # regex characters are literal
            ("/opt/[*]", "/opt/*", True),
            ("/opt/[*]", "/opt/x", False),
        ],
    )
    def test_glob(self, pattern: str, path: str, matches: bool) -> None:
        """``*`` and ``?`` stay within a directory, ``**`` crosses them, classes as fnmatch."""
        assert glob_matches(pattern, path) is matches


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


class TestResolveProgram:
    def test_a_bare_name_is_the_first_executable_file_on_the_path(self, tmp_path: Path) -> None:
        """As execvpe: a directory or a file without an execute bit is skipped."""
        (tmp_path / "a" / "tool").mkdir(parents=True)  # a directory named like the program
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "tool").write_text("not executable")
        executable(tmp_path / "c" / "tool")
        executable(tmp_path / "d" / "tool")
        search = os.pathsep.join(str(tmp_path / d) for d in "abcd")
        found = resolve_program(
            "tool", search_path=search, cwd="/", is_executable=is_executable_file
        )
        assert found == str(tmp_path / "c" / "tool")

    def test_a_name_with_a_slash_is_taken_as_given(self, tmp_path: Path) -> None:
        """``./check.sh`` or ``bin/x`` are not looked up: the working directory decides."""
        for program in ("./check.sh", "bin/x", "/abs/y"):
            found = resolve_program(
                program, search_path="/usr/bin", cwd=str(tmp_path), is_executable=lambda p: True
            )
            assert found == program

    def test_an_empty_path_entry_is_the_working_directory(self, tmp_path: Path) -> None:
        """``PATH=:/usr/bin`` finds a program in the working directory first."""
        executable(tmp_path / "tool")
        found = resolve_program(
            "tool", search_path=":/usr/bin", cwd=str(tmp_path), is_executable=is_executable_file
        )
        assert found == "tool"

    def test_not_found(self, tmp_path: Path) -> None:
        """A bare name found nowhere is None."""
        assert (
            resolve_program(
                "nope", search_path=str(tmp_path), cwd="/", is_executable=is_executable_file
            )
            is None
        )


class TestDescribeLaunch:
    def launch(self, tmp_path: Path, command: list[str], **extra: object) -> LaunchSpec:
        values: dict[str, object] = {
            "job": "web",
            "version": 1,
            "command": command,
            "env": child_environment({"PATH": str(tmp_path / "bin")}),
            "working_dir": tmp_path / "work",
        }
        values.update(extra)
        return LaunchSpec(**values)  # type: ignore[arg-type]

    def test_programs_are_found_on_the_jobs_path_in_its_working_dir(self, tmp_path: Path) -> None:
        """The command on the child's PATH, each exec check relative to the working dir
        (normalised, so ``..`` shows where it really points); other checks run nothing."""
        executable(tmp_path / "bin" / "server")
        checks: list[HealthCheck] = [
            HttpCheck(type="http", url="http://127.0.0.1:1/"),
            ExecCheck(type="exec", command=["../bin/server", "--check"]),
        ]
        req = describe_launch(
            self.launch(tmp_path, ["server", "--port", "1"]),
            checks,
            driver=Driver.EXEC,
            job_env={"PORT": "1"},
            euid=os.geteuid(),
        )
        server = str(tmp_path / "bin" / "server")
        assert req.programs == (
            Program("command", "server", server, server),
            Program("health check 2 command", "../bin/server", "../bin/server", server),
        )
        assert req.env_names == {"PORT"}

    def test_the_user_is_looked_up_on_this_host(self, tmp_path: Path) -> None:
        """``user`` becomes its uid (None when it does not exist); the agent's euid its name."""
        root = describe_launch(
            self.launch(tmp_path, ["true"], user="root"),
            [],
            driver=Driver.EXEC,
            job_env={},
            euid=0,
        )
        assert (root.user, root.user_uid, root.agent_user) == ("root", 0, "root")
        ghost = describe_launch(
            self.launch(tmp_path, ["true"], user="no-such-user-x"),
            [],
            driver=Driver.EXEC,
            job_env={},
            euid=0,
        )
        assert ghost.user_uid is None

    def test_only_the_jobs_own_env_is_judged(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The agent's own PYTHONPATH or LD_PRELOAD neither refuses a job nor reaches it:
        only task.env names are judged, and the child's environment is an allow-list."""
        monkeypatch.setenv("PYTHONPATH", "/tmp/agent-only")
        monkeypatch.setenv("LD_AUDIT", "agent-only.so")
        launch = self.launch(tmp_path, ["true"], env=child_environment({"PORT": "1"}))
        assert "PYTHONPATH" not in launch.env
        assert "LD_AUDIT" not in launch.env
        req = describe_launch(launch, [], driver=Driver.EXEC, job_env={"PORT": "1"}, euid=1000)
        assert decide(req, HostPolicy(), euid=1000) is None
        denied = describe_launch(
            launch, [], driver=Driver.EXEC, job_env={"PYTHONPATH": "/x"}, euid=1000
        )
        assert decide(denied, HostPolicy(), euid=1000) is not None


def test_rules_are_the_policy_keys() -> None:
    """Each rule a refusal can name is a key of [policy]."""
    assert set(RULES) <= set(HostPolicy.model_fields)
