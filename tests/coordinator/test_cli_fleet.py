"""The operator CLI against a real coordinator process with two real agents (LocalFleet):
exit codes of ``job run``, ``--json`` output, error messages, ``events --limit``, ``--watch``,
the live view on a terminal, the polling fallback and name completion."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from coordinator import cli_jobs, liveview
from coordinator.cli import cli
from coordinator.demo.fleet import ADMIN_TOKEN, LocalFleet, free_port
from coordinator.follow import Snapshot
from coordinator.liveview import UntilRolloutEnds, follow_rollout
from tests.helpers import JOBS_AS_PYTEST_USER

pytestmark = pytest.mark.slow

PORT_LABELS = ("port_good", "port_bad", "port_watch", "port_bad_spec")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """A coordinator and two agents in two zones, with a port label per test job."""
    fleet = LocalFleet(
        tmp_path_factory.mktemp("cli-fleet"),
        heartbeat_interval="1s",
        heartbeat_ttl="10s",
        policy=JOBS_AS_PYTEST_USER,
    )
    try:
        fleet.start_coordinator()
        for i, zone in enumerate(("zone-a", "zone-b")):
            labels = {"zone": zone} | {label: str(free_port()) for label in PORT_LABELS}
            fleet.start_agent(f"n{i + 1}", labels)
        fleet.wait_nodes_ready(2)
        yield fleet
    finally:
        fleet.close()
        assert not fleet.workload_processes(), "a workload outlived the fleet"


def write_spec(
    path: Path, name: str, port_label: str, note: str, *, broken: bool = False, **rollout: Any
) -> Path:
    command = [sys.executable, "-m", "coordinator.demo.service", "--port"]
    command += ["${node.label.%s}" % port_label, "--version", "${job.version}"]  # noqa: UP031
    if broken:
        command.append("--broken")
    settings = {"min_healthy_time": "1s", "healthy_deadline": "30s"} | rollout
    lines = [
        f"name = {json.dumps(name)}",
        "[task]",
        f"command = {json.dumps(command)}",
        f"env = {{ GREETING = {json.dumps(note)} }}",
        "[[health.checks]]",
        'type = "http"',
        f'url = "http://127.0.0.1:${{node.label.{port_label}}}/"',
        'interval = "300ms"',
        "failure_threshold = 2",
        "[rollout]",
        *(f"{key} = {json.dumps(value)}" for key, value in settings.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(fleet: LocalFleet, *args: str, **env: str) -> Any:
    base = {"FLEETWAVE_ADDR": fleet.url, "FLEETWAVE_TOKEN": ADMIN_TOKEN} | env
    return CliRunner().invoke(cli, list(args), env=base, prog_name="fleetwave")


@pytest.fixture(scope="module")
def good(fleet: LocalFleet, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The job ``good``, version 1 rolled out successfully."""
    spec = write_spec(tmp_path_factory.mktemp("good") / "good.toml", "good", "port_good", "v1")
    result = run(fleet, "job", "run", str(spec))
    assert result.exit_code == 0, result.output
    return "good"


class TestJobRun:
    def test_good_version_exits_0(self, fleet: LocalFleet, good: str) -> None:
        """A healthy version: the rollout ends ``running`` and ``job run`` exits 0."""
        assert fleet.status(good)["state"]["state_type"] == "running"

    def test_good_version_prints_progress_lines(self, fleet: LocalFleet, tmp_path: Path) -> None:
        """Off a terminal, ``job run`` prints each state and node result, then the result."""
        spec = write_spec(tmp_path / "lines.toml", "lines", "port_watch", "v1", canary=1)
        result = run(fleet, "job", "run", str(spec))
        assert result.exit_code == 0, result.output
        assert "Job 'lines': version 1 submitted" in result.stdout
        assert "[deploying]" in result.stdout
        assert " updated" in result.stdout
        assert "Result: running: version 1 is running on 2 of 2 nodes" in result.stdout
        run(fleet, "job", "delete", "lines")

    def test_failing_version_is_rolled_back_and_exits_1(
        self, fleet: LocalFleet, tmp_path: Path
    ) -> None:
        """A version failing its health check is rolled back; ``job run`` exits 1 and says why."""
        spec = write_spec(tmp_path / "bad.toml", "bad", "port_bad", "v1", canary=1)
        assert run(fleet, "job", "run", str(spec)).exit_code == 0
        # A broken version fails at its healthy_deadline: short, but not so short that a
        # loaded machine could miss it for the good version before.
        write_spec(
            tmp_path / "bad.toml",
            "bad",
            "port_bad",
            "v2",
            broken=True,
            canary=1,
            healthy_deadline="10s",
        )
        result = run(fleet, "job", "run", str(spec))
        assert result.exit_code == 1, result.output
        assert "Result: rollout_failed" in result.stdout
        assert "rolled back to version 1" in result.stdout
        assert "failed on n" in result.stdout  # the failed canary by name, not by id
        status = fleet.status("bad")
        assert status["rollout"]["type"] == "rollback"
        assert status["rollout"]["rollback_to_version"] == 2

    def test_invalid_spec_exits_2_naming_the_field(self, fleet: LocalFleet, tmp_path: Path) -> None:
        """A spec the API rejects exits 2 and lists each field with its problem."""
        spec = write_spec(tmp_path / "x.toml", "badspec", "port_bad_spec", "v1", canary=-1)
        result = run(fleet, "job", "run", str(spec))
        assert result.exit_code == 2
        assert "rollout.canary" in result.stderr

    def test_unchanged_spec_exits_with_current_state(
        self, fleet: LocalFleet, good: str, tmp_path: Path
    ) -> None:
        """Resubmitting the same spec changes nothing and exits 0 at once for a running job."""
        spec = write_spec(tmp_path / "good.toml", "good", "port_good", "v1")
        result = run(fleet, "job", "run", str(spec))
        assert result.exit_code == 0
        assert "unchanged, still version 1" in result.stdout

    def test_timeout_stops_watching_with_exit_1(self, fleet: LocalFleet, tmp_path: Path) -> None:
        """A job no node matches stays ``queued``; ``--timeout`` ends the watch with exit 1."""
        spec = write_spec(tmp_path / "q.toml", "queued-timeout", "port_bad_spec", "v1")
        spec.write_text(spec.read_text() + '[target]\nselector = { role = "none" }\n')
        result = run(fleet, "job", "run", str(spec), "--timeout", "5")
        assert result.exit_code == 1, result.output
        assert "[queued]" in result.stdout
        assert "Stopped watching after 5s; the rollout goes on." in result.stderr

    def test_ctrl_c_stops_watching_not_the_rollout(self, fleet: LocalFleet, tmp_path: Path) -> None:
        """SIGINT to a watching ``job run`` process exits 130 and says the rollout goes on."""
        spec = write_spec(tmp_path / "q.toml", "queued-sigint", "port_bad_spec", "v1")
        spec.write_text(spec.read_text() + '[target]\nselector = { role = "none" }\n')
        env = os.environ | {"FLEETWAVE_ADDR": fleet.url, "FLEETWAVE_TOKEN": ADMIN_TOKEN}
        # Ctrl-C reaches a foreground job, whose SIGINT is at its default. Run in the
        # background by a non-interactive shell (`pytest &`), pytest and so this child inherit
        # an ignored SIGINT, which Python keeps ignoring (no KeyboardInterrupt): the CLI would
        # watch on, past the timeout below. So the child takes the default handler first.
        code = (
            "import signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
            " from coordinator.cli import main; main()"
        )
        with subprocess.Popen(
            [sys.executable, "-c", code, "job", "run", str(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as proc:
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()  # "Job ...: version 1 submitted" once it is in
                assert b"submitted" in line
                deadline = time.monotonic() + 30
                while fleet.status("queued-sigint")["state"]["state_type"] != "queued":
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                proc.send_signal(signal.SIGINT)
                _out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert proc.returncode == 130, err
        assert b"Stopped watching; the rollout goes on" in err
        assert fleet.status("queued-sigint")["state"]["state_type"] == "queued"


class TestJson:
    def test_read_commands_print_parseable_json_with_stable_keys(
        self, fleet: LocalFleet, good: str, tmp_path: Path
    ) -> None:
        """Every read command's ``--json`` is one JSON document with the API's keys."""
        spec = write_spec(tmp_path / "good.toml", "good", "port_good", "v1")
        expected = {
            ("job", "status", good): {
                "created_at",
                "updated_at",
                "version",
                "revision",
                "state",
                "rollout",
            },
            ("job", "list"): {"jobs"},
            ("job", "history", good): {"versions"},
            ("job", "events", good): {"events"},
            ("job", "plan", str(spec)): {"name", "changed", "diff", "rollout", "warnings"},
            ("rollout", "show", good): {"type", "phase", "canary", "waves", "target_version"},
            ("node", "list"): {"nodes"},
            ("node", "show", "n1"): {"id", "name", "status", "labels", "assignments"},
        }
        for args, keys in expected.items():
            result = run(fleet, *args, "--json")
            assert result.exit_code == 0, (args, result.output)
            body = json.loads(result.stdout)
            assert keys <= body.keys(), args
            assert "\x1b[" not in result.stdout  # no terminal markup
        status = json.loads(run(fleet, "job", "status", good, "--json").stdout)
        assert set(status["rollout"]) == {
            "type",
            "canary_nodes",
            "canary_promoted",
            "current_wave",
            "total_waves",
            "total_nodes",
            "updated_nodes",
            "failed_nodes",
            "rollback_to_version",
            "started_at",
            "completed_at",
        }


class TestErrors:
    def test_missing_job_says_no_job_named(self, fleet: LocalFleet) -> None:
        """A missing job: exit 2, "no job named X", pointing at ``fleetwave job list``."""
        for args in (
            ("job", "status", "nope"),
            ("job", "events", "nope"),
            ("rollout", "show", "nope"),
        ):
            result = run(fleet, *args)
            assert result.exit_code == 2
            assert "no job named nope; see `fleetwave job list`" in result.stderr

    def test_missing_node_points_at_node_list(self, fleet: LocalFleet) -> None:
        """A missing node: exit 2 and a pointer at ``fleetwave node list``."""
        result = run(fleet, "node", "show", "nope")
        assert result.exit_code == 2
        assert "`fleetwave node list`" in result.stderr

    def test_bad_token_explains_token_and_file(self, fleet: LocalFleet) -> None:
        """A wrong token: exit 2 and the fix (FLEETWAVE_TOKEN or the admin.token file)."""
        result = run(fleet, "job", "list", FLEETWAVE_TOKEN="wrong")
        assert result.exit_code == 2
        assert "refused the token" in result.stderr
        assert "FLEETWAVE_TOKEN" in result.stderr
        assert "admin.token" in result.stderr

    def test_token_file_flag_wins_over_env_token(self, fleet: LocalFleet, tmp_path: Path) -> None:
        """``--token-file`` given as a flag is used even when FLEETWAVE_TOKEN is set."""
        path = tmp_path / "admin.token"
        path.write_text(ADMIN_TOKEN + "\n")
        result = run(fleet, "--token-file", str(path), "job", "list", FLEETWAVE_TOKEN="wrong")
        assert result.exit_code == 0, result.output


class TestEvents:
    def test_limit_shows_the_newest_events(
        self, fleet: LocalFleet, good: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``--limit N`` shows the N most recent events (paging through the whole history)."""
        every = fleet.api.request("GET", "/v1/events", query={"job": good, "limit": "1000"}).body[
            "events"
        ]
        assert len(every) > 5
        monkeypatch.setattr(cli_jobs, "EVENTS_PAGE", 2)  # force several pages
        result = run(fleet, "job", "events", good, "--limit", "3", "--json")
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)["events"]
        assert [e["id"] for e in shown] == [e["id"] for e in every[-3:]]
        table = run(fleet, "job", "events", good, "--limit", "1").stdout.splitlines()
        assert len(table) == 2
        assert every[-1]["kind"] in table[1]


class SeenProgress(UntilRolloutEnds):
    """UntilRolloutEnds that tells the test once it has seen the rollout in progress."""

    def __init__(self, seen: threading.Event) -> None:
        self.seen = seen

    def __call__(self, snap: Snapshot) -> int | None:
        code = super().__call__(snap)
        if self.seen_progress:
            self.seen.set()
        return code


def gated_rollout(
    fleet: LocalFleet, tmp_path: Path, note: str
) -> tuple[threading.Thread, SeenProgress]:
    """Start a new version of ``good`` that waits at its canary gate, and a thread that
    promotes it only once the watcher (stopped by the returned SeenProgress) saw it in
    progress: the test cannot miss the rollout however slowly this machine runs it."""
    spec = write_spec(
        tmp_path / "good.toml", "good", "port_good", note, canary=1, auto_promote=False
    )
    assert run(fleet, "job", "run", str(spec), "--detach").exit_code == 0
    seen = threading.Event()

    def promote() -> None:
        if seen.wait(timeout=120):
            fleet.wait_state("good", "rollout_paused")
            fleet.api.request("POST", "/v1/jobs/good/rollout/promote", {"full": True})

    thread = threading.Thread(target=promote, daemon=True)
    thread.start()
    return thread, SeenProgress(seen)


class TestWatch:
    def test_status_watch_json_follows_the_rollout_to_its_end(
        self, fleet: LocalFleet, good: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``job status --watch --json`` prints a JSON status per change and exits 0 at the end."""
        promoter, stop = gated_rollout(fleet, tmp_path, "watch-json")
        monkeypatch.setattr(liveview, "UntilRolloutEnds", lambda: stop)
        result = run(fleet, "job", "status", good, "--watch", "--json")
        promoter.join()
        assert result.exit_code == 0, result.output
        statuses = [json.loads(line) for line in result.stdout.splitlines()]
        assert statuses[-1]["state"]["state_type"] == "running"
        assert statuses[-1]["version"] == statuses[0]["version"]
        assert [s["revision"] for s in statuses] == sorted({s["revision"] for s in statuses})

    def test_live_view_on_a_terminal(
        self, fleet: LocalFleet, good: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """On a terminal the rollout is drawn as a live panel with each node, until it ends."""
        promoter, stop = gated_rollout(fleet, tmp_path, "live")
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=120, color_system=None)
        code = follow_rollout(fleet.api, good, stop=stop, console=console, timeout=120)
        promoter.join()
        assert code == 0
        screen = out.getvalue()
        assert "running" in screen
        assert "n1" in screen
        assert "n2" in screen
        assert "Result: running" in capsys.readouterr().out

    def test_polling_fallback_without_the_stream(
        self, fleet: LocalFleet, good: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without the event stream the view polls every second and still sees the end."""
        promoter, stop = gated_rollout(fleet, tmp_path, "polling")
        code = follow_rollout(fleet.api, good, stop=stop, use_stream=False, timeout=120)
        promoter.join()
        assert code == 0
        assert "Result: running" in capsys.readouterr().out


class TestCompletion:
    def test_job_and_node_names_complete_from_the_api(self, fleet: LocalFleet, good: str) -> None:
        """Completing a job or node argument asks the coordinator for names."""
        env = {"_FLEETWAVE_COMPLETE": "bash_complete", "COMP_CWORD": "3"}
        jobs = run(fleet, COMP_WORDS="fleetwave job status go", **env)
        assert "plain,good" in jobs.stdout.splitlines()
        nodes = run(fleet, COMP_WORDS="fleetwave node show n", **env)
        assert {"plain,n1", "plain,n2"} <= set(nodes.stdout.splitlines())
