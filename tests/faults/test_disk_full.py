"""ENOSPC: the coordinator's or an agent's data dir on a small tmpfs, filled up.

Each data dir is its own tmpfs (``mount -t tmpfs -o size=...``; the suite runs as root,
and skips with the reason when mounting is not permitted), unmounted afterwards. A filler
file takes every free byte; deleting it gives the space back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.demo.fleet import wait_for
from tests.faults.events import http_call, parse_time
from tests.faults.harness import FaultFleet, ended_running

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PAD = "x" * 200_000  # a big spec, so that storing a version needs new space


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """``path`` as a tmpfs of ``size``, unmounted afterwards (lazily if still busy)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path} (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a filler file into ``directory`` until the filesystem is full (ENOSPC)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):  # big chunks, then whatever still fits
            while _write_all(fd, b"\0" * size):
                pass
    finally:
        os.close(fd)
    return filler


def _write_all(fd: int, data: bytes) -> bool:
    """Write ``data``; False once the filesystem is full."""
    try:
        os.write(fd, data)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return False
    return True


def test_a_full_coordinator_disk_answers_503_and_recovers(
    faults: FaultFleet, figures: dict[str, Any]
) -> None:
    """With the coordinator's data dir full, writes answer 503 with Retry-After (never
    500) and /readyz 503; once space is back it recovers by itself, with every
    acknowledged write stored, nothing else, and the next version rolled out."""
    with tmpfs(faults.base_dir / "coordinator", "24m"):
        faults.start(3)
        problems = ended_running(faults, faults.deploy(faults.spec()))
        filler = fill(faults.base_dir / "coordinator")
        answers: Counter[int] = Counter()
        refused = []
        for _ in range(12):
            status, headers, body = faults.put(faults.spec(pad=PAD))
            answers[status] += 1
            if status not in (200, 201):
                refused.append((status, headers.get("Retry-After"), body))
            if len(refused) >= 3:
                break
        ready_while_full, _, _ = http_call(faults.fleet.url + "/readyz")
        filler.unlink()
        figures.update(put_answers_while_full=dict(answers), readyz_while_full=ready_while_full)
        if not refused:
            problems.append(f"the full disk refused no write: {dict(answers)}")
        for status, retry_after, body in refused:
            if status != 503 or not retry_after:
                problems.append(
                    f"a write on a full disk answered {status} (Retry-After {retry_after!r}):"
                    f" {body}"
                )
        if ready_while_full != 503:
            problems.append(f"/readyz answered {ready_while_full} while writes failed")
        try:
            wait_for(
                "/readyz to recover",
                lambda: http_call(faults.fleet.url + "/readyz")[0] == 200,
                timeout=30,
            )
            for _ in range(2):
                version = faults.deploy(faults.spec())
            problems += ended_running(faults, version)
        except (TimeoutError, AssertionError) as exc:
            problems.append(f"no recovery once space was back: {exc}")
        figures["answers_after_recovery"] = [p.status for p in faults.puts[-2:]]
        problems += faults.violations()
        faults.close()  # stop the coordinator before its data dir is unmounted
    assert not problems, "\n".join(problems)


def test_a_full_agent_disk_keeps_the_node_ready(
    faults: FaultFleet, figures: dict[str, Any]
) -> None:
    """With an agent's data dir full, its node keeps heartbeating (ready), shows the
    data_dir_unwritable condition, its workload keeps running; all clears once space
    is back."""
    victim = "n1"
    with tmpfs(faults.base_dir / "agents" / victim, "8m") as data_dir:
        faults.start(2)
        problems = ended_running(faults, faults.deploy(faults.spec()))
        before = [life for life in faults.lives() if life.node == victim]
        filler = fill(data_dir)
        full_at = time.time()

        def node() -> dict[str, Any]:
            body: dict[str, Any] = faults.api.request("GET", f"/v1/nodes/{victim}").body
            return body

        def unwritable() -> bool:
            return "data_dir_unwritable" in repr(node().get("conditions"))

        statuses: Counter[str] = Counter()
        try:
            wait_for("the data_dir_unwritable condition", unwritable, timeout=3 * faults.ttl)
        except TimeoutError as exc:
            problems.append(f"{exc}; the node shows {node().get('conditions')!r}")
        # Watch the node for two TTLs of full disk: it must stay ready all along.
        while time.time() < full_at + 2 * faults.ttl:
            statuses[node()["status"]] += 1
            time.sleep(0.2)
        last_heartbeat = node()["last_heartbeat"]
        figures.update(node_status_while_full=dict(statuses))
        if set(statuses) != {"ready"}:
            problems.append(f"{victim} did not stay ready with a full disk: {dict(statuses)}")
        if parse_time(last_heartbeat) < full_at + faults.ttl:
            problems.append(f"{victim} stopped heartbeating on a full disk ({last_heartbeat})")
        after = [life for life in faults.lives() if life.node == victim]
        if after != before or not before or not _alive(before[-1].pid):
            problems.append(f"{victim}'s workload did not keep running: {before} -> {after}")
        filler.unlink()
        try:
            wait_for("the condition to clear", lambda: not unwritable(), timeout=30)
            problems += ended_running(faults, faults.deploy(faults.spec()))
        except TimeoutError as exc:
            problems.append(f"no recovery once space was back: {exc}")
        problems += faults.violations()
        faults.close()  # stop the agent before its data dir is unmounted
    assert not problems, "\n".join(problems)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
