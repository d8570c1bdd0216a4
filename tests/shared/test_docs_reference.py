"""The user docs stay true to the code: every spec field documented with its real default,
every job spec example parses, every state and failure reason explained."""

from __future__ import annotations

import json
import re
import tomllib
import types
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from coordinator.config import CoordinatorConfig
from coordinator.specfile import load_spec_file
from coordinator.store.postgres import LIVENESS_FLUSH_SECONDS, POOL_SIZE
from shared.durations import format_duration
from shared.nodes import NodeStatus
from shared.protocol import ExecutionState
from shared.spec import JobSpec, parse_job_spec
from shared.status import JobStateType, RolloutType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
JOB_SPEC_DOC = DOCS / "job-spec.md"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
OPERATIONS = DOCS / "operations.md"
_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SPEC_LANGS = {"toml": ".toml", "yaml": ".yaml", "yml": ".yaml", "json": ".json"}


# --- walking the model --------------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every pydantic model named anywhere inside a type annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_list(arg) for arg in get_args(annotation))
    return False


def spec_fields(model: type[BaseModel] = JobSpec, prefix: str = "") -> dict[str, FieldInfo]:
    """Every field path of the job spec: ``rollout.canary``, ``task.artifacts[].url``, ...

    Items of a list of tables get ``[]``; the check types of ``health.checks`` share paths.
    """
    out: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        path = prefix + name
        out.setdefault(path, info)
        separator = "[]." if _is_list(info.annotation) else "."
        for sub in _models_in(info.annotation):
            for sub_path, sub_info in spec_fields(sub, path + separator).items():
                out.setdefault(sub_path, sub_info)
    return out


def _as_written(value: object) -> str | None:
    """A default as the docs write it in TOML, or None when it is not a plain literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return f'"{value.value}"'
    if isinstance(value, timedelta):
        return f'"{format_duration(value)}"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int):
        return str(value)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    return None


# --- reading the docs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line} ({self.lang})"


def code_blocks(paths: list[Path]) -> list[Block]:
    blocks = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(Block(path.name, line, match.group(1).lower(), match.group(2)))
    return blocks


def _decode(block: Block) -> Any:
    if block.lang == "toml":
        return tomllib.loads(block.text)
    if block.lang in ("yaml", "yml"):
        return yaml.safe_load(block.text)
    return json.loads(block.text)


def _looks_like_spec(data: Any) -> bool:
    """A whole spec or a fragment of one: only job spec keys at the top, and a table among them."""
    tables = {"target", "task", "health", "rollout"}
    return (
        isinstance(data, dict)
        and bool(data)
        and set(data) <= set(JobSpec.model_fields)
        and bool(tables & set(data))
    )


def spec_blocks() -> list[Block]:
    """Code blocks in docs/ that hold a job spec or a fragment of one."""
    out = []
    for block in code_blocks(sorted(DOCS.glob("*.md"))):
        if block.lang not in _SPEC_LANGS:
            continue
        try:
            data = _decode(block)
        except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError):
            continue  # not a spec at all (e.g. an agent config fragment, a shell session)
        if _looks_like_spec(data):
            out.append(block)
    return out


def _completed(data: dict[str, Any]) -> dict[str, Any]:
    """A fragment made whole: the required ``name`` and ``task.command`` filled in if absent."""
    whole = {"name": "example", **data}
    task = whole.get("task")
    whole["task"] = {"command": ["true"], **(task if isinstance(task, dict) else {})}
    return whole


def _default_cells() -> dict[str, str]:
    """``field path -> default cell`` from the reference tables of docs/job-spec.md."""
    cells = {}
    for line in JOB_SPEC_DOC.read_text(encoding="utf-8").splitlines():
        columns = [c.strip() for c in re.split(r"(?<!\\)\|", line)]
        if len(columns) >= 4 and (match := re.fullmatch(r"`([a-z0-9_.\[\]]+)`", columns[1])):
            cells[match.group(1)] = columns[3]
    return cells


FIELDS = spec_fields()
SPEC_BLOCKS = spec_blocks()


class TestJobSpecReference:
    def test_walk_finds_nested_fields(self) -> None:
        """The walk reaches fields inside tables, lists of tables and the check union."""
        for path in (
            "rollout.min_healthy_time",
            "task.restart.max_restarts",
            "task.artifacts[].sha256",
            "health.checks[].url",
            "health.checks[].address",
            "health.checks[].command",
            "target.count",
        ):
            assert path in FIELDS

    @pytest.mark.parametrize("path", sorted(FIELDS))
    def test_every_field_is_documented(self, path: str) -> None:
        """Each field path of JobSpec has its own row in docs/job-spec.md."""
        assert path in _default_cells(), f"`{path}` has no row in docs/job-spec.md"

    @pytest.mark.parametrize("path", sorted(FIELDS))
    def test_documented_default_is_the_real_one(self, path: str) -> None:
        """A row's default column starts with the model's default, or says it is required."""
        info = FIELDS[path]
        cell = _default_cells()[path]
        if info.is_required():
            assert "required" in cell, f"{path} is required but documented as {cell!r}"
            return
        literal = _as_written(info.get_default(call_default_factory=True))
        if literal is not None:
            written = re.match(r"^`([^`]*)`", cell)
            assert written is not None, f"{path}: default {literal} not documented ({cell!r})"
            assert written.group(1) == literal, f"{path}: docs say {cell!r}, code {literal}"

    def test_every_documented_field_exists(self) -> None:
        """No row documents a field the model does not have (a renamed or removed one)."""
        assert set(_default_cells()) - set(FIELDS) == set()


class TestDocExamples:
    def test_docs_hold_spec_examples(self) -> None:
        """The finder sees the reference's examples (so the parse test below tests something)."""
        in_reference = [b for b in SPEC_BLOCKS if b.doc == JOB_SPEC_DOC.name]
        assert {b.lang for b in in_reference} >= {"toml", "yaml"}
        assert len(in_reference) >= 4

    @pytest.mark.parametrize("block", SPEC_BLOCKS, ids=str)
    def test_spec_example_parses(self, block: Block, tmp_path: Path) -> None:
        """Each job spec (or fragment) in docs/ loads like a spec file and validates."""
        path = tmp_path / f"spec{_SPEC_LANGS[block.lang]}"
        path.write_text(block.text, encoding="utf-8")
        parse_job_spec(_completed(load_spec_file(path)))

    def test_toml_and_yaml_full_examples_agree(self) -> None:
        """The reference's full example says the same thing in TOML and in YAML."""
        specs = [_decode(b) for b in SPEC_BLOCKS if b.doc == JOB_SPEC_DOC.name]
        full = [parse_job_spec(data) for data in specs if data.get("name") == "web"]
        assert len(full) == 2
        assert full[0].canonical() == full[1].canonical()

    @pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.*")), ids=lambda p: p.name)
    def test_example_files_parse(self, path: Path) -> None:
        """Every file in examples/ is a valid job spec as the CLI would read it."""
        parse_job_spec(load_spec_file(path))


class TestReadme:
    @pytest.mark.parametrize("doc", sorted(p.name for p in DOCS.glob("*.md")))
    def test_readme_links_every_doc(self, doc: str) -> None:
        """The README's documentation list links each file in docs/."""
        assert f"](docs/{doc})" in (ROOT / "README.md").read_text(encoding="utf-8")


# Failure reasons and the source file that produces them: the troubleshooting guide must
# explain each, and each must still be what the code says.
REASONS = {
    "gave up after": "agent/restart.py",
    "(restart policy": "agent/restart.py",
    "killed by signal": "agent/restart.py",
    "exit status unknown": "agent/restart.py",
    "refused by host policy: ": "agent/policy.py",
    "command not found": "agent/runtime/exec.py",
    "does not exist on this node": "agent/runtime/exec.py",
    "cannot run as user": "agent/runtime/exec.py",
    "does not exist": "agent/runtime/exec.py",
    "has no value on this node": "shared/interpolation.py",
    "sha256 mismatch": "agent/artifacts.py",
    "artifact download failed": "agent/artifacts.py",
    "larger than the limit": "agent/artifacts.py",
    "rejected: ": "agent/artifacts.py",
    "needs systemd as the init system": "agent/runtime/systemd.py",
    "needs the agent to run as root": "agent/runtime/systemd.py",
    "could not start ": "agent/runtime/systemd.py",
    "internal agent error": "agent/supervisor.py",
    "fetching artifacts": "agent/supervisor.py",
    "stopped by the agent": "agent/supervisor.py",
    "HTTP status": "agent/probes.py",
    "timed out after": "agent/probes.py",
    "not healthy within healthy_deadline": "coordinator/engine/planner.py",
    "no progress in": "coordinator/engine/planner.py",
    "node stopped heartbeating": "coordinator/engine/planner.py",
    "nodes failed (allowed:": "coordinator/engine/planner.py",
    "execution failed": "coordinator/engine/planner.py",
    "aborted by operator": "coordinator/engine/actions.py",
    "no eligible node matches": "coordinator/engine/status.py",
    "waiting at the": "coordinator/engine/status.py",
    "paused by an operator": "coordinator/engine/status.py",
    "rolled back to version": "coordinator/engine/status.py",
    "failed too": "coordinator/engine/status.py",
    "unhealthy or unreachable": "coordinator/engine/status.py",
    "not reported yet": "coordinator/engine/status.py",
    "new version accepted": "coordinator/submit.py",
}


class TestTroubleshooting:
    @pytest.mark.parametrize(
        "value",
        [
            *(s.value for s in JobStateType if s.value),
            *(t.value for t in RolloutType if t.value),
            *(s.value for s in ExecutionState),
            *(s.value for s in NodeStatus),
        ],
    )
    def test_every_state_is_explained(self, value: str) -> None:
        """Each job state, rollout type, execution state and node status is in the guide."""
        assert f"`{value}`" in TROUBLESHOOTING.read_text(encoding="utf-8")

    @pytest.mark.parametrize("phrase", sorted(REASONS))
    def test_every_failure_reason_is_explained(self, phrase: str) -> None:
        """Each reason the agent or engine reports is in the guide, worded as the code words it."""
        assert phrase in (ROOT / REASONS[phrase]).read_text(encoding="utf-8")
        assert phrase in TROUBLESHOOTING.read_text(encoding="utf-8")


# Log events docs/operations.md names, and the module that logs each.
LOG_EVENTS = {
    "coordinator_started": "coordinator/main.py",
    "tls_reloaded": "coordinator/main.py",
    "tls_reload_failed": "coordinator/main.py",
    "reload_ignored": "coordinator/main.py",
    "node_down": "coordinator/engine/driver.py",
    "request_failed": "coordinator/app.py",
    "engine_step_failed": "coordinator/engine/driver.py",
    "unhandled_error": "coordinator/app.py",
    "node_registered": "agent/session.py",
    "coordinator_unreachable": "agent/session.py",
    "coordinator_reconnected": "agent/session.py",
    "assignments_received": "agent/sync.py",
    "reconciling": "agent/sync.py",
    "process_adopted": "agent/supervisor.py",
    "process_exited": "agent/supervisor.py",
    "execution_state_changed": "agent/supervisor.py",
    "artifacts_failed": "agent/supervisor.py",
    "execution_refused": "agent/supervisor.py",
    "data_dir_write_failed": "agent/writes.py",
}


class TestOperations:
    @pytest.mark.parametrize("event", sorted(LOG_EVENTS))
    def test_named_log_events_exist(self, event: str) -> None:
        """Each log event the operations guide tells operators to look for is still logged."""
        assert f'"{event}"' in (ROOT / LOG_EVENTS[event]).read_text(encoding="utf-8")
        assert f"`{event}`" in OPERATIONS.read_text(encoding="utf-8")


# Node identity (enrollment, approval, token rotation): the log events the operations guide
# names, and the module that logs each.
NODE_IDENTITY_LOG_EVENTS = {
    "node_pending_approval": "agent/session.py",
    "node_token_rotated": "agent/session.py",
    "node_token_rotation_failed": "agent/report.py",
}
ROLLOUTS = DOCS / "rollouts.md"
_EVENT_KIND = re.compile(r'\bkind="([a-z_]+)"')


def stored_event_kinds() -> set[str]:
    """Event kinds the coordinator writes as literals (the node events: the engine's rollout
    events are in the table of docs/rollouts.md, named by the planner)."""
    kinds: set[str] = set()
    for path in sorted((ROOT / "coordinator").rglob("*.py")):
        kinds.update(_EVENT_KIND.findall(path.read_text(encoding="utf-8")))
    return kinds


class TestNodeIdentityDocs:
    @pytest.mark.parametrize("event", sorted(NODE_IDENTITY_LOG_EVENTS))
    def test_named_log_events_exist(self, event: str) -> None:
        """Each enrollment or rotation log event the operations guide names is still logged."""
        assert f'"{event}"' in (ROOT / NODE_IDENTITY_LOG_EVENTS[event]).read_text(encoding="utf-8")
        assert f"`{event}`" in OPERATIONS.read_text(encoding="utf-8")

    def test_finds_the_node_event_kinds(self) -> None:
        """The scan sees the node events (so the test below tests something)."""
        assert {"node_registered", "node_approved", "node_revoked", "node_purged"} <= (
            stored_event_kinds()
        )

    @pytest.mark.parametrize("kind", sorted(stored_event_kinds()))
    def test_every_node_event_kind_is_documented(self, kind: str) -> None:
        """Each event kind the coordinator records is named in docs/rollouts.md and api.md."""
        assert f"`{kind}`" in ROLLOUTS.read_text(encoding="utf-8")
        assert f"`{kind}`" in (DOCS / "api.md").read_text(encoding="utf-8")


# High availability: the log events docs/ha.md tells operators to look for, and the module
# that logs each; the options it documents, as the coordinator's config names them.
HA = DOCS / "ha.md"
HA_LOG_EVENTS = {
    "leader_elected": "coordinator/cluster.py",
    "leader_stepped_down": "coordinator/cluster.py",
    "lease_failed": "coordinator/cluster.py",
    "engine_fenced": "coordinator/engine/driver.py",
    "node_monitor_fenced": "coordinator/engine/driver.py",
    "observation_restarted": "coordinator/engine/observation.py",
    "store_writes_failing": "coordinator/store/health.py",
    "store_writes_recovered": "coordinator/store/health.py",
    "store_listen_lost": "coordinator/store/pg_listen.py",
    "store_listen_resumed": "coordinator/store/pg_listen.py",
    "liveness_flush_failed": "coordinator/store/postgres.py",
    "store_migrated": "coordinator/store/postgres.py",
    "secret_on_command_line": "coordinator/cli.py",
    "coordinator_started": "coordinator/main.py",
}
HA_OPTIONS = ("database", "member_id", "advertise", "lease_ttl")


class TestHaDocs:
    @pytest.mark.parametrize("event", sorted(HA_LOG_EVENTS))
    def test_named_log_events_exist(self, event: str) -> None:
        """Each log event the HA guide names is still logged by the module it belongs to."""
        assert f'"{event}"' in (ROOT / HA_LOG_EVENTS[event]).read_text(encoding="utf-8")
        assert f"`{event}`" in HA.read_text(encoding="utf-8")

    @pytest.mark.parametrize("option", HA_OPTIONS)
    def test_options_are_the_coordinators(self, option: str) -> None:
        """The HA guide's option table names real coordinator options, flags and variables."""
        assert option in CoordinatorConfig.model_fields
        row = f"| `{option}` | `--{option.replace('_', '-')}` | `FLEETWAVE_{option.upper()}` |"
        assert row in HA.read_text(encoding="utf-8")

    def test_figures_follow_the_code(self) -> None:
        """The pool size, heartbeat flush and lease default the guide quotes are the code's."""
        text = HA.read_text(encoding="utf-8")
        assert f"a pool of up to {POOL_SIZE}" in text
        assert f"every {LIVENESS_FLUSH_SECONDS:g} s" in text
        assert f"`{format_duration(CoordinatorConfig().lease_ttl)}`" in text
