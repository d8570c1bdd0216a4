"""Table tests for the pure reconcile function."""

from __future__ import annotations

import pytest

from agent.reconcile import (
    Action,
    CurrentExecution,
    ReplaceJob,
    RestartJob,
    StartJob,
    StopJob,
    reconcile,
)
from shared.protocol import Assignment
from tests.agent.factories import assignment, job_spec

WEB1 = assignment(job_spec("web"), version=1)
WEB2 = assignment(job_spec("web"), version=2)
WEB1_GEN1 = assignment(job_spec("web"), version=1, generation=1)
API1 = assignment(job_spec("api"), version=1)


def running(*items: tuple[str, int, int]) -> dict[str, CurrentExecution]:
    return {job: CurrentExecution(job, version, gen) for job, version, gen in items}


class TestReconcile:
    @pytest.mark.parametrize(
        ("desired", "current", "expected"),
        [
            ([], {}, []),
            ([WEB1], {}, [StartJob(WEB1)]),
            ([WEB1], running(("web", 1, 0)), []),
            ([], running(("web", 1, 0)), [StopJob("web")]),
            ([WEB2], running(("web", 1, 0)), [ReplaceJob(WEB2)]),
            ([WEB1], running(("web", 2, 0)), [ReplaceJob(WEB1)]),  # rollback
            ([WEB1_GEN1], running(("web", 1, 0)), [RestartJob(WEB1_GEN1)]),
            (
                [WEB2, API1],
                running(("web", 1, 0), ("old", 3, 0)),
                [StopJob("old"), StartJob(API1), ReplaceJob(WEB2)],
            ),
        ],
        ids=[
            "nothing",
            "start",
            "in-sync",
            "stop-unlisted",
            "new-version",
            "older-version",
            "new-generation",
            "mixed-stops-first",
        ],
    )
    def test_table(
        self,
        desired: list[Assignment],
        current: dict[str, CurrentExecution],
        expected: list[Action],
    ) -> None:
        """Each desired/current pair yields exactly the expected actions, stops first."""
        assert reconcile(desired, current) == expected

    def test_idempotent_after_apply(self) -> None:
        """Once the actions are applied, reconciling again yields nothing."""
        desired = [WEB2, API1]
        after = running(*((a.job, a.version, a.generation) for a in desired))
        assert reconcile(desired, after) == []
