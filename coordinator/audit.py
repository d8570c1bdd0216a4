"""The audit log: every operator request that changes something, and every refused request,
durably recorded before the answer (DESIGN §11).

A changing request is recorded *before* its handler runs: if that record cannot be written,
the request fails (503) and changes nothing. Its status is filled in after the handler; if
that second write fails, the entry keeps status 0 ("answer not recorded") and the failure
is logged, but the request's answer stands: what it changed is committed, and the entry
says it was attempted. A refused request (401/403) is one entry, written before the refusal
is sent.

Entries that arrive together are written in one transaction (one fsync), so a flood of
refused requests costs one write per batch, not one per request. The log is pruned by age
and by size (``audit_retention``, ``audit_max_rows``) so it cannot grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

import structlog

from coordinator.domain.records import AuditEntry, AuditOutcome
from coordinator.store import Store
from shared.clock import Clock
from shared.errors import StoreUnavailable

log = structlog.get_logger("fleetwave.audit")

BATCH = 500
PRUNE_SECONDS = 600.0

REFUSAL_BUDGET = 60
"""Refused requests recorded one by one per remote address and minute; beyond it they are
counted and recorded as one entry per address when the minute ends, so a flood costs one
row a minute instead of one per request."""

WINDOW_SECONDS = 60.0

ANONYMOUS_SHARE = 10
"""Refusals of requests without a valid token may fill at most 1/ANONYMOUS_SHARE of
``max_rows``: they never push out the record of what token holders did."""


class AuditLog:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        retention: timedelta = timedelta(days=90),
        max_rows: int = 1_000_000,
        on_write_failed: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.retention = retention
        self.max_rows = max_rows
        self._on_write_failed = on_write_failed
        self._entries: list[tuple[AuditEntry, asyncio.Future[int]]] = []
        self._outcomes: list[AuditOutcome] = []
        self._writer: asyncio.Task[None] | None = None
        self._window = 0
        """The current minute (monotonic seconds // WINDOW_SECONDS)."""
        self._refusals: dict[str, int] = {}
        """Per remote address: refusals recorded one by one in the current minute."""
        self._over: dict[str, tuple[AuditEntry, int]] = {}
        """Per remote address: the latest refusal beyond the budget this minute, and how many
        there were."""
        self._written = 0
        self._pruning: asyncio.Task[int] | None = None

    async def refused(self, entry: AuditEntry) -> None:
        """Record a refused request: one by one within the per-address budget, else folded
        into the address's aggregate for this minute (written when the minute ends)."""
        self._roll_window()
        seen = self._refusals.get(entry.remote, 0)
        if seen < REFUSAL_BUDGET:
            self._refusals[entry.remote] = seen + 1
            await self.record(entry)
            return
        _, count = self._over.get(entry.remote, (entry, 0))
        self._over[entry.remote] = (entry, count + 1)

    def _roll_window(self) -> None:
        window = int(self._clock.monotonic() // WINDOW_SECONDS)
        if window != self._window:
            self._window = window
            self._refusals.clear()
            self.flush_aggregates()

    def flush_aggregates(self) -> None:
        """Queue one entry per address for its refusals beyond the budget: method ``*``, the
        count in the path, the last one's token, role and status."""
        over, self._over = self._over, {}
        for last, count in over.values():
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_ignore_outcome)
            aggregate = last.model_copy(
                update={
                    "method": "*",
                    "path": f"({count} more refused requests from this address this minute;"
                    f" the last: {last.method} {last.path[:200]})",
                    "job": "",
                    "node": "",
                }
            )
            self._entries.append((aggregate, future))
        if over:
            self._start()

    async def record(self, entry: AuditEntry) -> int:
        """Write ``entry`` durably; its id. Raises when it cannot be written."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._entries.append((entry, future))
        self._start()
        return await future

    def finish(self, outcome: AuditOutcome) -> None:
        """Complete an entry with its answer (written with the next batch, or alone)."""
        self._outcomes.append(outcome)
        self._start()

    def _start(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        while self._entries or self._outcomes:
            batch, self._entries = self._entries[:BATCH], self._entries[BATCH:]
            outcomes, self._outcomes = self._outcomes, []
            try:
                ids = await self._store.write_audit([e for e, _ in batch], outcomes)
            except Exception as exc:  # every waiter hears of it; the writer goes on
                if self._on_write_failed is not None:
                    self._on_write_failed()
                log.error("audit_write_failed", error=str(exc), entries=len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(
                            exc
                            if isinstance(exc, StoreUnavailable)
                            else StoreUnavailable(f"cannot write the audit log: {exc}")
                        )
                continue
            for (_, future), entry_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(entry_id)
            self._written += len(batch)
            if self._written >= max(1000, self.max_rows // 20):
                # Far more than usual since the last prune: prune now, not in ten minutes.
                self._written = 0
                if self._pruning is None or self._pruning.done():
                    self._pruning = asyncio.ensure_future(self._prune_quietly())

    async def drain(self) -> None:
        """Wait until everything queued is written (shutdown, tests)."""
        while self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    async def _prune_quietly(self) -> int:
        try:
            return await self.prune()
        except Exception as exc:
            log.warning("audit_prune_failed", error=str(exc))
            return 0

    async def prune(self) -> int:
        before = self._clock.now() - self.retention
        removed = await self._store.prune_audit(
            before=before,
            keep_rows=self.max_rows,
            keep_anonymous=max(1, self.max_rows // ANONYMOUS_SHARE),
        )
        if removed:
            log.info("audit_pruned", removed=removed, older_than=str(before))
        return removed

    async def run(self) -> None:
        """Prune now and every ten minutes; write the minute's refusal aggregates."""
        last_prune: float | None = None
        while True:
            now = self._clock.monotonic()
            if last_prune is None or now - last_prune >= PRUNE_SECONDS:
                last_prune = now
                await self._prune_quietly()
            self._roll_window()
            await self._clock.sleep(WINDOW_SECONDS / 4)


def _ignore_outcome(future: asyncio.Future[int]) -> None:
    """Aggregates are written in the background: a failure was logged by the writer."""
    if not future.cancelled():
        future.exception()
