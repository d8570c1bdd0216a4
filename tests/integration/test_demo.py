"""``fleetwave demo`` as a real process: the whole showcase on a pseudo-terminal, and cleanup
when it is interrupted (SIGINT mid-rollout, SIGTERM while the agents start)."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def demo_argv() -> list[str]:
    script = Path(sys.executable).parent / "fleetwave"
    if script.exists():
        return [str(script), "demo"]
    return [sys.executable, "-c", "from coordinator.cli import main; main()", "demo"]


def demo_env(tmp_path: Path) -> dict[str, str]:
    """The demo's temp dir goes under ``tmp_path``, so its processes can be found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_")}
    return env | {"TMPDIR": str(tmp_path), "COLUMNS": "120", "LINES": "60"}


def survivors(base: Path) -> list[str]:
    """Processes whose command line or working directory is inside ``base``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
            if str(base) in text:
                found.append(f"{proc.info['pid']}: {text[:200]}")
    return found


def assert_no_survivors(base: Path, text: str) -> None:
    """Nothing the demo started outlives it (a SIGKILLed process may take a moment to end)."""
    deadline = time.monotonic() + 10
    while (left := survivors(base)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, (left, text[-3000:])


class Output:
    """Collects a child's output from a file descriptor in a thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    def text(self) -> str:
        return ANSI.sub("", b"".join(self.chunks).decode(errors="replace"))

    def wait_for(self, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert proc.poll() is None, f"demo exited early:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()[-3000:]}"
            time.sleep(0.1)


def test_demo_runs_the_showcase_and_cleans_up(tmp_path: Path) -> None:
    """The demo deploys v1, v2 and a broken v3 that is rolled back, shows each JobStatus,
    exits 0 and leaves no process behind (run on a pseudo-terminal: the live view)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        demo_argv(),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=demo_env(tmp_path),
    )
    os.close(slave)
    output = Output(master)
    try:
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    output.thread.join(timeout=10)
    os.close(master)
    text = output.text()
    assert code == 0, text[-4000:]
    assert re.search(r"Dashboard: http://127\.0\.0\.1:\d+/ui/#token=\S+", text)
    for needle in (
        "Rolling out version 1",
        "Rolling out version 2: one canary",
        "Rolling out version 3 (broken)",
        "canary (active)",  # the live panel
        "Result: rollout_failed",
        "rolled back to version 2",
        "v1: running",
        "v2: running",
        "v3: rollout_failed  rollback",
        "v3 was rolled back: every node runs version 2 again.",
        "Final JobStatus:",
        '"state_type": "rollout_failed"',
        "Stopped the coordinator, the agents and their workloads.",
    ):
        assert needle in text, needle
    assert_no_survivors(tmp_path, text)


@pytest.mark.parametrize(
    ("sig", "when", "code"),
    [
        (signal.SIGINT, "Rolling out version 2", 130),
        (signal.SIGTERM, "Starting 9 agents", 143),
    ],
)
def test_interrupted_demo_stops_everything(
    tmp_path: Path, sig: signal.Signals, when: str, code: int
) -> None:
    """A signal mid-run stops the coordinator, the agents and the workloads, then exits."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        demo_argv(),
        stdin=subprocess.DEVNULL,
        stdout=write_fd,
        stderr=write_fd,
        env=demo_env(tmp_path),
    )
    os.close(write_fd)
    output = Output(read_fd)
    try:
        output.wait_for(when, proc, timeout=150)
        assert survivors(tmp_path)  # the fleet is up: something to clean
        proc.send_signal(sig)
        assert proc.wait(timeout=90) == code, output.text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output.thread.join(timeout=10)
    os.close(read_fd)
    text = output.text()
    assert "Interrupted" in text
    assert "Stopped the coordinator, the agents and their workloads." in text
    assert_no_survivors(tmp_path, text)
