"""A booted Debian container (systemd as PID 1) with Fleetwave installed as systemd services.

This sandbox's PID 1 is not systemd and it has no machined or system bus, so the container is
started with ``--register=no --keep-unit`` (no scope unit, no machine registration) and
commands run in it through ``nsenter -t <container PID 1> -a`` instead of
``systemd-run -M`` / ``machinectl shell``. ``--private-network`` gives it its own loopback,
so ports 7400/7401 inside never collide with the host's.

Layers, top first: a per-machine upper dir (thrown away) over the per-session install layer
(the wheel, unit files, config) over the cached venv layer over the cached rootfs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.e2e.systemd.images import VENV, Chroot, Overlay, cache_dir

T = TypeVar("T")

ADMIN_TOKEN = "fwa-e2e-admin-token"
JOIN_TOKEN = "fwj-e2e-join-token"
NODE_NAME = "e2e-node"
COORDINATOR = "http://127.0.0.1:7400"
UNITS = ("fleetwave-coordinator.service", "fleetwave-agent.service")
REPO = Path(__file__).resolve().parents[3]

_CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class MachineError(RuntimeError):
    """The container could not be prepared, booted or reached."""


def run_dir() -> Path:
    path = cache_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_install_layer(lowers: Sequence[Path], wheel: Path, layer: Path) -> Path:
    """An overlay upper dir with the wheel installed into the venv, units and config."""
    work = layer.with_name(layer.name + ".work")
    merged = layer.with_name(layer.name + ".merged")
    try:
        with Overlay(lowers, layer, work, merged) as root:
            shutil.copy(wheel, root / "tmp" / wheel.name)
            with Chroot(root) as chroot:
                pip = f"{VENV}/bin/pip"
                chroot.run(
                    [
                        pip,
                        "install",
                        "--no-deps",
                        "--no-index",
                        "-q",
                        "--force-reinstall",
                        f"/tmp/{wheel.name}",
                    ]
                )
            (root / "tmp" / wheel.name).unlink()
            (root / "etc/fleetwave-ca.crt").unlink(missing_ok=True)
            install_units(root)
            write_config(root)
            _run_host(["systemctl", f"--root={root}", "enable", *UNITS])
    finally:
        for path in (work, merged):
            shutil.rmtree(path, ignore_errors=True)
    return layer


def install_units(root: Path) -> None:
    """The repository's unit files, with ExecStart already pointing into /opt/fleetwave."""
    for unit in UNITS:
        shutil.copy(REPO / "systemd" / unit, root / "etc/systemd/system" / unit)


def write_config(root: Path) -> None:
    """Coordinator and agent config as docs/install.md describes, with fixed test tokens."""
    etc = root / "etc/fleetwave"
    etc.mkdir(mode=0o755, exist_ok=True)
    (etc / "coordinator.toml").write_text(
        'listen = "127.0.0.1:7400"\nheartbeat_interval = "1s"\n', encoding="utf-8"
    )
    _secret(
        etc / "coordinator.env",
        f"FLEETWAVE_ADMIN_TOKEN={ADMIN_TOKEN}\nFLEETWAVE_JOIN_TOKEN={JOIN_TOKEN}\n",
    )
    _secret(etc / "join.token", JOIN_TOKEN + "\n")
    (etc / "agent.toml").write_text(
        f'coordinators = ["{COORDINATOR}"]\n'
        'join_token_file = "/etc/fleetwave/join.token"\n'
        f'name = "{NODE_NAME}"\n'
        'labels = { role = "web", port = "8080" }\n'
        'poll_wait = "5s"\n'
        # This suite's jobs set no user, so under the root agent they run as root.
        "[policy]\nallow_root = true\n",
        encoding="utf-8",
    )


def _secret(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)


def _run_host(cmd: Sequence[str | Path]) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


@dataclass
class Api:
    """One coordinator answer: HTTP status and decoded JSON body (None if not JSON)."""

    status: int
    body: Any


class SystemdHost:
    """A booted container; ``run`` executes commands inside it as root.

    Use as a context manager: leaving it always tears the container down.
    """

    def __init__(
        self,
        lowers: Sequence[Path],
        *,
        boot_timeout: float = 60.0,
        prepare: Callable[[Path], None] | None = None,
    ) -> None:
        self.name = f"fw-e2e-{uuid.uuid4().hex[:8]}"
        self._lowers = list(lowers)
        self._boot_timeout = boot_timeout
        self._prepare = prepare
        self._dir = run_dir() / self.name
        self._overlay = Overlay(
            self._lowers, self._dir / "upper", self._dir / "work", self._dir / "root"
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: Any = None
        self.leader = 0
        """The container's PID 1 as seen from the host."""
        self.coordinator = COORDINATOR
        """The URL ``api`` calls; a test that moves the coordinator to HTTPS changes it."""
        self.ca_file: str | None = None
        """The CA (a path inside the container) ``api`` verifies an https:// coordinator with."""

    @property
    def root(self) -> Path:
        """The container's file system as seen from the host (the overlay mount)."""
        return self._dir / "root"

    @property
    def console_log(self) -> Path:
        return self._dir / "console.log"

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> SystemdHost:
        try:
            self.boot()
        except BaseException:
            self.terminate()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def boot(self) -> None:
        """Mount the layers, let ``prepare`` change the file system, start systemd-nspawn
        --boot and wait for a running system."""
        self._overlay.__enter__()
        if self._prepare is not None:
            self._prepare(self.root)
        self._console = self.console_log.open("wb")
        self._proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--quiet",
                "--boot",
                f"--directory={self.root}",
                f"--machine={self.name}",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--console=read-only",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            env=_CLEAN_ENV,
        )
        self.leader = self.wait_until(self._find_leader, timeout=20, what="the container's PID 1")
        self.wait_until(
            lambda: (
                self.run(["systemctl", "is-system-running"]).stdout.strip()
                in {"running", "degraded"}
            ),
            timeout=self._boot_timeout,
            what="systemctl is-system-running to say running or degraded",
        )

    def _find_leader(self) -> int | None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise MachineError(f"systemd-nspawn exited: {self.console_tail()}")
        for child in _children(proc.pid):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{child}/status").read_text()
                ns_pids = next(x for x in status.splitlines() if x.startswith("NSpid:"))
                if ns_pids.split()[-1] == "1":
                    return child
        return None

    def terminate(self) -> None:
        """Power the container off (SIGKILL after 10 s), unmount and delete its layer."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to halt
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                if self.leader:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.leader, signal.SIGKILL)  # ends the whole PID namespace
                proc.kill()
                proc.wait(timeout=10)
        self._proc = None
        if self._console is not None:
            self._console.close()
            self._console = None
        self._overlay.__exit__()
        shutil.rmtree(self._dir, ignore_errors=True)
        # nspawn cannot clean its propagation dir when /run is not a tmpfs; do it for it.
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)

    def console_tail(self, chars: int = 3000) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- commands ----------------------------------------------------------------------------

    def run(
        self,
        cmd: Sequence[str],
        *,
        input: str | None = None,
        check: bool = False,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the container (all its namespaces) and capture text output."""
        if not self.leader:
            raise MachineError("the container is not running")
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--", *cmd],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_CLEAN_ENV,
            check=False,
        )
        if check and result.returncode != 0:
            raise MachineError(
                f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def sh(self, script: str, *, check: bool = True) -> str:
        """A shell snippet inside the container; its stdout."""
        return self.run(["sh", "-c", script], check=check).stdout

    def systemctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", *args], check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        out = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)])
        values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        return values

    def main_pid(self, unit: str) -> int:
        """The unit's main process, as a pid inside the container (0 when none)."""
        return int(self.show(unit, "MainPID")["MainPID"])

    def journal(self, unit: str, *, lines: int = 200) -> str:
        """The unit's journal, message text only."""
        return self.run(
            ["journalctl", "--no-pager", "-o", "cat", "-n", str(lines), "-u", unit]
        ).stdout

    def api(self, method: str, path: str, body: object = None, *, token: str = ADMIN_TOKEN) -> Api:
        """Call the coordinator inside the container with curl; admin token by default."""
        cmd = ["curl", "-sS", "-X", method, "-w", "\n%{http_code}", f"{self.coordinator}{path}"]
        if self.ca_file:
            cmd += ["--cacert", self.ca_file]
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        out = self.run(cmd, input=None if body is None else json.dumps(body), check=True).stdout
        text, _, code = out.rpartition("\n")
        try:
            decoded: Any = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            decoded = None
        return Api(int(code or 0), decoded)

    def pids(self, pattern: str) -> list[int]:
        """Pids (inside the container) of processes whose command line matches ``pattern``."""
        out = self.run(["pgrep", "-f", pattern]).stdout
        return sorted(int(p) for p in out.split())

    # -- waiting -------------------------------------------------------------------------------

    def wait_until(
        self,
        probe: Callable[[], T | None],
        *,
        timeout: float = 30.0,
        interval: float = 0.2,
        what: str = "",
    ) -> T:
        """Poll ``probe`` until it returns something truthy (returned); fail after ``timeout``.

        The failure message has the console's tail so a failed boot explains itself.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or probe!r}\n"
                    f"--- console ---\n{self.console_tail()}"
                )
            time.sleep(interval)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out
