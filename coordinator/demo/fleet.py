"""A local fleet of real processes: coordinators and N agents on loopback ports.

Used by the demo and by the integration tests. By default one coordinator on its own
SQLite file; with ``database_url`` (PostgreSQL) ``coordinators`` of them share it, each on
its own port and data dir with its own ``--member-id``, and every agent is given all their
URLs. Every process it starts, and every workload those agents start under its base
directory, is stopped by ``close()``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

from coordinator.client import ApiClient, ApiError
from shared.tls import client_context

T = TypeVar("T")

ADMIN_TOKEN = "fwa_local-fleet-admin-token"  # noqa: S105 - a throwaway token for local fleets
JOIN_TOKEN = "fwj_local-fleet-join-token"  # noqa: S105


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (ApiError, OSError, http.client.HTTPException) as exc:
            # HTTPException: a workload being replaced can die in the middle of an answer.
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {last_error})" if last_error else "")
            )
        time.sleep(interval)


def policy_toml(policy: Mapping[str, object]) -> str:
    """A ``[policy]`` table of booleans and lists of strings (JSON strings are TOML strings)."""
    lines = ["[policy]"]
    for key, value in policy.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            lines.append(f"{key} = {json.dumps(list(value))}")
        else:
            raise TypeError(f"policy.{key}: a boolean or a list of strings, not {value!r}")
    return "\n".join(lines) + "\n"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Member:
    """One coordinator of the fleet: where it listens and keeps its files, and its process."""

    member_id: str
    port: int
    data_dir: Path
    log_name: str
    proc: Proc | None = None
    paused: bool = False  # SIGSTOPped: alive, but it answers nothing

    @property
    def running(self) -> bool:
        """Alive and not paused: it can answer."""
        return self.proc is not None and self.proc.alive() and not self.paused


@dataclass
class LocalFleet:
    base_dir: Path
    heartbeat_interval: str = "1s"
    # Silence after which the coordinator marks a node down (None: 3 heartbeat intervals).
    heartbeat_ttl: str | None = None
    python: str = sys.executable
    port: int = field(default_factory=free_port)
    agents: dict[str, Proc] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    # HTTPS with mTLS: a private CA under <base_dir>/tls signs the coordinator's certificate
    # and one client certificate per agent.
    tls: bool = False
    # The agents' host policy: the `[policy]` table of their config file (agent config,
    # DESIGN §10). Required, so every fleet says what its hosts let jobs do; `{}` is the
    # default policy (no root, ...).
    policy: Mapping[str, object] = field(kw_only=True)
    # HA: the PostgreSQL database the coordinators share (None: one coordinator, SQLite),
    # how many of them, and their leadership lease (None: the coordinator's default).
    database_url: str | None = field(default=None, kw_only=True)
    coordinators: int = field(default=1, kw_only=True)
    lease_ttl: str | None = field(default=None, kw_only=True)
    members: list[Member] = field(init=False)

    def __post_init__(self) -> None:
        if self.coordinators < 1 or (self.coordinators > 1 and self.database_url is None):
            raise ValueError("several coordinators need a shared database_url (PostgreSQL)")
        if self.database_url is None:
            # Exactly the single-coordinator fleet it always was.
            self.members = [Member("", self.port, self.base_dir / "coordinator", "coordinator")]
            return
        self.members = [
            Member(
                f"c{i + 1}",
                self.port if i == 0 else free_port(),
                self.base_dir / f"coordinator-c{i + 1}",
                f"coordinator-c{i + 1}",
            )
            for i in range(self.coordinators)
        ]

    @property
    def ha(self) -> bool:
        return self.database_url is not None

    @property
    def coordinator(self) -> Proc | None:
        """The (first) coordinator's process."""
        return self.members[0].proc

    @property
    def url(self) -> str:
        """The (first) coordinator's URL."""
        return self.member_url(0)

    @property
    def urls(self) -> list[str]:
        """Every coordinator's URL, in member order."""
        return [self.member_url(i) for i in range(len(self.members))]

    def member_url(self, index: int) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.members[index].port}"

    @property
    def tls_dir(self) -> Path:
        return self.base_dir / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca" / "ca.pem"

    @property
    def api(self) -> ApiClient:
        """A client of the first coordinator that can answer (the first one if none can)."""
        running = [i for i, m in enumerate(self.members) if m.running]
        return self.api_of(running[0] if running else 0)

    def api_of(self, index: int, timeout: float = 10) -> ApiClient:
        context = client_context(self.ca_file) if self.tls else None
        return ApiClient(self.member_url(index), ADMIN_TOKEN, timeout=timeout, ssl_context=context)

    def certificate(self, name: str, *, server: bool = False) -> tuple[Path, Path]:
        """(cert, key) for ``name``, signed by this fleet's CA (made on first use)."""
        from coordinator.tlsgen import create_ca, create_cert

        if not self.ca_file.exists():
            create_ca(self.ca_file.parent)
        cert, key = self.tls_dir / f"{name}.pem", self.tls_dir / f"{name}-key.pem"
        if not cert.exists():
            create_cert(self.ca_file.parent, self.tls_dir, name=name, server=server)
        return cert, key

    def _coordinator_tls_args(self) -> list[str]:
        if not self.tls:
            return []
        cert, key = self.certificate("coordinator", server=True)
        return [
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--tls-client-ca",
            str(self.ca_file),
        ]

    def _agent_tls_args(self, name: str, client_cert: bool) -> list[str]:
        if not self.tls:
            return []
        args = ["--ca-file", str(self.ca_file)]
        if client_cert:
            cert, key = self.certificate(f"agent-{name}")
            args += ["--tls-cert", str(cert), "--tls-key", str(key)]
        return args

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_")}
        env.pop("NOTIFY_SOCKET", None)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        logs = self.base_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        return Proc(name, popen, log_path, log)

    def start_coordinator(
        self, *extra: str, wait: bool = True, env: dict[str, str] | None = None, member: int = 0
    ) -> Proc:
        """Start coordinator ``member`` on its port and data dir (again, after a stop);
        ``env`` adds variables to its environment (the fault tests preload faketime)."""
        slot = self.members[member]
        environ = (
            self._env()
            | (env or {})
            | {
                "FLEETWAVE_ADMIN_TOKEN": ADMIN_TOKEN,
                "FLEETWAVE_JOIN_TOKEN": JOIN_TOKEN,
            }
        )
        if self.heartbeat_ttl is not None:
            environ["FLEETWAVE_HEARTBEAT_TTL"] = self.heartbeat_ttl
        if self.database_url is not None:
            # In the environment: a password in the URL would show in ps as a flag.
            environ["FLEETWAVE_DATABASE"] = self.database_url
        argv = [
            self.python,
            "-m",
            "coordinator",
            "--listen",
            f"127.0.0.1:{slot.port}",
            "--data-dir",
            str(slot.data_dir),
            "--heartbeat-interval",
            self.heartbeat_interval,
            "--log-format",
            "json",
            *self._coordinator_tls_args(),
            *self._coordinator_ha_args(slot),
            *extra,
        ]
        slot.proc = self._spawn(slot.log_name, argv, environ)
        slot.paused = False
        if wait:
            self.wait_ready(member=member)
        return slot.proc

    def _coordinator_ha_args(self, slot: Member) -> list[str]:
        if self.database_url is None:
            return []
        args = ["--member-id", slot.member_id]
        return args + (["--lease-ttl", self.lease_ttl] if self.lease_ttl else [])

    def start_coordinators(self, *extra: str, env: dict[str, str] | None = None) -> int:
        """Start every coordinator, wait until each is ready and one leads; its index."""
        for index in range(len(self.members)):
            self.start_coordinator(*extra, wait=False, env=env, member=index)
        for index in range(len(self.members)):
            self.wait_ready(member=index)
        return self.leader()

    def wait_ready(self, timeout: float = 30.0, *, member: int = 0) -> None:
        slot = self.members[member]

        def ready() -> bool:
            if slot.proc is not None and not slot.proc.alive():
                raise RuntimeError(f"coordinator exited; see {slot.proc.log_path}")
            try:
                self.api_of(member).request("GET", "/readyz")
            except ApiError:
                return False
            return True

        name = f"coordinator {slot.member_id}" if slot.member_id else "the coordinator"
        wait_for(f"{name} to be ready", ready, timeout)

    # -- several coordinators

    def role(self, member: int, timeout: float = 1.0) -> str | None:
        """What coordinator ``member``'s /readyz says it is (``leader``/``follower``); None
        when it is down, paused, not ready or does not answer within ``timeout``."""
        if not self.members[member].running:
            return None
        try:
            body = self.api_of(member, timeout).request("GET", "/readyz").body
        except (ApiError, OSError, http.client.HTTPException):
            return None
        role = body.get("role") if isinstance(body, dict) else None
        return str(role) if role else None

    def leader(self, timeout: float = 30.0, *, besides: int | None = None) -> int:
        """The index of the coordinator whose /readyz says it leads (other than ``besides``),
        polled until there is one."""

        def leading() -> tuple[int] | None:
            for index in range(len(self.members)):
                if index != besides and self.role(index) == "leader":
                    return (index,)
            return None

        return wait_for("a coordinator to lead", leading, timeout, interval=0.02)[0]

    def cluster(self, member: int) -> dict[str, Any]:
        """``GET /v1/cluster`` of coordinator ``member``."""
        body: dict[str, Any] = self.api_of(member, 2).request("GET", "/v1/cluster").body
        return body

    def kill_coordinator(self, member: int) -> float:
        """kill -9 coordinator ``member``; the wall time of the kill."""
        slot = self.members[member]
        assert slot.proc is not None
        at = time.time()
        self.stop(slot.proc, signal.SIGKILL)
        slot.paused = False
        return at

    def pause_coordinator(self, member: int) -> float:
        """SIGSTOP coordinator ``member``; the wall time it was stopped."""
        slot = self.members[member]
        assert slot.proc is not None
        at = time.time()
        slot.proc.popen.send_signal(signal.SIGSTOP)
        slot.paused = True
        return at

    def resume_coordinator(self, member: int) -> None:
        """SIGCONT coordinator ``member``."""
        slot = self.members[member]
        assert slot.proc is not None
        slot.proc.popen.send_signal(signal.SIGCONT)
        slot.paused = False

    def restart_coordinator(self, member: int, *, wait: bool = True) -> Proc:
        """Stop coordinator ``member`` if it runs (kill -9 when paused), start it again."""
        slot = self.members[member]
        if slot.proc is not None and slot.proc.alive():
            self.stop(slot.proc, signal.SIGKILL if slot.paused else signal.SIGTERM)
        return self.start_coordinator(wait=wait, member=member)

    def start_agent(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        *,
        on_stop: str = "stop-workloads",
        coordinator: str | None = None,
        client_cert: bool = True,
        extra: Sequence[str] = (),
        policy: Mapping[str, object] | None = None,
        join_token: str | None = None,
    ) -> Proc:
        """Start agent ``name`` (again: its labels are remembered); ``coordinator`` is the URL
        it talks to, this fleet's coordinators unless given (the fault tests put a proxy there).
        In a TLS fleet it verifies the coordinator with the fleet's CA and, unless
        ``client_cert`` is false, presents its own certificate; ``extra`` flags come last.
        Its config file holds ``policy``, else the fleet's; it joins with ``join_token``,
        else the fleet's default one."""
        if labels is not None:
            self.labels[name] = labels
        argv = [
            self.python,
            "-m",
            "agent",
            "--config",
            str(self._agent_config(name, self.policy if policy is None else policy)),
            *self._coordinator_flags(coordinator),
            "--data-dir",
            str(self.base_dir / "agents" / name),
            "--name",
            name,
            "--listen",
            "off",
            "--log-format",
            "json",
            *self._agent_tls_args(name, client_cert),
        ]
        for key, value in sorted(self.labels.get(name, {}).items()):
            argv += ["--label", f"{key}={value}"]
        argv += extra
        # A local fleet is thrown away with its agents: they stop their workloads on SIGTERM.
        # The join token goes in the environment: a flag would show it to every user in ps.
        env = self._env() | {
            "FLEETWAVE_ON_STOP": on_stop,
            "FLEETWAVE_JOIN_TOKEN": join_token or JOIN_TOKEN,
        }
        proc = self._spawn(f"agent-{name}", argv, env)
        self.agents[name] = proc
        return proc

    def _coordinator_flags(self, coordinator: str | None) -> list[str]:
        """``--coordinator`` for ``coordinator``, else for each of this fleet's coordinators."""
        urls = [coordinator] if coordinator else self.urls
        return [flag for url in urls for flag in ("--coordinator", url)]

    def _agent_config(self, name: str, policy: Mapping[str, object]) -> Path:
        """The agent's config file: only its ``[policy]`` (flags give the rest). It also keeps
        the agent from reading the host's /etc/fleetwave/agent.toml."""
        path = self.base_dir / "agents" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(policy_toml(policy), encoding="utf-8")
        return path

    def stop(self, proc: Proc, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> int:
        if proc.alive():
            proc.popen.send_signal(sig)
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            code = proc.popen.wait(5)
        proc.log.close()
        return code

    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.api.request("GET", "/v1/nodes").body["nodes"]
        return nodes

    def wait_nodes_ready(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            nodes = [n for n in self.nodes() if n["status"] == "ready"]
            return nodes if len(nodes) >= count else None

        return wait_for(f"{count} ready nodes", ready, timeout)

    def status(self, job: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api.request("GET", f"/v1/jobs/{job}/status").body
        return body

    def wait_state(self, job: str, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(job)
            return status if status["state"]["state_type"] in states else None

        return wait_for(f"job {job} to reach {'/'.join(states)}", reached, timeout)

    def workload_processes(self) -> list[psutil.Process]:
        """Live processes (other than our agents and coordinator) working inside the base dir.

        Zombies are left out: they have ended, and only wait for their parent to collect them;
        after an agent was killed with SIGKILL that parent is PID 1, which may take its time.
        """
        procs = [*self.agents.values(), *(m.proc for m in self.members)]
        ours = {p.popen.pid for p in procs if p is not None}
        base = str(self.base_dir.resolve())
        found = []
        for proc in psutil.process_iter(["pid", "cwd", "status"]):
            with contextlib.suppress(psutil.Error):
                cwd = proc.info["cwd"] or ""
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if proc.info["pid"] not in ours and cwd.startswith(base):
                    found.append(proc)
        return found

    def close(self) -> None:
        for proc in self.agents.values():
            if proc.alive():
                self.stop(proc)
        for slot in self.members:
            if slot.proc is not None and slot.proc.alive():
                if slot.paused:
                    self.resume_coordinator(self.members.index(slot))
                self.stop(slot.proc)
        workloads = self.workload_processes()
        for workload in workloads:
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                os.killpg(workload.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                workload.kill()
        # SIGKILL is not instant: give the kernel a moment to end them before anyone looks.
        if workloads:
            with contextlib.suppress(TimeoutError):
                wait_for("killed workloads to end", lambda: not self.workload_processes(), 10)
