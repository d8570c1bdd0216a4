"""When the agent heartbeats: on its own schedule at a random phase of the interval, which
reports sent on a state change do not move (else a rollout, changing a whole wave of nodes at
once, would synchronise their heartbeats into a herd at every interval).

Real: ReportLoop. Fakes (our own seams): the clock, and stand-ins for the coordinator client,
session, execution manager, identity store and host probe that only record what is sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.backoff import BackoffPolicy
from agent.report import ReportLoop, next_heartbeat, report_retry_delay
from shared.clock import FakeClock
from shared.nodes import Load, Resources
from shared.protocol import ReportRequest, ReportResponse
from tests.agent.factories import data_dir_writes

INTERVAL = 10.0
PHASE = 0.3  # what the fake random source returns: heartbeats at 30 % of the interval


class Recorder:
    """The coordinator client: remembers when each report arrived."""

    def __init__(self, clock: FakeClock, start: float) -> None:
        self.clock = clock
        self.start = start
        self.sent: list[float] = []

    async def report(
        self, token: str, request: ReportRequest, *, deadline: float | None = None
    ) -> ReportResponse:
        self.sent.append(round(self.clock.monotonic() - self.start, 2))
        return ReportResponse(accepted=True, last_seq=request.seq, index=0)


class Session:
    heartbeat_interval = INTERVAL
    identity = SimpleNamespace(node_id="node-1", node_token="t")
    index = 0

    def __init__(self) -> None:
        self.repoll = asyncio.Event()

    async def ensure_identity(self) -> Any:
        return self.identity

    def mark_contact(self, when: float) -> None:
        pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loop_and_recorder(clock: FakeClock) -> tuple[ReportLoop, Recorder]:
    recorder = Recorder(clock, clock.monotonic())
    store = SimpleNamespace(load_seq=lambda: 0, save_seq=lambda seq: None)
    host = SimpleNamespace(load=Load, resources=Resources)
    manager = SimpleNamespace(reports=list)
    loop = ReportLoop(
        session=Session(),  # type: ignore[arg-type]
        client=recorder,  # type: ignore[arg-type]
        manager=manager,  # type: ignore[arg-type]
        store=store,  # type: ignore[arg-type]
        writes=data_dir_writes(Path("data"), clock),  # no write fails: the path is not used
        host=host,  # type: ignore[arg-type]
        clock=clock,
        rand=lambda: PHASE,
    )
    return loop, recorder


async def run_until(clock: FakeClock, start: float, until: float) -> None:
    """Move the fake clock in small steps, letting the loop act at each."""
    while clock.monotonic() - start < until:
        clock.advance(0.05)
        for _ in range(10):
            await asyncio.sleep(0)


async def drive(clock: FakeClock, loop: ReportLoop, change_at: float, until: float) -> None:
    """Run the report loop from now to ``until`` seconds, with one state change at
    ``change_at``."""
    start = clock.monotonic()
    task = asyncio.create_task(loop.run())
    try:
        await run_until(clock, start, change_at)
        loop.notify()
        await run_until(clock, start, until)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_change_reports_do_not_move_the_heartbeat_phase(
    clock: FakeClock, loop_and_recorder: tuple[ReportLoop, Recorder]
) -> None:
    loop, recorder = loop_and_recorder
    await drive(clock, loop, change_at=5.0, until=24.0)  # an execution changes state at t=5
    # At start (after the debounce), the change at 5 (after the debounce), and heartbeats
    # at 3, 13, 23: the change report did not push them to 15.1, 25.1.
    assert recorder.sent == pytest.approx(
        [0.1, 3.0, 5.1, 13.0, 23.0], abs=0.2
    )  # the fake clock moves in 0.05 s steps


async def test_a_change_report_when_a_heartbeat_is_due_counts_as_it(
    clock: FakeClock, loop_and_recorder: tuple[ReportLoop, Recorder]
) -> None:
    """No second report right behind a change report that went out at heartbeat time."""
    loop, recorder = loop_and_recorder
    await drive(clock, loop, change_at=2.95, until=14.0)  # sent at 3.05, the beat at 3 due
    assert len(recorder.sent) == 3, recorder.sent  # start, the change (as the beat at 3), 13
    assert recorder.sent[-1] == pytest.approx(13.0, abs=0.2)  # the fake clock moves in 0.05 s steps


@pytest.mark.parametrize(
    ("scheduled", "now", "timed_out", "expected"),
    [
        (13.0, 5.1, False, 13.0),  # a change report before the beat leaves it where it is
        (13.0, 13.0, True, 23.0),  # the beat itself
        (13.0, 12.999, True, 23.0),  # its timer fired a hair early: still the beat
        (13.0, 13.05, False, 23.0),  # a change report just after the beat was due is it
        (13.0, 47.0, True, 53.0),  # after an outage: the next beat on the same phase
    ],
)
def test_next_heartbeat_keeps_the_phase(
    scheduled: float, now: float, timed_out: bool, expected: float
) -> None:
    assert next_heartbeat(scheduled, now, INTERVAL, timed_out=timed_out) == pytest.approx(expected)


def test_report_retries_never_back_off_past_a_heartbeat() -> None:
    """After many failed reports the agent still tries once per heartbeat interval (the
    coordinator's grace window after its own restart counts on it); the backoff's cap
    applies when the coordinator named no interval."""
    policy = BackoffPolicy(base=0.5, cap=30.0)
    assert report_retry_delay(20, policy, lambda: 0.99, interval=5.0) == 5.0
    assert report_retry_delay(0, policy, lambda: 0.0, interval=5.0) == 0.25
    assert report_retry_delay(20, policy, lambda: 0.99, interval=0.0) > 29


def interval_loop(clock: FakeClock, session: Session) -> tuple[ReportLoop, Recorder]:
    """A report loop over ``session``, whose interval the test changes as an answer would."""
    recorder = Recorder(clock, clock.monotonic())
    loop = ReportLoop(
        session=session,  # type: ignore[arg-type]
        client=recorder,  # type: ignore[arg-type]
        manager=SimpleNamespace(reports=list),  # type: ignore[arg-type]
        store=SimpleNamespace(load_seq=lambda: 0, save_seq=lambda seq: None),  # type: ignore[arg-type]
        writes=data_dir_writes(Path("data"), clock),
        host=SimpleNamespace(load=Load, resources=Resources),  # type: ignore[arg-type]
        clock=clock,
        rand=lambda: PHASE,
    )
    return loop, recorder


@pytest.mark.parametrize(
    ("new_interval", "expected"),
    [
        # Longer (the fleet grew): the beat already due at 13 stays, then every 20 s.
        (20.0, [0.1, 3.0, 13.0, 33.0]),
        # Shorter (the fleet shrank): the beat at 13 stays too, then every 4 s.
        (4.0, [0.1, 3.0, 13.0, 17.0, 21.0, 25.0, 29.0, 33.0]),
    ],
)
async def test_a_changed_interval_is_followed_from_the_next_beat(
    clock: FakeClock, new_interval: float, expected: list[float]
) -> None:
    """An interval the coordinator hands out later (the fleet grew or shrank) is followed
    from the heartbeat already scheduled on: no silence is longer than the interval the
    agent held at its last beat, which is what the coordinator's TTL allows for."""
    session = Session()
    loop, recorder = interval_loop(clock, session)
    start = clock.monotonic()
    task = asyncio.create_task(loop.run())
    try:
        await run_until(clock, start, 4.0)
        session.heartbeat_interval = new_interval  # an assignments answer carried it
        await run_until(clock, start, 34.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert recorder.sent == pytest.approx(expected, abs=0.2)  # the clock moves in 0.05 s steps
