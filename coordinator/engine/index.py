"""What the planner would otherwise work out from the whole fleet on every evaluation.

``plan_rollout`` is level-triggered: handed the job, every node, assignment and execution,
it decides from scratch. At 10,000 nodes that is most of an engine step, although a report
changes one node. A ``RolloutIndex`` kept by the driver between evaluations of one job lets
the same planner touch only what changed and what is in flight:

- the rollout's membership by group (canaries, then each wave), which members are started,
  pending (started, not passed or failed), unstarted and unsettled, kept in step with the
  rollout state the planner produces (they only ever grow within one rollout; anything else
  is a new rollout, and the index is built again);
- the job's target nodes not yet members, kept by the nodes that changed;
- the nodes whose record, assignment or execution changed since the last evaluation, found
  by identity (records are immutable: a changed record is a new object), so that assignment
  changes and the after-rollout health are recomputed for those alone.

The index never decides anything: every question it answers has the same answer as the full
computation it replaces, which ``tests/coordinator/engine/test_incremental.py`` checks on
random histories by planning each step both ways.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Iterable, Mapping
from datetime import datetime
from typing import TypeVar

from coordinator.domain.records import (
    AssignmentRecord,
    ExecutionRecord,
    NodeRecord,
    RolloutState,
)
from coordinator.engine.targets import is_target, select_targets, stable_rank
from shared.spec import Target

R = TypeVar("R")

_RolloutKey = tuple[object, ...]


def _key(rs: RolloutState) -> _RolloutKey:
    """What stays the same for as long as a rollout's membership only grows."""
    return (rs.type, rs.for_version, rs.target_version, rs.from_version, rs.generation,
            rs.started_at)  # fmt: skip


def _changed(old: Mapping[str, R], new: Mapping[str, R]) -> set[str]:
    """Keys whose record is not the very object it was, or that came or went."""
    changed = {k for k, v in new.items() if old.get(k) is not v}
    return changed | (old.keys() - new.keys())


def _grew(old: list[str], new: list[str]) -> bool:
    """``new`` is ``old`` with entries appended (checked at its ends only: the planner
    appends to these lists and never rewrites them within one rollout)."""
    return len(new) >= len(old) and (not old or (new[0] == old[0] and new[len(old) - 1] == old[-1]))


class RolloutIndex:
    """One job's derived membership sets and change tracking, between evaluations."""

    def __init__(self) -> None:
        self._nodes: Mapping[str, NodeRecord] = {}
        self._assignments: Mapping[str, AssignmentRecord] = {}
        self._executions: Mapping[str, ExecutionRecord] = {}
        self.cursor = 0
        """How far the driver has read the store's change log for this job (0: never)."""
        self._target: tuple[str, Target] | None = None
        self._any_count: Target = Target()
        self._targets: set[str] = set()
        self._rs: RolloutState | None = None
        self._key: _RolloutKey = ()
        # Membership of self._rs, by group: 0 the canaries, i wave i.
        self._group: dict[str, int] = {}
        self._groups: list[list[str]] = []
        self._started: set[str] = set()
        self._updated: set[str] = set()
        self._failed: set[str] = set()
        self._skipped: set[str] = set()
        self._pending: dict[str, None] = {}  # started, not updated or failed; started order
        self._position: dict[str, int] = {}  # the order nodes were started in
        # When to judge each pending node again (a heap with stale entries skipped), the
        # nodes whose moment moves with the clock, and those to judge at the next look.
        self._wake: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._moving: set[str] = set()
        self._judge: set[str] = set()
        self._context: object = None
        self._unstarted: list[dict[str, None]] = []  # per group, members neither started nor failed
        self._unsettled: list[set[str]] = []  # per group, not updated, failed or skipped
        self._outsiders: set[str] = set()  # targets that are not members
        # Since the last evaluation: nodes whose assignment may have to change.
        self._touched: set[str] = set()
        self._everything = True  # every node's assignment must be looked at
        # The after-rollout health, for nodes looked at since it was last computed.
        self._health_for: _RolloutKey | None = None
        self._health_dirty: set[str] = set()
        self._problems: dict[str, str] = {}
        self._live: set[str] = set()

    def reset(self) -> None:
        """Forget everything (a plan was not applied): the next evaluation builds it again."""
        self.__init__()  # type: ignore[misc]

    # -- inputs ----------------------------------------------------------------------

    def begin(
        self,
        job: str,
        target: Target,
        nodes: Mapping[str, NodeRecord],
        assignments: Mapping[str, AssignmentRecord],
        executions: Mapping[str, ExecutionRecord],
        changed: set[str] | None = None,
    ) -> None:
        """Take in the evaluation's inputs: note what changed since the last one.

        ``changed``: the nodes whose record, assignment or execution changed since the last
        evaluation, as the store's change log says (the mappings are then live views of
        the store, read only while planning). None: find them by comparing each record
        with the one of the last evaluation (the mappings are then kept as copies).
        """
        if changed is None:
            changed_nodes = _changed(self._nodes, nodes)
            changed_records = changed_nodes | _changed(self._assignments, assignments)
            changed_records |= _changed(self._executions, executions)
            self._nodes, self._assignments = dict(nodes), dict(assignments)
            self._executions = dict(executions)
        else:
            changed_nodes = changed_records = changed
            self._nodes, self._assignments, self._executions = nodes, assignments, executions
        self._touched |= changed_records
        self._judge |= changed_records
        self._health_dirty |= changed_records
        if self._target != (job, target):
            self._target = (job, target)
            self._any_count = target.model_copy(update={"count": None})
            self._targets = {n.id for n in self._select(nodes.values())}
            self._outsiders = self._targets - self._group.keys()
            return
        if target.count is not None:
            return  # the top ``count`` of the fleet: asked afresh each time (new_targets)
        selector = list(target.selector.items())
        for node_id in changed_nodes:
            node = nodes.get(node_id)
            if node is not None and is_target(node, selector):
                self._targets.add(node_id)
                if node_id not in self._group:
                    self._outsiders.add(node_id)
            else:
                self._targets.discard(node_id)
                self._outsiders.discard(node_id)

    def _select(self, nodes: Iterable[NodeRecord]) -> list[NodeRecord]:
        """The nodes among ``nodes`` the job targets, whatever its ``count``."""
        assert self._target is not None
        return select_targets(self._target[0], self._any_count, nodes)

    def commit(self, rs: RolloutState) -> None:
        """The evaluation is over and its plan applied: start collecting changes afresh."""
        self.sync(rs)
        self._touched = set()
        self._everything = False

    # -- the rollout state -----------------------------------------------------------

    def sync(self, rs: RolloutState) -> None:
        """Bring the membership sets to ``rs`` (the same rollout grown, or a new one)."""
        old = self._rs
        if rs is old:
            return
        if old is None or not self._same_rollout(old, rs):
            self._rebuild(rs)
            return
        if rs.waves is not old.waves:
            for number, wave in enumerate(rs.waves, start=1):
                for node_id in wave[len(self._groups[number]) :]:
                    self._add_member(node_id, number)
        if rs.started is not old.started:
            for node_id in rs.started[len(old.started) :]:
                self._start(node_id)
        if rs.updated is not old.updated:
            for node_id in rs.updated[len(old.updated) :]:
                self._updated.add(node_id)
                self._settle(node_id)
        if rs.failed is not old.failed:
            for node_id in rs.failed.keys() - self._failed:
                self._failed.add(node_id)
                self._settle(node_id)
                group = self._group.get(node_id)
                if group is not None:
                    self._unstarted[group].pop(node_id, None)
        if rs.skipped is not old.skipped:
            now_skipped = rs.skipped.keys()
            for node_id in now_skipped - self._skipped:
                self._judge.add(node_id)
                self._settle(node_id)
            for node_id in self._skipped - now_skipped:
                self._judge.add(node_id)
                group = self._group.get(node_id)
                if group is not None and node_id not in self._updated | self._failed:
                    self._unsettled[group].add(node_id)
            self._skipped = set(now_skipped)
        self._rs = rs

    def _same_rollout(self, old: RolloutState, rs: RolloutState) -> bool:
        # Each list is checked only when it is not the very list of the state before
        # (the planner derives states with model_copy, which shares what it did not change).
        return (
            _key(rs) == self._key
            and (rs.canary is old.canary or rs.canary == old.canary)
            and (
                rs.waves is old.waves
                or (
                    len(rs.waves) == len(old.waves)
                    and all(_grew(a, b) for a, b in zip(old.waves, rs.waves, strict=True))
                )
            )
            and (rs.started is old.started or _grew(old.started, rs.started))
            and (rs.updated is old.updated or _grew(old.updated, rs.updated))
            and (rs.failed is old.failed or self._failed <= rs.failed.keys())
        )

    def _rebuild(self, rs: RolloutState) -> None:
        self._rs, self._key = rs, _key(rs)
        self._group, self._groups = {}, []
        self._unstarted, self._unsettled = [], []
        self._started, self._updated = set(), set(rs.updated)
        self._failed, self._skipped = set(rs.failed), set(rs.skipped)
        self._pending, self._position = {}, {}
        self._wake, self._heap, self._moving, self._judge = {}, [], set(), set()
        self._context = None
        for number, group in enumerate([rs.canary, *rs.waves]):
            self._groups.append([])
            self._unstarted.append({})
            self._unsettled.append(set())
            for node_id in group:
                self._add_member(node_id, number)
        for node_id in rs.started:
            self._start(node_id)
        self._outsiders = self._targets - self._group.keys()
        self._everything = True

    def _add_member(self, node_id: str, group: int) -> None:
        self._groups[group].append(node_id)
        if node_id in self._group:
            return  # listed twice: the first group is the one the planner works it in
        self._group[node_id] = group
        self._outsiders.discard(node_id)
        self._touched.add(node_id)
        self._health_dirty.add(node_id)
        if node_id not in self._failed:
            self._unstarted[group][node_id] = None
        if node_id not in self._updated and node_id not in self._failed | self._skipped:
            self._unsettled[group].add(node_id)

    def _start(self, node_id: str) -> None:
        self._started.add(node_id)
        self._position.setdefault(node_id, len(self._position))
        self._judge.add(node_id)
        self._touched.add(node_id)
        group = self._group.get(node_id)
        if group is not None:
            self._unstarted[group].pop(node_id, None)
        if node_id not in self._updated and node_id not in self._failed:
            self._pending[node_id] = None

    def _settle(self, node_id: str) -> None:
        """Passed, failed or skipped: no longer holds its group back."""
        if node_id in self._updated or node_id in self._failed:
            self._pending.pop(node_id, None)
            self._wake.pop(node_id, None)
            self._moving.discard(node_id)
        group = self._group.get(node_id)
        if group is not None:
            self._unsettled[group].discard(node_id)

    # -- questions the planner asks --------------------------------------------------

    def pending(self, rs: RolloutState) -> list[str]:
        """Started members neither passed nor failed, in the order they were started."""
        self.sync(rs)
        return list(self._pending)

    def to_judge(self, rs: RolloutState, context: object, now: datetime) -> list[str]:
        """The pending nodes to judge now, in the order they were started: those whose
        inputs changed, whose moment has come or moves with the clock; all of them when
        ``context`` (what every judgement depends on besides the node) changed."""
        self.sync(rs)
        if context != self._context:
            self._context = context
            self._judge = set()
            return list(self._pending)
        due = self._judge | self._moving
        self._judge = set()
        heap, wake = self._heap, self._wake
        while heap and heap[0][0] <= now:
            at, node_id = heapq.heappop(heap)
            if wake.get(node_id) == at:
                due.add(node_id)
        pending, position = self._pending, self._position
        return sorted((n for n in due if n in pending), key=position.__getitem__)

    def judged(self, node_id: str, wake: datetime | None, *, moving: bool) -> None:
        """``node_id`` was judged: look again at ``wake`` (None: when it changes)."""
        if node_id not in self._pending:
            return
        if moving:
            self._moving.add(node_id)
        else:
            self._moving.discard(node_id)
        if wake is None:
            self._wake.pop(node_id, None)
        elif self._wake.get(node_id) != wake:
            self._wake[node_id] = wake
            heapq.heappush(self._heap, (wake, node_id))
            if len(self._heap) > 4 * len(self._wake) + 64:
                self._heap = [(at, n) for n, at in self._wake.items()]
                heapq.heapify(self._heap)

    def next_wake(self, rs: RolloutState) -> datetime | None:
        """The earliest moment a pending node not judged now is to be looked at again."""
        self.sync(rs)
        heap, wake, pending = self._heap, self._wake, self._pending
        while heap:
            at, node_id = heap[0]
            if node_id in pending and wake.get(node_id) == at:
                return at
            heapq.heappop(heap)
        return None

    def in_flight(self, rs: RolloutState, is_out: Callable[[str], bool]) -> list[str]:
        """Pending nodes that take a place under max_parallel (``is_out``: excluded, or
        skipped and still down)."""
        return [n for n in self.pending(rs) if not is_out(n)]

    def _group_numbers(self, rs: RolloutState) -> range:
        """The groups the rollout works on now: every group up to the current wave (earlier
        ones only for members that fell behind), or all with ``promote_full``."""
        if rs.phase == "canary":
            return range(0, 1)
        last = len(rs.waves) if rs.promote_full else min(rs.current_wave, len(rs.waves))
        return range(0, last + 1)

    def unstarted(self, rs: RolloutState) -> list[str]:
        """Members of the current group (behind ones first) not started and not failed, in
        group order: the candidates to start."""
        self.sync(rs)
        return [n for g in self._group_numbers(rs) for n in self._unstarted[g]]

    def unsettled(self, rs: RolloutState) -> list[str]:
        """Members of the current group not yet passed, failed or skipped."""
        self.sync(rs)
        return [n for g in self._group_numbers(rs) for n in self._unsettled[g]]

    def new_targets(self, rs: RolloutState, nodes: Mapping[str, NodeRecord]) -> list[str]:
        """Targets of the job that are not members of ``rs``, in the job's stable order."""
        self.sync(rs)
        assert self._target is not None
        job, target = self._target
        if target.count is not None:
            chosen = select_targets(job, target, nodes.values())
            return [n.id for n in chosen if n.id not in self._group]
        return sorted(self._outsiders, key=lambda n: stable_rank(job, n))

    def members(self, rs: RolloutState) -> Container[str]:
        self.sync(rs)
        return self._group.keys()

    def started(self, rs: RolloutState) -> Container[str]:
        self.sync(rs)
        return self._started

    def assignment_candidates(self, rs: RolloutState) -> Iterable[str]:
        """Nodes whose assignment may have to change since the last evaluation: their
        record, assignment, membership or start changed; all, after a new rollout."""
        self.sync(rs)
        if self._everything:
            return self._group.keys() | self._assignments.keys()
        return self._touched

    def health(
        self, rs: RolloutState, problem: Callable[[str], str | None]
    ) -> tuple[int, dict[str, str]]:
        """The members still in the fleet (not drained), and the problem of each that has
        one (``problem`` of a node id, None when it is fine)."""
        self.sync(rs)
        if self._key != self._health_for:
            self._health_for = self._key
            self._problems, self._live = {}, set()
            dirty: Iterable[str] = self._group
        else:
            dirty = self._health_dirty & self._group.keys()
        self._health_dirty = set()
        for node_id in dirty:
            node = self._nodes.get(node_id)
            if node is None or node.drain:
                self._live.discard(node_id)
                self._problems.pop(node_id, None)
                continue
            self._live.add(node_id)
            found = problem(node_id)
            if found is None:
                self._problems.pop(node_id, None)
            else:
                self._problems[node_id] = found
        return len(self._live), self._problems
