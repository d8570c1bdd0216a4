"""Real processes for the benchmarks: a coordinator, a bare aiohttp baseline, and meters.

The coordinator is started exactly as an operator would (``python -m coordinator``),
on a loopback port and a temp data dir; benchmarks talk to it over HTTP only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from coordinator.demo.fleet import ADMIN_TOKEN, JOIN_TOKEN, free_port

ROOT = Path(__file__).resolve().parent.parent

SERVER_CPU = 0
"""The core the measured servers (coordinator, bare baseline) run on, when pinned."""
DRIVER_CPU = 1
"""The core of the benchmark process itself: the simulator and the load generator."""

_pin_servers = False


def pin_processes() -> dict[str, Any]:
    """Pin this process (the simulator and the load generator) to ``DRIVER_CPU`` and every
    server started afterwards to ``SERVER_CPU``, so the two never compete for one core.

    With fewer than two usable cores (or no ``sched_setaffinity``) nothing is pinned, and
    the result says so. Called before the event loop starts: threads started later
    (resolvers, aiosqlite in the servers) inherit the pinning.
    """
    global _pin_servers
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return {"pinned": False, "reason": "no sched_setaffinity on this platform"}
    if SERVER_CPU not in usable or DRIVER_CPU not in usable:
        return {"pinned": False, "reason": f"usable CPUs {usable}: fewer than two"}
    os.sched_setaffinity(0, {DRIVER_CPU})
    _pin_servers = True
    return {"pinned": True, "servers_cpu": SERVER_CPU, "driver_cpu": DRIVER_CPU}


def _pin_server(pid: int) -> None:
    if _pin_servers:
        with contextlib.suppress(OSError):  # it may already have exited: start() says so
            os.sched_setaffinity(pid, {SERVER_CPU})


@dataclass
class Server:
    """A server process on a loopback port, stopped by ``close()``."""

    name: str
    argv: list[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None
    root: Path = ROOT
    """The checkout it runs from."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> psutil.Process:
        assert self.popen is not None
        return psutil.Process(self.popen.pid)

    def start(self, ready_path: str = "/healthz", timeout: float = 30.0) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_")}
        env["PYTHONPATH"] = str(self.root)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [*self.argv, "--listen", f"127.0.0.1:{self.port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                cwd=self.root,
            )
        _pin_server(self.popen.pid)
        deadline = time.monotonic() + timeout
        import urllib.request

        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2):  # noqa: S310
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready; see {self.log_path}") from None
                time.sleep(0.05)

    def stop(self, sig: signal.Signals, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the process to end; its exit code."""
        assert self.popen is not None
        self.popen.send_signal(sig)
        return self.popen.wait(timeout)

    def peak_rss_mb(self) -> float:
        """The process's peak resident set size so far (VmHWM), in MB."""
        assert self.popen is not None
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
        return self.process.memory_info().rss / 1e6

    def close(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def coordinator(workdir: Path, *extra: str) -> Server:
    data = workdir / "coordinator"
    argv = [
        sys.executable,
        "-m",
        "coordinator",
        "--data-dir",
        str(data),
        "--admin-token",
        ADMIN_TOKEN,
        "--join-token",
        JOIN_TOKEN,
        "--log-format",
        "json",
        *extra,
    ]
    # FLEETWAVE_BENCH_COORDINATOR_ROOT: another checkout's coordinator, measured by this
    # bench (e.g. the main branch before a change, in the same run as after it).
    root = Path(os.environ.get("FLEETWAVE_BENCH_COORDINATOR_ROOT") or ROOT)
    return Server("coordinator", argv, workdir / "logs" / "coordinator.log", root=root)


def bare_server(workdir: Path, report_bytes: int, assign_bytes: int) -> Server:
    argv = [
        sys.executable,
        "-m",
        "bench.bare",
        "--report-bytes",
        str(report_bytes),
        "--assign-bytes",
        str(assign_bytes),
    ]
    return Server("bare", argv, workdir / "logs" / "bare.log")


@dataclass
class Usage:
    """CPU share (of one core) and RSS of a process over a window."""

    cpu_percent: float
    rss_mb: float
    seconds: float


class Meter:
    """Measures a process's CPU time and RSS between ``start()`` and ``stop()``."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self._t0 = 0.0
        self._cpu0 = 0.0

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def start(self) -> Meter:
        self._t0, self._cpu0 = time.monotonic(), self._cpu()
        return self

    def stop(self) -> Usage:
        seconds = time.monotonic() - self._t0
        cpu = self._cpu() - self._cpu0
        rss = self.process.memory_info().rss / 1e6
        return Usage(cpu_percent=100 * cpu / seconds, rss_mb=rss, seconds=seconds)


class GroupMeter:
    """Like Meter, for a group of processes that may change while it measures (a database
    server's backends): CPU time of each process seen at ``stop()`` since ``start()`` (or
    since it began, if it began meanwhile); RSS summed over them at ``stop()``."""

    def __init__(self, processes: Callable[[], Iterable[psutil.Process]]) -> None:
        self.processes = processes
        self._t0 = 0.0
        self._cpu0: dict[int, float] = {}

    def _cpu(self) -> dict[int, tuple[float, float]]:
        seen: dict[int, tuple[float, float]] = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                seen[proc.pid] = (times.user + times.system, proc.memory_info().rss / 1e6)
        return seen

    def start(self) -> GroupMeter:
        self._t0 = time.monotonic()
        self._cpu0 = {pid: cpu for pid, (cpu, _rss) in self._cpu().items()}
        return self

    def stop(self) -> Usage:
        seconds = time.monotonic() - self._t0
        now = self._cpu()
        cpu = sum(c - self._cpu0.get(pid, 0.0) for pid, (c, _rss) in now.items())
        rss = sum(r for _c, r in now.values())
        return Usage(cpu_percent=100 * cpu / seconds, rss_mb=rss, seconds=seconds)


def calibrate(seconds: float = 1.0) -> float:
    """Iterations per second of a fixed pure-Python loop: this machine's speed right now.

    Measured at the start and end of each run; numbers are comparable between runs
    only after dividing by it, because the machine is shared.
    """
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        total = 0
        for i in range(1000):
            total += i * i
        count += 1
    return count / seconds


def calibrate_cpus(seconds: float = 0.5) -> dict[str, float]:
    """``calibrate()`` on each core the benchmark uses: the servers' and the driver's when
    pinned (the process moves to each for the measurement, then back), else wherever."""
    if not _pin_servers:
        return {"any_cpu": round(calibrate(seconds))}
    speeds: dict[str, float] = {}
    try:
        for cpu in (SERVER_CPU, DRIVER_CPU):
            os.sched_setaffinity(0, {cpu})
            speeds[f"cpu{cpu}"] = round(calibrate(seconds))
    finally:
        os.sched_setaffinity(0, {DRIVER_CPU})
    return speeds


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


class Unavailable(RuntimeError):
    """A 503: the coordinator cannot serve now (its database is busy or away); retry."""


class Admin:
    """The operator API, as the benchmark driver needs it."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self.unavailable = 0

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(
            method, self.url + path, json=body, headers=self.headers
        ) as resp:
            data = await resp.json()
            if resp.status == 503:
                raise Unavailable(f"{method} {path}: HTTP 503 {data}")
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status} {data}")
            return data

    async def put_job(self, spec: dict[str, Any]) -> Any:
        return await self.call("PUT", f"/v1/jobs/{spec['name']}", spec)

    async def status(self, job: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.call("GET", f"/v1/jobs/{job}/status")
        return data

    async def wait_state(
        self, job: str, states: set[str], deadline: float, interval: float = 0.05
    ) -> dict[str, Any]:
        async with asyncio.timeout(deadline):
            while True:
                try:
                    status = await self.status(job)
                except Unavailable:
                    self.unavailable += 1  # counted, not fatal: the fleet scenario reports it
                else:
                    if status["state"]["state_type"] in states:
                        return status
                await asyncio.sleep(interval)


def job_spec(
    name: str,
    marker: str,
    *,
    canary: int | str = 1,
    waves: int = 10,
    min_healthy_time: str = "1s",
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A service job for simulated nodes; a new ``marker`` makes a new version."""
    return {
        "name": name,
        "target": {"selector": selector or {"sim": "true"}},
        "task": {"command": ["sleep", "infinity"], "env": {"MARKER": marker}},
        "rollout": {
            "canary": canary,
            "waves": waves,
            "min_healthy_time": min_healthy_time,
            "healthy_deadline": "5m",
            "progress_deadline": "10m",
        },
    }
