"""Builders for planner tests: a fleet held in memory and a fake clock (the planner is pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.domain.records import (
    AssignmentRecord,
    ExecutionRecord,
    JobRecord,
    NodeRecord,
)
from coordinator.engine.observation import Observation
from coordinator.engine.planner import RolloutPlan, plan_rollout
from shared.nodes import Eligibility, NodeStatus
from shared.protocol import ExecutionState
from shared.spec import JobSpec
from shared.status import JobState, JobStateType, JobStatus

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_spec(**overrides: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "web",
        "task": {"command": ["run"]},
        "rollout": {"min_healthy_time": "10s", "healthy_deadline": "1m"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return JobSpec.model_validate(data)


def make_node(node_id: str, **labels: str) -> NodeRecord:
    return NodeRecord(
        id=node_id,
        name=node_id,
        token_hash=f"h-{node_id}",
        status=NodeStatus.READY,
        labels=labels,
        registered_at=T0,
        last_heartbeat=T0,
    )


@dataclass
class World:
    """The planner's inputs, updated from each plan as the driver and agents would."""

    job: JobRecord
    nodes: dict[str, NodeRecord]
    now: datetime = T0
    assignments: dict[str, AssignmentRecord] = field(default_factory=dict)
    executions: dict[str, ExecutionRecord] = field(default_factory=dict)
    observation: Observation = field(default_factory=Observation)

    @classmethod
    def new(cls, spec: JobSpec, node_count: int = 3, **labels: str) -> World:
        status = JobStatus(
            created_at=T0,
            updated_at=T0,
            version=1,
            revision=1,
            state=JobState(state_type=JobStateType.PENDING),
        )
        nodes = {f"n{i}": make_node(f"n{i}", **labels) for i in range(1, node_count + 1)}
        return cls(job=JobRecord(name=spec.name, spec=spec, status=status), nodes=nodes)

    def plan(self) -> RolloutPlan:
        plan = plan_rollout(
            self.job, self.nodes, self.assignments, self.executions, self.now, self.observation
        )
        self.job = plan.job
        for change in plan.changes:
            if change.version is None:
                self.assignments.pop(change.node_id, None)
            else:
                self.assignments[change.node_id] = AssignmentRecord(
                    node_id=change.node_id,
                    job=self.job.name,
                    version=change.version,
                    generation=change.generation,
                    assigned_at=self.now,
                )
        return plan

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def blind_spot(self, downtime: float = 0, grace: float = 30) -> None:
        """The coordinator was down or paused for ``downtime`` seconds and listens again
        now, giving nodes ``grace`` seconds to be heard."""
        self.advance(downtime)
        self.observation = Observation(since=self.now, grace=timedelta(seconds=grace))

    def report(self, node_id: str, state: ExecutionState, version: int | None = None) -> None:
        """The agent on ``node_id`` reports ``state`` for its assigned version."""
        assigned = self.assignments[node_id]
        old = self.executions.get(node_id)
        same = old is not None and old.state == state and old.version == assigned.version
        self.executions[node_id] = ExecutionRecord(
            node_id=node_id,
            job=self.job.name,
            version=version or assigned.version,
            generation=assigned.generation,
            state=state,
            since=old.since if same and old is not None else self.now,
            updated_at=self.now,
        )

    def set_node(self, node_id: str, **update: Any) -> None:
        self.nodes[node_id] = self.nodes[node_id].model_copy(update=update)

    @property
    def state(self) -> JobStateType:
        return self.job.status.state.state_type


__all__ = ["T0", "Eligibility", "ExecutionState", "NodeStatus", "World", "make_node", "make_spec"]
