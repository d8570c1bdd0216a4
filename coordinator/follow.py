"""Following a job's rollout from the CLI: snapshots driven by the event stream.

A background thread reads ``GET /v1/events?job=NAME``; every ``status`` message (and every
reconnect) makes the follower refetch ``/status`` and ``/rollout``. While the stream is down
the follower polls every second and the thread reconnects with backoff, resuming from the
last event id, at the next coordinator when ``FLEETWAVE_ADDR`` lists several (event ids are
the shared database's, the same on each). The CLI's live view and the demo render the
snapshots; they decide when to stop.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from coordinator.client import ApiClient, ApiError, EventStream, SseMessage

EXIT_OK, EXIT_ROLLOUT_FAILED = 0, 1
SUCCESS_STATES = frozenset({"running", "completed"})
FAILURE_STATES = frozenset({"failed", "rollout_failed", "degraded", "stopped", "deleted"})
IN_PROGRESS_STATES = frozenset({"pending", "queued", "deploying", "rollout_paused"})
RECENT_EVENTS = 6


def state_of(status: dict[str, Any]) -> str:
    return str(status["state"]["state_type"])


def is_in_progress(status: dict[str, Any]) -> bool:
    return state_of(status) in IN_PROGRESS_STATES


def outcome(status: dict[str, Any]) -> int | None:
    """The ``job run`` exit code once the job has settled, None while a rollout goes on."""
    if state_of(status) in SUCCESS_STATES:
        return EXIT_OK
    if state_of(status) in FAILURE_STATES:
        return EXIT_ROLLOUT_FAILED
    return None


def is_planned(status: dict[str, Any]) -> bool:
    """False while a submitted version waits for the engine: the status still holds the
    previous rollout's counters then, which belong to no rollout of the new version."""
    return state_of(status) != "pending"


def progress_line(status: dict[str, Any]) -> str:
    """One line for a status: state, message and (once planned) the rollout's counters."""
    state, ro = status["state"], status["rollout"]
    text = f"[{state['state_type'] or '-'}] {state['message']}"
    if ro["type"] and is_planned(status):
        text += (
            f"  ({ro['type']}: {ro['updated_nodes']}/{ro['total_nodes']} updated,"
            f" {ro['failed_nodes']} failed, wave {ro['current_wave']}/{ro['total_waves']})"
        )
    return text


@dataclass(frozen=True)
class Snapshot:
    """What a live view shows: the job's status, its rollout view and what came with them."""

    name: str
    status: dict[str, Any]
    rollout: dict[str, Any] | None
    labels: dict[str, dict[str, str]]
    names: dict[str, str]
    spread_by: str
    events: tuple[dict[str, Any], ...] = ()
    streaming: bool = False
    error: str = ""
    started: float = field(default_factory=time.monotonic)

    def node_name(self, node_id: str) -> str:
        return self.names.get(node_id, node_id[:8])

    def readable(self, text: str) -> str:
        """``text`` with node IDs replaced by node names (the engine's messages use IDs)."""
        for node_id, name in self.names.items():
            text = text.replace(node_id, name)
        return text


def _event(message: SseMessage) -> dict[str, Any]:
    try:
        body = message.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"id": message.id, "kind": message.event}


_RECONNECT = SseMessage("_reconnect", "")
_DISCONNECT = SseMessage("_disconnect", "")


class RolloutFollower:
    """Use as a context manager; iterate ``snapshots()`` and stop iterating when done."""

    def __init__(
        self,
        client: ApiClient,
        name: str,
        *,
        poll_interval: float = 1.0,
        refresh_interval: float = 5.0,
        use_stream: bool = True,
    ) -> None:
        self.client = client
        self.name = name
        self.poll_interval = poll_interval
        self.refresh_interval = refresh_interval
        self.use_stream = use_stream
        self._queue: queue.Queue[SseMessage] = queue.Queue()
        self._stopping = threading.Event()
        self._stream: EventStream | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.streaming = False
        self._spec_version = -1
        self._spread_by = ""
        self._labels: dict[str, dict[str, str]] = {}
        self._names: dict[str, str] = {}

    def __enter__(self) -> RolloutFollower:
        if self.use_stream:
            self._thread = threading.Thread(
                target=self._read_stream, name=f"events-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the stream thread: never raises, only queues --------------------------------

    def _read_stream(self) -> None:
        last_id: int | None = None
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                stream = self.client.open_events(job=self.name, last_event_id=last_id)
            except ApiError:
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            with self._lock:
                self._stream = stream
            if self._stopping.is_set():
                stream.close()
                return
            self.streaming, backoff = True, 0.5
            self._queue.put(_RECONNECT)  # events may have been missed: refetch
            # Any failure of the stream (also http.client's own errors when close() from
            # another thread races a read) only means "disconnected": polling takes over.
            with contextlib.suppress(Exception):
                for message in stream:
                    if message.id is not None:
                        last_id = message.id
                    self._queue.put(message)
            stream.close()
            self.streaming = False
            self._queue.put(_DISCONNECT)
            # The stream broke: resume (from ``last_id``) at the next coordinator, if there
            # is another (HA): this one may be gone.
            self.client.avoid(stream.addr)
            self._stopping.wait(backoff)

    # -- the caller's side -------------------------------------------------------------

    def fetch(self, previous: Snapshot | None = None) -> Snapshot:
        """A fresh snapshot (raises ApiError when the first fetch fails)."""
        path = f"/v1/jobs/{self.name}"
        status: dict[str, Any] = self.client.request("GET", f"{path}/status").body
        if status["version"] != self._spec_version:
            job = self.client.request("GET", path).body
            self._spread_by = job["spec"]["rollout"].get("spread_by") or ""
            self._spec_version = status["version"]
        rollout: dict[str, Any] = self.client.request("GET", f"{path}/rollout").body
        ids = {n["id"] for group in [rollout["canary"], *rollout["waves"]] for n in group["nodes"]}
        if not ids <= self._labels.keys():
            nodes = self.client.request("GET", "/v1/nodes").body["nodes"]
            self._labels = {n["id"]: n["labels"] for n in nodes}
            self._names = {n["id"]: n["name"] for n in nodes}
        return Snapshot(
            name=self.name,
            status=status,
            rollout=rollout,
            labels=self._labels,
            names=self._names,
            spread_by=self._spread_by,
            events=previous.events if previous is not None else (),
            streaming=self.streaming,
            started=previous.started if previous is not None else time.monotonic(),
        )

    def snapshots(self) -> Iterator[Snapshot]:
        """The first snapshot at once, then one per change, at least every refresh interval."""
        snap = self.fetch()
        yield snap
        while True:
            wait = self.refresh_interval if self.streaming else self.poll_interval
            messages = self._take(wait)
            events = [_event(m) for m in messages if m.id is not None]
            refetch = not messages or any(m.id is None for m in messages)
            if events:
                snap = replace(snap, events=(*snap.events, *events)[-RECENT_EVENTS:])
            if refetch:
                try:
                    snap = replace(self.fetch(snap), error="")
                except ApiError as exc:
                    snap = replace(snap, error=exc.message, streaming=self.streaming)
            yield snap

    def _take(self, wait: float) -> list[SseMessage]:
        """Everything queued, waiting up to ``wait`` seconds for the first message."""
        try:
            messages = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while True:
            try:
                messages.append(self._queue.get_nowait())
            except queue.Empty:
                return messages
