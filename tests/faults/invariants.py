"""The rollout invariants, checked from what the workloads wrote down and the event log.

Pure functions over three kinds of evidence, each returning the violations it found as
sentences (an empty list means the invariant held):

- ``Life``: one workload process, from its own start and stop records (``workload.py``);
- ``Event``: one entry of the coordinator's event log, its time already converted to
  the real wall clock (the harness undoes a stepped coordinator clock);
- ``Rollout``: a rollout's stored membership (canaries and waves, node ids), read from
  ``GET /v1/jobs/{name}/rollout`` while it ran.

Workload records name nodes by name, events by id; ``names`` maps id -> name.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PASSED = "node_updated"
SKIPPED = "node_skipped"
_VERSION_IN_REASON = re.compile(r"^version (\d+)\b")


@dataclass(frozen=True)
class Life:
    """One workload process: started at ``started``; ``ended`` None while it runs (or when
    it ended without a record, which only SIGKILL can do)."""

    node: str
    job: str
    version: int
    generation: int
    pid: int
    started: float
    ended: float | None = None
    broken: bool = False
    crash_after_ms: int = 0

    @property
    def faulty(self) -> bool:
        """Made to fail: a broken version (500s) or a crash loop."""
        return self.broken or self.crash_after_ms > 0

    def alive_at(self, when: float) -> bool:
        return self.started <= when and (self.ended is None or self.ended > when)


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    kind: str
    job: str = ""
    node: str = ""
    old: str = ""
    new: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Rollout:
    """A ``create``/``update`` rollout of ``version``: its canaries and waves (node ids)."""

    job: str
    version: int
    canary: tuple[str, ...]
    waves: tuple[tuple[str, ...], ...]

    @property
    def members(self) -> list[str]:
        return [*self.canary, *(n for wave in self.waves for n in wave)]

    @property
    def groups(self) -> list[tuple[str, ...]]:
        """The gated groups in order: the canaries (when there are any), then each wave."""
        return ([self.canary] if self.canary else []) + [w for w in self.waves if w]


@dataclass(frozen=True)
class Segment:
    """The events of one rollout: from its start up to the start of the next one."""

    version: int
    kind: str  # "rollout" (create, update, restart) or "rollback"
    events: list[Event] = field(default_factory=list)

    def first(self, kind: str, node: str = "", new: str | None = None) -> Event | None:
        for event in self.events:
            same_node = not node or event.node == node
            if event.kind == kind and same_node and (new is None or event.new == new):
                return event
        return None

    def cleared(self, node: str) -> Event | None:
        """The event that let ``node`` through its gate: it passed or was skipped."""
        passed = self.first(PASSED, node, str(self.version))
        skipped = self.first(SKIPPED, node)
        found = [e for e in (passed, skipped) if e is not None]
        return min(found, key=lambda e: e.id) if found else None


# ---------------------------------------------------------------------------- evidence


def read_records(path: Path) -> list[dict[str, Any]]:
    """The workloads' records, in the order they were appended."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def lives(records: Iterable[Mapping[str, Any]]) -> list[Life]:
    """Pair each start record with the next stop or exit record of the same process."""
    open_: dict[tuple[str, int], int] = {}
    found: list[Life] = []
    for record in records:
        key = (str(record["node"]), int(record["pid"]))
        if record["event"] == "start":
            open_[key] = len(found)
            found.append(
                Life(
                    node=key[0],
                    job=str(record["job"]),
                    version=int(record["version"]),
                    generation=int(record.get("generation", 0)),
                    pid=key[1],
                    started=float(record["wall"]),
                    broken=bool(record.get("broken", False)),
                    crash_after_ms=int(record.get("crash_after_ms", 0)),
                )
            )
        elif key in open_:
            index = open_.pop(key)
            life = found[index]
            found[index] = Life(**{**life.__dict__, "ended": float(record["wall"])})
    return found


def segments(events: Sequence[Event], job: str) -> list[Segment]:
    """Split ``job``'s events into rollouts at each ``rollout_started``/``rollback_started``."""
    found: list[Segment] = []
    for event in events:
        if event.job != job:
            continue
        if event.kind == "rollout_started":
            match = _VERSION_IN_REASON.match(event.reason)
            if match is None:
                raise ValueError(f"rollout_started without 'version N' in its reason: {event}")
            found.append(Segment(int(match.group(1)), "rollout"))
        elif event.kind == "rollback_started":
            found.append(Segment(int(event.new), "rollback"))
        if found:
            found[-1].events.append(event)
    return found


def rollout_segment(events: Sequence[Event], rollout: Rollout) -> tuple[Segment | None, list[str]]:
    """The segment of ``rollout``; a version whose rollout started twice is a violation."""
    mine = [
        s
        for s in segments(events, rollout.job)
        if s.kind == "rollout" and s.version == rollout.version
    ]
    if not mine:
        return None, []
    problems = []
    if len(mine) > 1:
        problems.append(
            f"the rollout of version {rollout.version} started {len(mine)} times"
            f" (events {[s.events[0].id for s in mine]}): its membership was chosen again"
        )
    return mine[0], problems


# ---------------------------------------------------------------------------- invariants


def check_canary_gate(
    rollout: Rollout,
    events: Sequence[Event],
    starts: Sequence[Life],
    names: Mapping[str, str],
    *,
    broken_everywhere: bool,
) -> list[str]:
    """The canary gate is never passed without a healthy canary.

    ``canary_promoted`` comes only after every canary passed (``node_updated``) or was
    explicitly skipped, and at least one of them passed; a version broken on every node
    never starts on a node that is not a canary.
    """
    problems: list[str] = []
    v = rollout.version
    if broken_everywhere:
        canaries = {names.get(n, n) for n in rollout.canary}
        for life in starts:
            if life.job == rollout.job and life.version == v and life.node not in canaries:
                problems.append(
                    f"version {v} is broken everywhere but started on non-canary node"
                    f" {life.node} (pid {life.pid})"
                )
    seg, twice = rollout_segment(events, rollout)
    problems += twice
    if seg is None or not rollout.canary:
        return problems
    promoted = seg.first("canary_promoted")
    if promoted is None:
        return problems
    passed = 0
    for node in rollout.canary:
        cleared = seg.cleared(node)
        if cleared is None or cleared.id > promoted.id:
            problems.append(
                f"canary_promoted (event {promoted.id}) for version {v} before canary"
                f" {names.get(node, node)} passed or was skipped"
            )
        updated = seg.first(PASSED, node, str(v))
        if updated is not None and updated.id < promoted.id:
            passed += 1
    if passed == 0 and not problems:
        problems.append(
            f"canary_promoted (event {promoted.id}) for version {v}: no canary passed,"
            " every one was skipped"
        )
    return problems


def check_wave_order(
    rollout: Rollout, events: Sequence[Event], starts: Sequence[Life], names: Mapping[str, str]
) -> list[str]:
    """No node of a group starts the version before every node of the group before it has
    passed or been explicitly skipped (by the workloads' start times and by event order)."""
    seg, problems = rollout_segment(events, rollout)
    if seg is None:
        return problems
    begun = seg.events[0].time
    groups = rollout.groups
    group_of = {names.get(n, n): i for i, group in enumerate(groups) for n in group}
    for i in range(1, len(groups)):
        clears = [(n, seg.cleared(n)) for n in groups[i - 1]]
        missing = [names.get(n, n) for n, e in clears if e is None]
        opened = None if missing else max(e.time for _, e in clears if e is not None)
        started = seg.first("wave_started", new=str(_wave_number(rollout, i)))
        if started is not None:
            late = [names.get(n, n) for n, e in clears if e is None or e.id > started.id]
            if late:
                problems.append(
                    f"wave_started {_wave_number(rollout, i)} (event {started.id}) of version"
                    f" {rollout.version} before {', '.join(late)} of the group before passed"
                )
        for life in starts:
            if life.job != rollout.job or life.version != rollout.version:
                continue
            if group_of.get(life.node) != i or life.started < begun:
                continue
            if opened is None:
                problems.append(
                    f"{life.node} ({_group_name(rollout, i)}) started version"
                    f" {rollout.version} but {', '.join(missing)} of the group before never"
                    " passed nor was skipped"
                )
            elif life.started < opened:
                problems.append(
                    f"{life.node} ({_group_name(rollout, i)}) started version"
                    f" {rollout.version} {opened - life.started:.3f}s before the group"
                    " before had passed"
                )
    return problems


def check_completion(
    rollout: Rollout, events: Sequence[Event], starts: Sequence[Life], names: Mapping[str, str]
) -> list[str]:
    """A completed rollout means every member that was not explicitly skipped passed, and
    runs a healthy workload of the version at that moment."""
    seg, problems = rollout_segment(events, rollout)
    if seg is None:
        return problems
    done = seg.first("rollout_completed", new=str(rollout.version))
    if done is None:
        return problems
    v = rollout.version
    for node in rollout.members:
        name = names.get(node, node)
        cleared = seg.cleared(node)
        if cleared is not None and cleared.kind == SKIPPED and cleared.id < done.id:
            continue
        if cleared is None or cleared.id > done.id:
            problems.append(
                f"rollout of version {v} completed (event {done.id}) but {name} never passed"
            )
            continue
        running = [
            life
            for life in starts
            if life.node == name and life.job == rollout.job and life.version == v
        ]
        if not any(life.alive_at(done.time) and not life.faulty for life in running):
            problems.append(
                f"rollout of version {v} completed (event {done.id}) while {name} ran no"
                f" healthy workload of it ({len(running)} started)"
            )
    return problems


def check_healthy_never_failed(
    events: Sequence[Event], starts: Sequence[Life], names: Mapping[str, str], job: str
) -> list[str]:
    """A node is failed only when its workload of the rollout's version was made to fail."""
    problems: list[str] = []
    for seg in segments(events, job):
        for event in seg.events:
            if event.kind != "node_failed":
                continue
            name = names.get(event.node, event.node)
            ran = [
                life
                for life in starts
                if life.node == name and life.job == job and life.version == seg.version
            ]
            if any(life.faulty for life in ran):
                continue
            what = "it never started it" if not ran else "its workload was healthy"
            problems.append(
                f"{name} was failed (event {event.id}) in the {seg.kind} to version"
                f" {seg.version} although {what}: {event.reason}"
            )
    return problems


def check_live_nodes_never_down(
    events: Sequence[Event],
    names: Mapping[str, str],
    outages: Mapping[str, Sequence[tuple[float, float | None]]],
    ttl: float,
) -> list[str]:
    """A node is marked down only when its agent was stopped, killed or cut off (one of
    ``outages``, by node name: real times from/until) within the TTL before."""
    problems = []
    for event in events:
        if event.kind != "node_status" or event.new != "down":
            continue
        name = names.get(event.node, event.node)
        if any(
            start <= event.time and (end is None or end >= event.time - ttl)
            for start, end in outages.get(name, [])
        ):
            continue
        problems.append(
            f"{name} was marked down (event {event.id}: {event.reason}) while its agent ran"
        )
    return problems


def check_no_duplicate_starts(starts: Sequence[Life]) -> list[str]:
    """Never two live workload processes of one job on one node at the same time."""
    by_node: defaultdict[tuple[str, str], list[Life]] = defaultdict(list)
    for life in starts:
        by_node[(life.node, life.job)].append(life)
    problems = []
    for (node, job), found in sorted(by_node.items()):
        found.sort(key=lambda life: life.started)
        for i, first in enumerate(found):
            for second in found[i + 1 :]:
                if first.ended is None or second.started < first.ended:
                    problems.append(
                        f"duplicate start on {node}: job {job} v{second.version} pid"
                        f" {second.pid} started while v{first.version} pid {first.pid} still"
                        " ran" + (" (it never recorded its end)" if first.ended is None else "")
                    )
    return problems


@dataclass(frozen=True)
class Put:
    """One PUT of a job spec: the answer's status (0: no answer), its version, our marker."""

    status: int
    version: int
    mark: str


def check_acknowledged_writes(puts: Sequence[Put], stored: Mapping[int, str]) -> list[str]:
    """Every acknowledged PUT (200/201) is stored as answered; a refused one is not stored.

    ``stored`` maps each stored version to its marker. A PUT without an answer (the
    coordinator died meanwhile) may or may not have been stored.
    """
    problems = []
    marks = set(stored.values())
    for put in puts:
        if put.status in (200, 201):
            if stored.get(put.version) != put.mark:
                problems.append(
                    f"acknowledged write lost: version {put.version} ({put.mark}) answered"
                    f" {put.status} is stored as {stored.get(put.version)!r}"
                )
        elif put.status != 0 and put.mark in marks:
            problems.append(f"a write answered {put.status} was stored anyway ({put.mark})")
    return problems


def _wave_number(rollout: Rollout, group: int) -> int:
    """The wave number of group ``group`` (groups count the canaries first, if any)."""
    return group if rollout.canary else group + 1


def _group_name(rollout: Rollout, group: int) -> str:
    if rollout.canary and group == 0:
        return "canary"
    return f"wave {_wave_number(rollout, group)}"
