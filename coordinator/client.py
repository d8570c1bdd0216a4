"""A small synchronous HTTP client of the operator API, used by the CLI and the demo.

``ApiClient.request`` does one JSON call; ``ApiClient.open_events`` opens the server-sent
event stream of ``GET /v1/events`` and ``SseParser`` turns its lines into messages. Every
failure is an ``ApiError`` whose message says what to do about it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.addresses import (
    Attempt,
    Failure,
    all_failed_message,
    may_try_next,
    outcome_unknown_message,
    parse_addresses,
)
from shared.nodes import clean_text


class ApiError(Exception):
    """The API answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


def unreachable(addr: str, reason: object) -> ApiError:
    """The error for a coordinator that does not answer: name the address and the fix."""
    return ApiError(
        0,
        "unreachable",
        f"cannot reach the coordinator at {addr} ({reason}): is the coordinator running at"
        f" {addr}? Set FLEETWAVE_ADDR (or --addr) to its address.",
        {},
    )


def _reason(exc: BaseException, *, connecting: bool) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out connecting" if connecting else "timed out waiting for the answer"
    if isinstance(reason, socket.gaierror):
        return f"unknown host: {reason.strerror}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS handshake failed: {reason}"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "the coordinator closed the connection without answering"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    return str(reason) or type(reason).__name__


class _Failed(Exception):
    """One coordinator did not serve the request (``attempt`` says how)."""

    def __init__(self, attempt: Attempt, error: ApiError) -> None:
        super().__init__(attempt.problem)
        self.attempt = attempt
        self.error = error


def _error_of(status: int, raw: bytes) -> ApiError:
    try:
        err = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        err = {"code": "http_error", "message": raw.decode(errors="replace")[:500]}
    if not isinstance(err, dict):
        err = {"code": "http_error", "message": str(err)[:500]}
    return ApiError(
        status, str(err.get("code", "")), str(err.get("message", "")), err.get("details") or {}
    )


def terminal_safe(value: Any) -> Any:
    """``value`` (decoded JSON) with every string made safe to print: control characters
    (escape sequences an agent or a spec could carry) become spaces, other invisible ones go.
    The CLI reads every answer through this, so no renderer can forget it."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [terminal_safe(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(k): terminal_safe(v) for k, v in value.items()}
    return value


class ApiClient:
    """The operator API at one or several coordinators (``addr`` as in ``FLEETWAVE_ADDR``).

    Each call starts at the coordinator that answered last and moves on to the next one when
    ``may_try_next`` allows; nothing is remembered beyond this object. An ``addr`` that is
    not a list of URLs raises ``AddressError``.
    """

    def __init__(
        self,
        addr: str | Sequence[str],
        token: str | None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        *,
        for_terminal: bool = False,
        connect_timeout: float = 5.0,
    ) -> None:
        self.addrs = parse_addresses(addr if isinstance(addr, str) else ",".join(addr))
        self._current = 0
        self.token = token
        self.timeout = timeout
        # Short, so a coordinator that is gone (no RST, e.g. a dead host) costs seconds
        # before the next one is tried; the answer itself may take ``timeout``.
        self.connect_timeout = connect_timeout
        # For https:// addresses: verifies the coordinator (``--ca-file``); None: system CAs.
        self.ssl_context = ssl_context
        self.for_terminal = for_terminal
        """Clean every string of every answer (``terminal_safe``): for the CLI."""

    @property
    def addr(self) -> str:
        """The coordinator the next call goes to first."""
        return self.addrs[self._current]

    def avoid(self, addr: str) -> None:
        """Start the next call at the coordinator after ``addr`` (when ``addr`` is the first):
        its event stream broke, so another one should pick it up."""
        if self.addr == addr and len(self.addrs) > 1:
            self._current = (self._current + 1) % len(self.addrs)

    def _order(self) -> list[int]:
        count = len(self.addrs)
        return [(self._current + step) % count for step in range(count)]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Accept": "application/json"}
        if data is not None:
            sent["Content-Type"] = "application/json"
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        sent |= headers or {}
        failed: list[Attempt] = []
        last: ApiError | None = None
        for index in self._order():
            try:
                status, raw, answer = self._exchange(
                    self.addrs[index], method, path, data, sent, timeout or self.timeout
                )
            except _Failed as exc:
                failed.append(exc.attempt)
                last = exc.error
                if may_try_next(method, exc.attempt):
                    continue
                if exc.attempt.failure is Failure.BROKEN:
                    message = outcome_unknown_message(method, path, exc.attempt, failed[:-1])
                    raise ApiError(0, "outcome_unknown", message, _details(failed)) from None
                raise self._final(exc.error, failed) from None
            self._current = index
            if not 200 <= status < 300:
                raise self._clean(_error_of(status, raw))
            decoded = json.loads(raw) if raw else None
            return Response(
                status, terminal_safe(decoded) if self.for_terminal else decoded, answer
            )
        assert last is not None  # there is at least one address
        raise self._final(last, failed)

    def _exchange(
        self,
        addr: str,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        timeout: float,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request to one coordinator: (status, body, headers) of any answer but a 503;
        raises ``_Failed`` when it did not answer, or answered 503."""
        parts = urllib.parse.urlsplit(addr)
        conn = self._connect(addr, parts, timeout)
        try:
            conn.request(method, parts.path + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = _reason(exc, connecting=False)
            raise _Failed(
                Attempt(addr, Failure.BROKEN, reason), unreachable(addr, reason)
            ) from None
        finally:
            conn.close()
        if resp.status == 503:
            error = self._clean(_error_of(503, raw))
            problem = f"503 {error.code}: {error.message}".strip()
            raise _Failed(Attempt(addr, Failure.UNAVAILABLE, problem, error.code), error)
        return resp.status, raw, dict(resp.headers)

    def _connect(
        self, addr: str, parts: urllib.parse.SplitResult, timeout: float
    ) -> http.client.HTTPConnection:
        """An open connection to ``addr`` (TLS handshake done); the reads then wait up to
        ``timeout``. Raises ``_Failed`` (NOT_CONNECTED) when none could be made."""
        host, port = parts.hostname or "", parts.port
        connect_timeout = min(self.connect_timeout, timeout)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=connect_timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            reason = _reason(exc, connecting=True)
            raise _Failed(
                Attempt(addr, Failure.NOT_CONNECTED, reason), unreachable(addr, reason)
            ) from None
        assert conn.sock is not None
        conn.sock.settimeout(timeout)
        return conn

    def _clean(self, error: ApiError) -> ApiError:
        if self.for_terminal:
            error.message = clean_text(error.message)
            error.code = clean_text(error.code)
            error.details = terminal_safe(error.details)
            error.args = (error.message,)
        return error

    def _final(self, last: ApiError, failed: list[Attempt]) -> ApiError:
        """The error when no coordinator served the request: with one address, what it said;
        with several, every address and what each said."""
        if len(self.addrs) == 1:
            return last
        status = 503 if all(a.failure is Failure.UNAVAILABLE for a in failed) else 0
        code = last.code if status == 503 else "unreachable"
        return ApiError(status, code, all_failed_message(failed), _details(failed))

    def open_events(
        self, job: str | None = None, last_event_id: int | None = None, timeout: float = 40.0
    ) -> EventStream:
        """Open ``GET /v1/events`` as a stream at the first coordinator that serves it;
        ``timeout`` bounds the silence between lines (the server sends a keepalive every
        15 s, so a longer silence means it is gone)."""
        path = "/v1/events"
        if job:
            path += "?" + urllib.parse.urlencode({"job": job})
        headers = {"Accept": "text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        failed: list[Attempt] = []
        last: ApiError | None = None
        for index in self._order():
            addr = self.addrs[index]
            parts = urllib.parse.urlsplit(addr)
            try:
                conn = self._connect(addr, parts, timeout)
            except _Failed as exc:
                failed.append(exc.attempt)
                last = exc.error
                continue
            try:
                conn.request("GET", parts.path + path, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                reason = _reason(exc, connecting=False)
                failed.append(Attempt(addr, Failure.BROKEN, reason))
                last = unreachable(addr, reason)
                continue
            if resp.status == 200:
                self._current = index
                return EventStream(conn, resp, addr)
            raw = resp.read()
            conn.close()
            error = self._clean(_error_of(resp.status, raw))
            if resp.status != 503:
                self._current = index
                raise error
            failed.append(Attempt(addr, Failure.UNAVAILABLE, f"503 {error.code}: {error.message}"))
            last = error
        assert last is not None
        raise self._final(last, failed)


def _details(failed: list[Attempt]) -> dict[str, Any]:
    return {"attempts": [{"addr": a.addr, "error": a.problem} for a in failed]}


@dataclass
class SseMessage:
    event: str
    data: str
    id: int | None = None

    def json(self) -> Any:
        """The data as JSON, every string safe to print (events carry agents' words)."""
        return terminal_safe(json.loads(self.data))


@dataclass
class SseParser:
    """Server-sent events, line by line: a blank line dispatches the message gathered so far."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: int | None = None

    def feed(self, line: str) -> SseMessage | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event, self._id = "", None
                return None
            message = SseMessage(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return message
        if line.startswith(":"):
            return None  # a comment: the server's keepalive
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            self._event = value
        elif key == "data":
            self._data.append(value)
        elif key == "id" and value.isdigit():
            self._id = int(value)
        return None


class EventStream:
    """An open event stream; iterate for messages, ``close()`` from any thread to end it."""

    def __init__(
        self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, addr: str = ""
    ) -> None:
        self._conn = conn
        self._resp = resp
        self.addr = addr
        """The coordinator serving it."""

    def __iter__(self) -> Iterator[SseMessage]:
        parser = SseParser()
        while True:
            line = self._resp.readline()
            if not line:
                return
            message = parser.feed(line.decode("utf-8", errors="replace"))
            if message is not None:
                yield message

    def close(self) -> None:
        """Shut the socket down first: that wakes a thread blocked reading it."""
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()
