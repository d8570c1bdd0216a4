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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"unknown host: {reason.strerror}"
    return str(reason)


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
    def __init__(
        self,
        addr: str,
        token: str | None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        *,
        for_terminal: bool = False,
    ) -> None:
        self.addr = addr.rstrip("/")
        self.token = token
        self.timeout = timeout
        # For https:// addresses: verifies the coordinator (``--ca-file``); None: system CAs.
        self.ssl_context = ssl_context
        self.for_terminal = for_terminal
        """Clean every string of every answer (``terminal_safe``): for the CLI."""

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
        url = self.addr + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        try:
            req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - operator URL
        except ValueError as exc:  # an unknown URL scheme, a malformed address
            message = f"bad coordinator address {self.addr!r}: {exc}"
            raise ApiError(0, "bad_address", message, {}) from None
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(  # noqa: S310 - the operator's URL
                req, timeout=timeout or self.timeout, context=self.ssl_context
            ) as resp:
                raw = resp.read()
                body = json.loads(raw) if raw else None
                if self.for_terminal:
                    body = terminal_safe(body)
                return Response(resp.status, body, dict(resp.headers))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                err = {"code": "http_error", "message": raw.decode(errors="replace")[:500]}
            if self.for_terminal:
                err = terminal_safe(err)
            raise ApiError(
                exc.code, err.get("code", ""), err.get("message", ""), err.get("details") or {}
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise unreachable(self.addr, _reason(exc)) from None

    def open_events(
        self, job: str | None = None, last_event_id: int | None = None, timeout: float = 40.0
    ) -> EventStream:
        """Open ``GET /v1/events`` as a stream; ``timeout`` bounds the silence between lines
        (the server sends a keepalive every 15 s, so a longer silence means it is gone)."""
        parts = urllib.parse.urlsplit(self.addr)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ApiError(0, "bad_address", f"bad coordinator address {self.addr!r}", {})
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        path = parts.path.rstrip("/") + "/v1/events"
        if job:
            path += "?" + urllib.parse.urlencode({"job": job})
        headers = {"Accept": "text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise unreachable(self.addr, _reason(exc)) from None
        if resp.status != 200:
            raw = resp.read()
            conn.close()
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                err = {"code": "http_error", "message": raw.decode(errors="replace")[:500]}
            raise ApiError(
                resp.status, err.get("code", ""), err.get("message", ""), err.get("details") or {}
            )
        return EventStream(conn, resp)


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

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp

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
