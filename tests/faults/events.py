"""The coordinator's side of the evidence: its event log as it grows, and plain HTTP calls.

``EventRecorder`` reads ``GET /v1/events`` from a background thread and notes when it first
saw each event, so that event times can be put on the real clock even when the
coordinator's wall clock was stepped. ``http_call`` is one request that returns the status
and headers of an error instead of raising (``Retry-After`` on a 503).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from coordinator.client import ApiClient, ApiError
from coordinator.demo.fleet import ADMIN_TOKEN, wait_for
from tests.faults.invariants import Event


def http_call(
    url: str, method: str = "GET", body: Any = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], Any]:
    """One request with the admin token: (status, headers, JSON body); status 0 when nothing
    answered. Unlike ApiClient it returns the headers of an error (``Retry-After``)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return exc.code, dict(exc.headers), parsed
    except (urllib.error.URLError, OSError):
        return 0, {}, None


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class EventRecorder:
    """Reads ``GET /v1/events`` as it grows, noting the real time each event was first seen.

    An event's own time is the coordinator's wall clock. The suite steps that clock by
    whole hours only, and sees each event within seconds, so the step is undone by
    rounding (own time - seen time) to whole hours.
    """

    def __init__(self, url: str) -> None:
        self._api = ApiClient(url, ADMIN_TOKEN, timeout=2)
        self._seen: dict[int, tuple[dict[str, Any], float]] = {}
        self._last = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="event-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(ApiError):
                self._fetch(self._last)
            self._stop.wait(0.1)

    def _fetch(self, after: int) -> list[dict[str, Any]]:
        fetched = []
        while True:
            query = {"after": str(after), "limit": "1000"}
            body = self._api.request("GET", "/v1/events", query=query).body
            page = body["events"]
            now = time.time()
            with self._lock:
                for raw in page:
                    known = self._seen.get(raw["id"])
                    if known is None or known[0] != raw:
                        self._seen[raw["id"]] = (raw, now)
                    self._last = max(self._last, raw["id"])
            fetched += page
            if len(page) < 1000:
                return fetched
            after = page[-1]["id"]

    def events(self) -> list[Event]:
        """The whole log as stored now (read again from the start), times made real."""
        stored = {raw["id"] for raw in wait_for("the event log", lambda: (self._fetch(0),))[0]}
        with self._lock:
            items = sorted((i, v) for i, v in self._seen.items() if i in stored)
        return [self._event(raw, seen) for _, (raw, seen) in items]

    @staticmethod
    def _event(raw: dict[str, Any], seen: float) -> Event:
        own = parse_time(raw["time"])
        step = round((own - seen) / 3600) * 3600
        return Event(
            id=raw["id"],
            time=own - step,
            kind=raw["kind"],
            job=raw.get("job", ""),
            node=raw.get("node", ""),
            old=str(raw.get("old", "")),
            new=str(raw.get("new", "")),
            reason=raw.get("reason", ""),
        )
