"""The fault suite's invariant checkers, on hand-made records and events."""

from __future__ import annotations

from pathlib import Path

from tests.faults.invariants import (
    Event,
    Life,
    Put,
    Rollout,
    check_acknowledged_writes,
    check_canary_gate,
    check_completion,
    check_healthy_never_failed,
    check_live_nodes_never_down,
    check_no_duplicate_starts,
    check_wave_order,
    lives,
    read_records,
    segments,
)
from tests.faults.workload import append_record

NAMES = {"id-c": "c", "id-a": "a", "id-b": "b", "id-d": "d"}
# Canary c, wave 1 = a and b, wave 2 = d.
ROLLOUT = Rollout("web", 2, ("id-c",), (("id-a", "id-b"), ("id-d",)))


def ev(id_: int, time: float, kind: str, node: str = "", new: str = "", **kw: str) -> Event:
    return Event(id=id_, time=time, kind=kind, job="web", node=node, new=new, **kw)


def started(id_: int, time: float) -> Event:
    return ev(id_, time, "rollout_started", new="update", reason="version 2 to 4 nodes")


def life(node: str, version: int, at: float, until: float | None = None, **kw: bool) -> Life:
    return Life(
        node, "web", version, 0, pid=hash((node, at)) % 10000, started=at, ended=until, **kw
    )


GOOD_EVENTS = [
    started(1, 10.0),
    ev(2, 12.0, "node_updated", "id-c", "2"),
    ev(3, 12.0, "canary_promoted"),
    ev(4, 12.0, "wave_started", new="1"),
    ev(5, 14.0, "node_updated", "id-a", "2"),
    ev(6, 14.5, "node_updated", "id-b", "2"),
    ev(7, 14.5, "wave_started", new="2"),
    ev(8, 16.0, "node_updated", "id-d", "2"),
    ev(9, 16.0, "rollout_completed", new="2"),
]
GOOD_STARTS = [
    life("c", 2, 10.5),
    life("a", 2, 12.3),
    life("b", 2, 12.4),
    life("d", 2, 14.8),
]


class TestEvidence:
    def test_records_pair_starts_with_their_stop(self, tmp_path: Path) -> None:
        """A start and the later stop of the same pid on the same node make one life."""
        path = tmp_path / "records.jsonl"
        base = {"node": "a", "job": "web", "version": 1, "generation": 0, "mono": 0.0}
        append_record(str(path), {**base, "event": "start", "pid": 7, "wall": 1.0})
        append_record(str(path), {**base, "event": "start", "pid": 8, "wall": 2.0})
        append_record(str(path), {**base, "event": "stop", "pid": 7, "wall": 3.0})
        found = lives(read_records(path))
        assert [(x.pid, x.started, x.ended) for x in found] == [(7, 1.0, 3.0), (8, 2.0, None)]

    def test_segments_split_the_log_at_each_rollout_and_rollback(self) -> None:
        """Events belong to the latest rollout_started or rollback_started before them."""
        events = [
            *GOOD_EVENTS[:3],
            ev(10, 20.0, "rollback_started", old="2", new="1"),
            ev(11, 21.0, "node_updated", "id-c", "1"),
        ]
        found = segments(events, "web")
        assert [(s.version, s.kind, len(s.events)) for s in found] == [
            (2, "rollout", 3),
            (1, "rollback", 2),
        ]


class TestCanaryGate:
    def test_a_promotion_after_the_canary_passed_holds(self) -> None:
        """canary_promoted after node_updated of the canary is no violation."""
        assert (
            check_canary_gate(ROLLOUT, GOOD_EVENTS, GOOD_STARTS, NAMES, broken_everywhere=False)
            == []
        )

    def test_a_promotion_before_the_canary_passed_is_a_bypass(self) -> None:
        """canary_promoted before the canary passed (it was only marked down) is reported."""
        events = [
            started(1, 10.0),
            ev(2, 10.0, "canary_promoted"),
            ev(3, 12.0, "node_updated", "id-c", "2"),
        ]
        found = check_canary_gate(ROLLOUT, events, [], NAMES, broken_everywhere=False)
        assert len(found) == 1
        assert "before canary c passed" in found[0]

    def test_a_promotion_with_every_canary_skipped_is_a_bypass(self) -> None:
        """Skipped canaries are not healthy ones: at least one canary must have passed."""
        events = [
            started(1, 10.0),
            ev(2, 11.0, "node_skipped", "id-c"),
            ev(3, 11.0, "canary_promoted"),
        ]
        found = check_canary_gate(ROLLOUT, events, [], NAMES, broken_everywhere=False)
        assert len(found) == 1
        assert "no canary passed" in found[0]

    def test_a_canary_skipped_then_passed_is_a_healthy_canary(self) -> None:
        """A canary skipped while unreachable that passed before the promotion counts as passed."""
        events = [
            started(1, 10.0),
            ev(2, 11.0, "node_skipped", "id-c"),
            ev(3, 13.0, "node_updated", "id-c", "2"),
            ev(4, 13.0, "canary_promoted"),
        ]
        assert check_canary_gate(ROLLOUT, events, [], NAMES, broken_everywhere=False) == []

    def test_a_broken_version_on_a_non_canary_node_is_reported(self) -> None:
        """A version broken everywhere that starts beyond the canary broke the gate."""
        starts = [life("c", 2, 10.5, broken=True), life("a", 2, 11.0, broken=True)]
        found = check_canary_gate(
            ROLLOUT, [started(1, 10.0)], starts, NAMES, broken_everywhere=True
        )
        assert len(found) == 1
        assert "non-canary node a" in found[0]

    def test_a_rollout_started_twice_is_reported(self) -> None:
        """A second rollout_started of the same version means its membership was redone."""
        events = [started(1, 10.0), started(2, 11.0)]
        found = check_canary_gate(ROLLOUT, events, [], NAMES, broken_everywhere=False)
        assert "started 2 times" in found[0]


class TestWaveOrder:
    def test_waves_that_wait_for_the_group_before_hold(self) -> None:
        """Each wave started after every node of the group before had passed."""
        assert check_wave_order(ROLLOUT, GOOD_EVENTS, GOOD_STARTS, NAMES) == []

    def test_a_start_before_the_group_before_passed_is_reported(self) -> None:
        """d (wave 2) starting at 14.2 while b (wave 1) passed at 14.5 is a bypass."""
        starts = [*GOOD_STARTS[:3], life("d", 2, 14.2)]
        found = check_wave_order(ROLLOUT, GOOD_EVENTS, starts, NAMES)
        assert len(found) == 1
        assert "d (wave 2) started version 2 0.300s before" in found[0]

    def test_a_start_when_the_group_before_never_passed_is_reported(self) -> None:
        """a wave-1 start while the canary never passed nor was skipped is a bypass."""
        events = [
            started(1, 10.0),
            ev(2, 10.0, "canary_promoted"),
            ev(3, 10.0, "wave_started", new="1"),
        ]
        starts = [life("c", 2, 10.5), life("a", 2, 10.6)]
        found = check_wave_order(ROLLOUT, events, starts, NAMES)
        assert any("c of the group before never passed" in p for p in found)
        assert any("wave_started 1 (event 3)" in p for p in found)

    def test_an_explicitly_skipped_node_opens_the_gate(self) -> None:
        """A node skipped with node_skipped counts like one that passed."""
        events = [
            *GOOD_EVENTS[:5],
            ev(6, 14.5, "node_skipped", "id-b"),
            ev(7, 14.5, "wave_started", new="2"),
        ]
        assert check_wave_order(ROLLOUT, events, [*GOOD_STARTS[:2], GOOD_STARTS[3]], NAMES) == []

    def test_starts_before_the_rollout_are_not_judged(self) -> None:
        """A node that already ran the version before this rollout began is no bypass."""
        starts = [*GOOD_STARTS, life("d", 2, 5.0, until=6.0)]
        assert check_wave_order(ROLLOUT, GOOD_EVENTS, starts, NAMES) == []


class TestCompletion:
    def test_complete_with_every_member_healthy_holds(self) -> None:
        """Every member passed and runs a healthy workload when the rollout completes."""
        assert check_completion(ROLLOUT, GOOD_EVENTS, GOOD_STARTS, NAMES) == []

    def test_complete_before_a_node_started_is_reported(self) -> None:
        """A completion at 16.0 while d started only at 17.0 is reported."""
        starts = [*GOOD_STARTS[:3], life("d", 2, 17.0)]
        found = check_completion(ROLLOUT, GOOD_EVENTS, starts, NAMES)
        assert len(found) == 1
        assert "while d ran no healthy workload" in found[0]

    def test_complete_with_a_node_that_never_passed_is_reported(self) -> None:
        """A member with neither node_updated nor node_skipped makes completion a lie."""
        events = [e for e in GOOD_EVENTS if e.node != "id-d"]
        found = check_completion(ROLLOUT, events, GOOD_STARTS, NAMES)
        assert found == ["rollout of version 2 completed (event 9) but d never passed"]

    def test_skipped_members_need_not_run_the_version(self) -> None:
        """An explicitly skipped member is left out of the completion check."""
        events = [*GOOD_EVENTS[:7], ev(8, 15.0, "node_skipped", "id-d"), GOOD_EVENTS[8]]
        assert check_completion(ROLLOUT, events, GOOD_STARTS[:3], NAMES) == []


class TestFailuresAndLiveness:
    def test_failing_a_broken_workload_is_right(self) -> None:
        """node_failed for a node whose workload of that version was broken holds."""
        events = [started(1, 10.0), ev(2, 18.0, "node_failed", "id-c", reason="deadline")]
        starts = [life("c", 2, 10.5, broken=True)]
        assert check_healthy_never_failed(events, starts, NAMES, "web") == []

    def test_failing_a_healthy_workload_is_reported(self) -> None:
        """node_failed for a node that ran a good workload of the version is reported."""
        events = [started(1, 10.0), ev(2, 18.0, "node_failed", "id-a", reason="deadline")]
        found = check_healthy_never_failed(events, [life("a", 2, 12.0)], NAMES, "web")
        assert found == [
            "a was failed (event 2) in the rollout to version 2 although its workload"
            " was healthy: deadline"
        ]

    def test_a_failure_in_a_rollback_is_judged_against_the_stable_version(self) -> None:
        """In a rollback to version 1, a node failed although v1 was healthy is reported."""
        events = [
            started(1, 10.0),
            ev(2, 18.0, "rollback_started", old="2", new="1"),
            ev(3, 26.0, "node_failed", "id-c", reason="deadline"),
        ]
        starts = [life("c", 2, 10.5, broken=True), life("c", 1, 18.5)]
        found = check_healthy_never_failed(events, starts, NAMES, "web")
        assert "rollback to version 1" in found[0]

    def test_down_during_an_outage_of_its_agent_holds(self) -> None:
        """A node marked down while (or a TTL after) its agent was stopped is right."""
        events = [ev(1, 20.0, "node_status", "id-a", "down")]
        assert check_live_nodes_never_down(events, NAMES, {"a": [(15.0, 18.0)]}, 4.0) == []

    def test_down_while_the_agent_ran_is_reported(self) -> None:
        """A node marked down with no outage of its agent in the TTL before is reported."""
        events = [ev(1, 30.0, "node_status", "id-a", "down", reason="no heartbeat for 31s")]
        found = check_live_nodes_never_down(events, NAMES, {"a": [(15.0, 18.0)]}, 4.0)
        assert found == ["a was marked down (event 1: no heartbeat for 31s) while its agent ran"]


class TestDuplicatesAndWrites:
    def test_a_replacement_after_the_old_process_stopped_holds(self) -> None:
        """v2 starting after v1 stopped is no duplicate."""
        assert check_no_duplicate_starts([life("a", 1, 1.0, 5.0), life("a", 2, 5.1)]) == []

    def test_two_live_processes_on_one_node_are_reported(self) -> None:
        """A second start while the first still runs is a duplicate."""
        found = check_no_duplicate_starts([life("a", 1, 1.0, 5.0), life("a", 1, 4.0, 6.0)])
        assert len(found) == 1
        assert "duplicate start on a" in found[0]

    def test_a_process_that_never_recorded_its_end_counts_as_running(self) -> None:
        """Without a stop record the first process is assumed alive: a later start is reported."""
        found = check_no_duplicate_starts([life("a", 1, 1.0), life("a", 2, 9.0, 10.0)])
        assert "never recorded its end" in found[0]

    def test_acknowledged_writes_must_be_stored_as_answered(self) -> None:
        """A 201 whose version is missing is lost; a 503 that was stored is a phantom."""
        puts = [Put(201, 1, "m1"), Put(200, 2, "m2"), Put(503, 0, "m3"), Put(0, 0, "m4")]
        found = check_acknowledged_writes(puts, {1: "m1", 3: "m3", 4: "m4"})
        assert found == [
            "acknowledged write lost: version 2 (m2) answered 200 is stored as None",
            "a write answered 503 was stored anyway (m3)",
        ]
