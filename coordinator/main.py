"""Composition root of the coordinator daemon: config → store → engine → HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
import signal
import ssl
import sys
from datetime import datetime
from pathlib import Path

import structlog
from aiohttp import web

from coordinator.admission import AgentAdmission
from coordinator.api.deps import Deps
from coordinator.app import create_app
from coordinator.audit import AuditLog
from coordinator.cluster import Cluster, LeaseStore
from coordinator.config import CoordinatorConfig
from coordinator.engine.driver import JobLocks, NodeMonitor, RolloutDriver
from coordinator.engine.observation import ObservationWindow
from coordinator.heartbeats import HeartbeatPacer, Heartbeats
from coordinator.httpguard import GuardedAppRunner
from coordinator.metrics import CoordinatorMetrics
from coordinator.store import Store
from coordinator.store.pg_errors import redact
from coordinator.store.sqlite import SqliteStore
from coordinator.tokens import LoadedToken, load_or_create
from coordinator.watch import Watches
from shared.clock import ZERO_TIME, Clock, SteadyClock
from shared.errors import FieldError, ValidationFailed
from shared.sdnotify import SystemdNotifier, feed_watchdog
from shared.tls import server_context

log = structlog.get_logger("fleetwave.coordinator")

ACCEPT_BACKLOG = 4096
"""listen() backlog (Linux caps it at net.core.somaxconn, 4096 by default)."""


def open_store(config: CoordinatorConfig) -> Store:
    url = config.database_url
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from coordinator.store.postgres import PostgresStore

        return PostgresStore(url, member_id=config.member_name)
    raise ValidationFailed(
        [FieldError(field="database", message=f"unsupported URL {url!r}: use sqlite:///PATH")]
    )


def _announce_token(token: LoadedToken, what: str) -> None:
    if token.generated and token.path is not None:
        # Printed once, at generation; afterwards it is only in the 0600 file.
        print(f"Generated {what}: {token.value}\n  (saved to {token.path})", file=sys.stderr)


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one: every agent holds a long-poll socket.

    The usual soft limit (1024) would cap a coordinator near 1,000 agents; the hard
    limit is the operator's (``LimitNOFILE=`` in the unit), see docs/benchmarks.md.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


SWITCH_INTERVAL = 0.0005
"""Seconds the event loop may hold the GIL before a waiting thread gets it (default 5 ms)."""


GC_THRESHOLDS = (50_000, 20, 50)
"""Allocations between young collections, and how many of each before an older one.

Measured (docs/benchmarks.md, "Coordinator memory per node"; ``python -m bench.memory``)
with ~7,450 agents holding their long-polls, 45 s per setting on one fleet: (50,000, 20, 50)
ran no collection at all (the held fleet leaves ~1,000 tracked objects a second behind);
(5,000, 20, 50) ran 6 young ones (p50 47 ms, max 136 ms); CPython's (700, 10, 10) ran 63
young (max 32 ms) and 6 middle ones (p50 101 ms, max 1.6 s): 2.5 s of pauses in 45 s."""


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a large, long-lived heap.

    At 10,000 nodes the coordinator holds about half a million tracked objects (the store's
    mirror, and per agent its connection, request and tasks): one full collection of them
    took 1.8 s at ~7,450 nodes. With CPython's default thresholds the collector walks the
    older ones many times a minute. What exists after start-up is frozen (never scanned
    again) and young collections run after 50,000 allocations instead of 700 (the figures
    are at ``GC_THRESHOLDS``). Reference counting still frees almost everything; only
    cycles wait a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def shorten_switch_interval() -> None:
    """Each SQLite statement is a hop to aiosqlite's thread and back; under load the event
    loop holds the GIL for a whole switch interval before that thread may hand its result
    back, so a hop would cost up to 5 ms. A short interval keeps hops near their real cost.
    A process-wide setting, hence here in the daemon's composition root."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))


def tls_context(config: CoordinatorConfig) -> ssl.SSLContext | None:
    """The HTTPS context, or None for plain HTTP; a bad file is a config error naming it."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    try:
        return server_context(config.tls_cert, config.tls_key, config.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValidationFailed(
            [FieldError(field="tls_cert", message=f"cannot load the TLS files: {exc}")]
        ) from None


def reload_certificate(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    """SIGHUP: load the certificate and key again into the same context. New handshakes use
    them; open connections (agents' long-polls) keep theirs. A bad file keeps the old pair."""
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        log.error("tls_reload_failed", cert=str(cert), error=str(exc))
        return
    log.info("tls_reloaded", cert=str(cert))


def nothing_to_reload() -> None:
    """SIGHUP without TLS: there is nothing to load again, so it is logged and ignored."""
    log.info("reload_ignored", reason="no TLS certificate configured")


async def newest_stored_time(store: Store) -> datetime:
    """The latest time the store holds: job updates and node heartbeats."""
    times = [job.status.updated_at for job in await store.list_jobs()]
    times += [node.last_heartbeat for node in await store.list_nodes()]
    return max(times, default=ZERO_TIME)


async def serve(
    config: CoordinatorConfig, *, clock: Clock | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run the coordinator until ``stop`` is set (or SIGTERM/SIGINT), then shut down cleanly."""
    stop = stop or asyncio.Event()
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    raise_fd_limit()
    shorten_switch_interval()
    ssl_context = tls_context(config)  # first: unreadable TLS files must not touch the store
    # The database before the tokens: a coordinator that refuses its database must not
    # have generated and printed secrets for a start that never happened.
    store = open_store(config)
    await store.open()
    try:
        admin = load_or_create(config.admin_token, config.data_dir / "admin.token", "fwa")
        join = load_or_create(config.join_token, config.data_dir / "join.token", "fwj")
    except BaseException:
        await store.close()
        raise
    _announce_token(admin, "admin token")
    _announce_token(join, "join token")
    if clock is None:
        # Deadlines and stored times follow a clock that a wall-clock step cannot move,
        # and that never starts before what is already stored (a clock set back across
        # a restart would otherwise date new records before old ones).
        clock = SteadyClock(floor=await newest_stored_time(store))
    tune_gc()  # after the store loaded its mirror: that part of the heap is frozen
    watches = Watches()
    locks = JobLocks()
    metrics = CoordinatorMetrics()
    # The interval handed to agents follows the fleet's size within heartbeat_budget; the
    # window learns the TTL that follows it. Sized once before serving: after a restart the
    # first answers already carry the interval for the stored fleet.
    heartbeats = Heartbeats(config.heartbeat_policy, rand=random.random)
    window = ObservationWindow(clock, heartbeats.longest_ttl(), on_gap=metrics.blind_spots.inc)
    pacer = HeartbeatPacer(store, clock, heartbeats, window, metrics)
    await pacer.tick()
    driver = RolloutDriver(store, clock, watches, locks, window, metrics)
    # After a restart the whole fleet calls at once: the excess is told when to return, and
    # no node is judged silent while agents are being refused.
    admission = AgentAdmission(random.random, clock=clock)
    monitor = NodeMonitor(
        store, clock, driver, window, heartbeats, refused_at=lambda: admission.last_shed_at
    )
    cluster = Cluster(
        store if isinstance(store, LeaseStore) else None,
        member_id=config.member_name,
        address=config.advertise_url,
        clock=clock,
        driver=driver,
        monitor=monitor,
        window=window,
        watches=watches,
        metrics=metrics,
        lease_seconds=config.lease_ttl.total_seconds(),
    )
    audit = AuditLog(
        store,
        clock,
        retention=config.audit_retention,
        max_rows=config.audit_max_rows,
    )
    deps = Deps(
        audit=audit,
        store=store,
        clock=clock,
        driver=driver,
        watches=watches,
        locks=locks,
        admin_token=admin.value,
        join_token=join.value,
        heartbeats=heartbeats,
        node_token_ttl=config.node_token_ttl.total_seconds() or None,
        max_body_bytes=config.max_body_bytes,
        metrics=metrics,
        require_client_cert=config.tls_client_ca is not None,
        cluster=cluster,
        admission=admission,
    )
    # Slow or idle clients are dropped (request heads within 10 s, idle keep-alive 75 s).
    runner = GuardedAppRunner(create_app(deps), access_log=None)
    await runner.setup()
    # A deep accept queue: after a coordinator restart thousands of agents reconnect at once,
    # and with aiohttp's default of 128 the kernel drops their SYNs (a retry costs 1, 3, 7 s).
    site = web.TCPSite(
        runner,
        config.host,
        config.port,
        shutdown_timeout=2.0,
        ssl_context=ssl_context,
        backlog=ACCEPT_BACKLOG,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP is `systemctl reload`; always handled: its default action would end the process,
    # and systemd counts death by SIGHUP as a clean exit, so Restart=on-failure would not act.
    if ssl_context is not None and config.tls_cert is not None and config.tls_key is not None:
        loop.add_signal_handler(
            signal.SIGHUP, reload_certificate, ssl_context, config.tls_cert, config.tls_key
        )
    else:
        loop.add_signal_handler(signal.SIGHUP, nothing_to_reload)
    tasks = []
    notifier = SystemdNotifier()  # Type=notify under systemd; a no-op elsewhere
    try:
        await site.start()
        tasks = [
            asyncio.create_task(window.run(), name="observation-window"),
            asyncio.create_task(pacer.run(), name="heartbeat-pacer"),
            # The engine (driver and node monitor) runs while this coordinator leads.
            asyncio.create_task(cluster.run(), name="cluster"),
            asyncio.create_task(audit.run(), name="audit-pruner"),
            asyncio.create_task(feed_watchdog(notifier, clock), name="sd-watchdog"),
        ]
        deps.started = True
        log.info(
            "coordinator_started",
            listen=config.listen,
            tls=config.tls,
            mtls=deps.require_client_cert,
            database=redact(config.database_url),
            member=config.member_name,
            advertise=config.advertise_url,
            pid=os.getpid(),
        )
        notifier.ready(f"listening on {config.listen}")
        await stop.wait()
        notifier.stopping("stopping")
        log.info("coordinator_stopping")
    finally:
        deps.started = False
        deps.closing = True  # event streams end at their next wake-up
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        watches.bump_all()
        await runner.cleanup()
        await audit.drain()
        await store.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("coordinator_stopped")
