"""The operator CLI without a coordinator: help texts, completion, usage errors, the pure
pieces of the live view (SSE parsing, progress lines, rendering) and the token rules."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from coordinator.cli import cli
from coordinator.client import ApiError, SseParser
from coordinator.cliutil import explain, resolve_token
from coordinator.demo.fleet import free_port
from coordinator.follow import Snapshot, progress_line
from coordinator.liveview import PlainReporter, render, summary_lines


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, prog_name="fleetwave")


def walk(command: click.Command, path: str = "fleetwave") -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += walk(sub, f"{path} {name}")
    return found


class TestHelp:
    def test_every_command_and_option_has_help(self) -> None:
        """Every command has a help text and every option a non-empty help string."""
        missing = []
        for path, command in walk(cli):
            if not (command.help or "").strip():
                missing.append(path)
            for param in command.params:
                if isinstance(param, click.Option) and not (param.help or "").strip():
                    missing.append(f"{path} {param.opts[0]}")
        assert not missing

    @pytest.mark.parametrize("path", [p for p, _ in walk(cli)])
    def test_help_runs_for_every_command(self, path: str) -> None:
        """``--help`` prints usage and exits 0 for every command."""
        result = invoke(*path.split()[1:], "--help")
        assert result.exit_code == 0, result.output
        assert "Usage: fleetwave" in result.output

    def test_read_commands_have_json(self) -> None:
        """Every read command offers ``--json``."""
        reads = [
            "job status",
            "job list",
            "job history",
            "job plan",
            "job events",
            "rollout show",
            "node list",
            "node show",
            "token list",
            "token whoami",
        ]
        commands = dict(walk(cli))
        for name in reads:
            opts = {o for p in commands[f"fleetwave {name}"].params for o in p.opts}
            assert "--json" in opts, name


class TestCompletion:
    @pytest.mark.parametrize(
        ("shell", "marker"),
        [("bash", "complete -o nosort"), ("zsh", "compdef"), ("fish", "complete --no-files")],
    )
    def test_completion_prints_the_script(self, shell: str, marker: str) -> None:
        """``completion SHELL`` prints click's script for that shell, wired to fleetwave."""
        result = invoke("completion", shell)
        assert result.exit_code == 0
        assert marker in result.output
        assert "_FLEETWAVE_COMPLETE" in result.output

    def test_unknown_shell_is_a_usage_error(self) -> None:
        """An unsupported shell exits 2 and lists the choices."""
        result = invoke("completion", "tcsh")
        assert result.exit_code == 2
        assert "bash" in result.output

    def test_names_complete_to_nothing_when_unreachable(self) -> None:
        """Completing a job name with no coordinator offers nothing and does not fail."""
        env = {
            "_FLEETWAVE_COMPLETE": "bash_complete",
            "COMP_WORDS": "fleetwave job status ",
            "COMP_CWORD": "3",
            "FLEETWAVE_ADDR": f"http://127.0.0.1:{free_port()}",
        }
        result = invoke(env=env)
        assert result.exit_code == 0
        assert result.output.strip() == ""


class TestUsageErrors:
    def test_unreachable_coordinator_exits_2_and_says_what_to_do(self) -> None:
        """A refused connection names the address and FLEETWAVE_ADDR, exit 2."""
        addr = f"http://127.0.0.1:{free_port()}"
        result = invoke("--addr", addr, "job", "list")
        assert result.exit_code == 2
        assert f"is the coordinator running at {addr}?" in result.stderr
        assert "connection refused" in result.stderr
        assert "FLEETWAVE_ADDR" in result.stderr

    def test_unreachable_coordinator_in_job_run_exits_2(self, tmp_path: Path) -> None:
        """``job run`` against no coordinator exits 2 (not 1: nothing was rolled out)."""
        spec = tmp_path / "web.toml"
        spec.write_text('name = "web"\n[task]\ncommand = ["true"]\n')
        result = invoke("--addr", f"http://127.0.0.1:{free_port()}", "job", "run", str(spec))
        assert result.exit_code == 2
        assert "FLEETWAVE_ADDR" in result.stderr

    def test_bad_spec_file_exits_2(self, tmp_path: Path) -> None:
        """A file that is not valid TOML exits 2 with the parser's message."""
        spec = tmp_path / "web.toml"
        spec.write_text("name = \n")
        result = invoke("job", "run", str(spec))
        assert result.exit_code == 2
        assert "is not valid TOML" in result.stderr

    def test_spec_without_name_exits_2(self, tmp_path: Path) -> None:
        """A spec without ``name`` exits 2 naming the file."""
        spec = tmp_path / "web.yaml"
        spec.write_text("type: service\n")
        result = invoke("job", "plan", str(spec))
        assert result.exit_code == 2
        assert "has no 'name'" in result.stderr

    def test_missing_file_exits_2(self, tmp_path: Path) -> None:
        """A missing spec file exits 2."""
        result = invoke("job", "run", str(tmp_path / "nope.toml"))
        assert result.exit_code == 2
        assert "cannot read" in result.stderr


class TestErrorMessages:
    def test_404_of_a_job_points_at_job_list(self) -> None:
        """A missing job reads "no job named X" and names ``fleetwave job list``."""
        exc = ApiError(404, "not_found", "job 'x' not found", {"job": "x"})
        assert explain(exc).startswith("no job named x; see `fleetwave job list`")

    def test_404_of_a_node_points_at_node_list(self) -> None:
        """A missing node names ``fleetwave node list``."""
        exc = ApiError(404, "not_found", "node 'n' not found", {"node": "n"})
        assert "`fleetwave node list`" in explain(exc)

    def test_401_explains_the_token(self) -> None:
        """A refused token names FLEETWAVE_TOKEN and the admin.token file."""
        text = explain(ApiError(401, "unauthorized", "invalid token", {}))
        assert "FLEETWAVE_TOKEN" in text
        assert "admin.token" in text
        assert explain(ApiError(401, "unauthorized", "x", {}), token_given=False).startswith(
            "no token given"
        )

    def test_validation_errors_list_each_field(self) -> None:
        """A 400 lists every ``{field, message}``."""
        errors = [{"field": "rollout.canary", "message": "must be >= 0"}]
        text = explain(ApiError(400, "invalid", "invalid job spec", {"errors": errors}))
        assert "  - rollout.canary: must be >= 0" in text


class TestToken:
    def test_flag_token_file_beats_env_token(self, tmp_path: Path) -> None:
        """``--token-file`` given on the command line wins over FLEETWAVE_TOKEN."""
        path = tmp_path / "admin.token"
        path.write_text("from-file\n")
        assert resolve_token("from-env", str(path), False, True) == "from-file"

    def test_flag_token_beats_everything(self, tmp_path: Path) -> None:
        """``--token`` on the command line wins over any token file."""
        path = tmp_path / "admin.token"
        path.write_text("from-file\n")
        assert resolve_token("from-flag", str(path), True, True) == "from-flag"

    def test_env_token_beats_env_token_file(self, tmp_path: Path) -> None:
        """With both from the environment, FLEETWAVE_TOKEN wins over FLEETWAVE_TOKEN_FILE."""
        assert resolve_token("from-env", str(tmp_path / "missing"), False, False) == "from-env"

    def test_env_token_file_alone_is_read(self, tmp_path: Path) -> None:
        """FLEETWAVE_TOKEN_FILE alone is read and stripped."""
        path = tmp_path / "admin.token"
        path.write_text("  tok \n")
        assert resolve_token(None, str(path)) == "tok"

    def test_unreadable_token_file_exits_2(self, tmp_path: Path) -> None:
        """An unreadable token file is a usage error when a command needs the token."""
        addr = f"http://127.0.0.1:{free_port()}"
        result = invoke("--addr", addr, "--token-file", str(tmp_path / "nope"), "job", "list")
        assert result.exit_code == 2
        assert "cannot read token file" in result.stderr

    def test_token_file_is_not_read_for_help(self, tmp_path: Path) -> None:
        """Commands that need no API (help, completion) ignore a bad token file."""
        result = invoke("--token-file", str(tmp_path / "nope"), "completion", "bash")
        assert result.exit_code == 0


class TestSseParser:
    def test_parses_messages_comments_and_ids(self) -> None:
        """Lines become messages at each blank line; comments are skipped; CRLF is fine."""
        parser = SseParser()
        lines = [
            "retry: 2000\n",
            "\n",
            ": keepalive\n",
            "\n",
            "id: 7\r\n",
            "event: node_failed\n",
            'data: {"id": 7}\n',
            "\n",
            "event: status\n",
            "data: {}\n",
            "\n",
        ]
        messages = [m for line in lines if (m := parser.feed(line)) is not None]
        assert [(m.event, m.id) for m in messages] == [("node_failed", 7), ("status", None)]
        assert messages[0].json() == {"id": 7}

    def test_multi_line_data_is_joined(self) -> None:
        """Several ``data:`` lines join with newlines."""
        parser = SseParser()
        for line in ["data: a\n", "data: b\n"]:
            assert parser.feed(line) is None
        message = parser.feed("\n")
        assert message is not None
        assert message.data == "a\nb"
        assert message.event == "message"


def status(state: str, message: str = "", **rollout: Any) -> dict[str, Any]:
    ro = {
        "type": "update",
        "canary_nodes": ["id-1"],
        "canary_promoted": False,
        "current_wave": 0,
        "total_waves": 2,
        "total_nodes": 3,
        "updated_nodes": 3,
        "failed_nodes": 0,
        "rollback_to_version": 1,
        "started_at": "2026-01-01T00:00:00Z",
        "completed_at": "0001-01-01T00:00:00Z",
    } | rollout
    return {
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "version": 2,
        "revision": 5,
        "state": {"state_type": state, "message": message, "details": {}},
        "rollout": ro,
    }


def node(node_id: str, name: str, result: str, reason: str = "", version: int = 2) -> Any:
    return {
        "id": node_id,
        "name": name,
        "node_status": "ready",
        "assigned_version": version,
        "execution": "healthy" if result != "failed" else "unhealthy",
        "running_version": version,
        "message": "health checks passing",
        "restarts": 0,
        "result": result,
        "reason": reason,
    }


def rollout_view(canary: list[Any], wave: list[Any]) -> dict[str, Any]:
    return {
        "type": "update",
        "phase": "canary",
        "for_version": 2,
        "target_version": 2,
        "stable_version": 1,
        "from_version": 1,
        "rolled_back_from": 0,
        "started_at": "2026-01-01T00:00:00Z",
        "paused_reason": "",
        "halted_reason": "",
        "cause": "",
        "canary": {"promoted": False, "state": "active", "nodes": canary},
        "waves": [{"wave": 1, "state": "pending", "nodes": wave}],
    }


def snapshot(st: dict[str, Any], view: dict[str, Any] | None = None) -> Snapshot:
    return Snapshot(
        name="web",
        status=st,
        rollout=view,
        labels={"id-1": {"zone": "a"}, "id-2": {"zone": "b"}},
        names={"id-1": "n1", "id-2": "n2"},
        spread_by="zone",
    )


class TestProgress:
    def test_pending_hides_the_previous_rollouts_counters(self) -> None:
        """While a new version waits for the engine, the old rollout's counters are not shown."""
        line = progress_line(status("pending", "new version accepted"))
        assert line == "[pending] new version accepted"
        assert "3/3" in progress_line(status("deploying", "rolling out"))

    def test_plain_lines_report_changes_once(self) -> None:
        """The plain reporter prints the state line and each node's result only on change."""
        view = rollout_view([node("id-1", "n1", "in_progress")], [node("id-2", "n2", "waiting")])
        reporter = PlainReporter()
        first = reporter.lines(snapshot(status("deploying", "canary phase"), view))
        assert first[0].startswith("[deploying] canary phase")
        assert "  canary n1 (a) v2 in_progress" in first
        assert not any("n2" in line for line in first)  # waiting is the default: not news
        assert reporter.lines(snapshot(status("deploying", "canary phase"), view)) == []
        failed = rollout_view(
            [node("id-1", "n1", "failed", "not healthy within healthy_deadline (3s)")],
            [node("id-2", "n2", "waiting")],
        )
        lines = reporter.lines(snapshot(status("deploying", "canary phase"), failed))
        assert lines == ["  canary n1 (a) v2 failed: not healthy within healthy_deadline (3s)"]

    def test_summary_names_failed_nodes(self) -> None:
        """The summary turns ``failed.<id>`` details and IDs in messages into node names."""
        st = status("rollout_failed", "version 2 failed: id-1: unhealthy; rolled back")
        st["state"]["details"] = {"failed.id-1": "unhealthy", "rolled_back_from": "2"}
        lines = summary_lines(snapshot(st))
        assert lines[0] == "Result: rollout_failed: version 2 failed: n1: unhealthy; rolled back"
        assert "  failed on n1: unhealthy" in lines

    def test_render_shows_groups_nodes_zones_and_failures(self) -> None:
        """The live panel lists canary and waves with each node, its zone, result and reason."""
        view = rollout_view(
            [node("id-1", "n1", "failed", "not healthy in time")], [node("id-2", "n2", "waiting")]
        )
        view["halted_reason"] = "1 of 3 nodes failed (allowed: 0): id-1: not healthy in time"
        out = io.StringIO()
        Console(file=out, width=140, color_system=None).print(
            render(snapshot(status("deploying", "halted"), view))
        )
        text = out.getvalue()
        for expected in ("canary (active)", "wave 1 (pending)", "ZONE", "✗ failed", "n2"):
            assert expected in text
        assert "halted: 1 of 3 nodes failed (allowed: 0): n1: not healthy in time" in text

    def test_render_while_pending_waits_for_the_engine(self) -> None:
        """A pending version shows no counters or waves of the previous rollout."""
        view = rollout_view([node("id-1", "n1", "updated")], [])
        out = io.StringIO()
        Console(file=out, width=120, color_system=None).print(
            render(snapshot(status("pending", "new version accepted"), view))
        )
        text = out.getvalue()
        assert "waiting for the engine to plan version 2" in text
        assert "updated 3/3" not in text
        assert "n1" not in text


CLI_DOC = Path(__file__).parents[2] / "docs" / "cli.md"


class TestDocs:
    def test_every_command_has_a_section_in_docs(self) -> None:
        """docs/cli.md has a ``--help`` section for every command of the CLI."""
        text = CLI_DOC.read_text()
        for path, _command in walk(cli):
            assert f"### `{path}`" in text, path

    @pytest.mark.parametrize("path", [p for p, _ in walk(cli)])
    def test_help_section_is_the_real_help(self, path: str) -> None:
        """Each section is the command's literal ``--help`` on an 80-column terminal (click
        wraps at 78), so every option and its help text are documented as they are."""
        section = CLI_DOC.read_text().split(f"### `{path}`\n", 1)[1]
        documented = section.split("```text\n", 1)[1].split("\n```", 1)[0]
        result = CliRunner().invoke(
            cli, [*path.split()[1:], "--help"], prog_name="fleetwave", terminal_width=78
        )
        assert documented == result.output.rstrip("\n")
