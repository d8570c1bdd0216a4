"""The in-memory mirror keeps equal parts of node records once, and its per-node indexes
(names, assignments, executions) answer as before with their compact forms."""

from __future__ import annotations

from coordinator.domain.records import AssignmentRecord, ExecutionRecord, NodeRecord
from coordinator.store.mirror import NO_CONDITIONS, NO_LOAD, Mirror, Shared
from shared.clock import ZERO_TIME
from shared.nodes import Load, Resources
from shared.protocol import ExecutionState


def node(node_id: str, name: str, **fields: object) -> NodeRecord:
    return NodeRecord.model_validate(
        {"id": node_id, "name": name, "token_hash": f"h-{node_id}", "registered_at": ZERO_TIME}
        | fields
    )


def execution(node_id: str, job: str, version: int = 1) -> ExecutionRecord:
    return ExecutionRecord(
        node_id=node_id,
        job=job,
        version=version,
        state=ExecutionState.HEALTHY,
        since=ZERO_TIME,
        updated_at=ZERO_TIME,
    )


class TestShared:
    def test_equal_labels_and_resources_are_one_object(self) -> None:
        """Two nodes put with equal (but distinct) labels and resources hold the same ones."""
        mirror = Mirror()
        resources = {"cpu_count": 4, "memory_bytes": 8, "disk_bytes": 16}
        mirror.put_node(node("n1", "a", labels={"zone": "z1"}, resources=resources))
        mirror.put_node(node("n2", "b", labels={"zone": "z1"}, resources=resources))
        first, second = mirror.nodes["n1"], mirror.nodes["n2"]
        assert first.labels is second.labels
        assert first.resources is second.resources
        assert first.labels == {"zone": "z1"}

    def test_empty_load_and_conditions_are_shared(self) -> None:
        """A node that reports no load and no conditions holds the shared empty ones, and a
        node that reports a load keeps its own."""
        mirror = Mirror()
        mirror.put_node(node("n1", "a", load={}))
        mirror.put_node(node("n2", "b", load={"cpu_percent": 5.0}))
        assert mirror.nodes["n1"].load is NO_LOAD
        assert mirror.nodes["n1"].conditions is NO_CONDITIONS
        assert mirror.nodes["n2"].load == Load(cpu_percent=5.0)

    def test_the_cache_starts_over_past_its_limit(self) -> None:
        """Past its limit the cache forgets what it shared (it never grows without bound)
        and still answers equal values."""
        shared = Shared(limit=2)
        for zone in range(5):
            assert shared.labels({"zone": str(zone)}) == {"zone": str(zone)}
            assert shared.resources(Resources(cpu_count=zone)) == Resources(cpu_count=zone)
        assert len(shared._labels) <= 2
        assert len(shared._resources) <= 2


class TestIndexes:
    def test_nodes_sharing_a_name_are_both_found_until_one_is_dropped(self) -> None:
        """Two nodes with the same name are both found by it; dropping one leaves the other."""
        mirror = Mirror()
        mirror.put_node(node("n1", "same"))
        mirror.put_node(node("n2", "same"))
        assert {n.id for n in mirror.nodes_named("same")} == {"n1", "n2"}
        mirror.drop_node("n1")
        assert [n.id for n in mirror.nodes_named("same")] == ["n2"]
        mirror.put_node(node("n2", "renamed"))
        assert mirror.nodes_named("same") == []
        assert [n.name for n in mirror.listed_nodes()] == ["renamed"]

    def test_a_nodes_records_are_replaced_per_job_and_dropped(self) -> None:
        """Putting a job's record again replaces it; dropping one job keeps the others."""
        mirror = Mirror()
        mirror.put_node(node("n1", "a"))
        mirror.put_execution(execution("n1", "web"))
        mirror.put_execution(execution("n1", "db"))
        mirror.put_execution(execution("n1", "web", version=2))
        assert {j: r.version for j, r in mirror.node_executions("n1").items()} == {
            "web": 2,
            "db": 1,
        }
        mirror.drop_execution("n1", "web")
        assert list(mirror.node_executions("n1")) == ["db"]
        assert list(mirror.job_executions("db")) == ["n1"]
        mirror.put_assignment(
            AssignmentRecord(node_id="n1", job="db", version=1, assigned_at=ZERO_TIME)
        )
        mirror.drop_node("n1")
        assert mirror.node_executions("n1") == {}
        assert mirror.node_assignments("n1") == []
        assert mirror.job_executions("db") == {}
