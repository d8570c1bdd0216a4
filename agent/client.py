"""HTTP client for the coordinator's agent endpoints, rotating across every configured URL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

import structlog
from pydantic import BaseModel, ValidationError

from agent.errors import (
    BadResponse,
    CoordinatorError,
    CoordinatorUnavailable,
    JoinTokenRejected,
    NameConflict,
    RequestRejected,
    TokenRejected,
)
from agent.transport import ConnectTimeout, StreamTransport, TransportError
from shared.durations import format_duration
from shared.protocol import (
    AssignmentsResponse,
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
    ReportResponse,
    TokenRotation,
)

log = structlog.get_logger("agent.client")

CLIENT_CERTIFICATE_REQUIRED = "client_certificate_required"
NODE_REVOKED = "node_revoked"
"""The coordinator's error code for an agent request without a client certificate (mTLS)."""

M = TypeVar("M", bound=BaseModel)


def agent_version() -> str:
    """The installed package version, sent at registration."""
    # importlib.metadata brings email, zipfile and csv with it (0.7 MB an idle agent keeps
    # for good); it is needed once, at registration.
    from importlib import metadata

    try:
        return metadata.version("fleetwave")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def coordinator_session(ssl_context: ssl.SSLContext | None) -> StreamTransport:
    """The one transport every coordinator call goes through: it verifies the coordinator
    with ``ssl_context`` and presents its client certificate. Artifact downloads and probes
    use aiohttp, so the private CA never decides who they trust."""
    return StreamTransport(ssl_context)


class CoordinatorClient:
    """Register, long-poll assignments and report; raises only CoordinatorError subclasses.

    A connection error, timeout or 5xx (a 503: that coordinator's database is down) moves on
    to the next coordinator URL at once, in the same call; the URL that answered last is
    tried first next time, so the agent sticks to a working coordinator. Only when every URL
    failed does the call raise CoordinatorUnavailable, and the caller backs off.

    Sending a request again to another coordinator is safe for every agent call, even when
    the first may have been applied: coordinators share one database (HA, DESIGN §8), a
    report carries a sequence number (a replay is ignored), the assignments poll changes
    nothing and means the same index everywhere, a repeated registration is recognised by
    the node key, and a rotated token is used only once the agent has saved it.
    """

    def __init__(
        self,
        urls: Sequence[str],
        session: StreamTransport,
        *,
        request_timeout: float = 10.0,
        poll_margin: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one coordinator URL is required")
        self._urls = [url.rstrip("/") for url in urls]
        self._session = session
        self._request_timeout = request_timeout
        self._poll_margin = poll_margin
        # Short: a coordinator host that is gone (no RST) must not hold a long-poll's whole
        # deadline before the next URL is tried.
        self._connect_timeout = connect_timeout
        self._current = 0
        self._moved = asyncio.Event()  # set (and replaced) whenever ``_current`` changes

    @property
    def current_url(self) -> str:
        return self._urls[self._current]

    async def register(self, request: RegisterRequest) -> RegisterResponse:
        data = await self._call(
            "POST",
            "/v1/agent/register",
            body=request.model_dump(mode="json"),
            token=None,
            deadline=self._request_timeout,
        )
        return _parse(RegisterResponse, data)

    async def rotate_token(self, token: str) -> TokenRotation:
        data = await self._call(
            "POST", "/v1/agent/token", token=token, deadline=self._request_timeout, body={}
        )
        return _parse(TokenRotation, data)

    async def assignments(self, token: str, index: int, wait: float) -> AssignmentsResponse:
        """The blocking query: returns when the index passes ``index`` or after ``wait``.

        A poll held by a coordinator that another call has just failed over from (it was
        paused, or cut off: the connection stays open and says nothing) is dropped and asked
        again of the coordinator that answered: the index means the same on every one."""
        while True:
            moved = self._moved
            poll = asyncio.ensure_future(
                self._call(
                    "GET",
                    "/v1/agent/assignments",
                    params={"index": str(index), "wait": format_duration(timedelta(seconds=wait))},
                    token=token,
                    deadline=wait + self._poll_margin,
                )
            )
            switch = asyncio.ensure_future(moved.wait())
            try:
                await asyncio.wait({poll, switch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                switch.cancel()
                if not poll.done():
                    poll.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await poll
            if not poll.cancelled():
                return _parse(AssignmentsResponse, poll.result())
            log.info("assignments_poll_moved", now=self.current_url)

    async def report(
        self, token: str, request: ReportRequest, *, deadline: float | None = None
    ) -> ReportResponse:
        """``deadline``: how long to wait for one coordinator's answer when there are others
        to try (default the request timeout); the caller sizes it to its heartbeat, so that
        a coordinator that holds the request without answering (paused) does not cost the
        node its liveness. With one coordinator there is nobody else to ask: it gets the
        whole request timeout."""
        wait = self._request_timeout
        if deadline is not None and len(self._urls) > 1:
            wait = min(deadline, wait)
        data = await self._call(
            "POST",
            "/v1/agent/report",
            body=request.model_dump(mode="json", exclude_none=True),
            token=token,
            deadline=wait,
        )
        return _parse(ReportResponse, data)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        deadline: float,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = json.dumps(body).encode() if body is not None else None
        query = f"?{urlencode(params)}" if params else ""
        connect = min(self._connect_timeout, deadline)
        problems: list[str] = []
        retry_after: float | None = None  # the shortest wait a shedding coordinator asked for
        for attempt in range(len(self._urls)):
            index = (self._current + attempt) % len(self._urls)
            url = self._urls[index] + path
            try:
                reply = await self._session.request(
                    method,
                    url + query,
                    body=data,
                    headers=headers,
                    deadline=deadline,
                    connect_timeout=connect,
                )
            except ConnectTimeout:
                problems.append(f"{url}: no connection within {connect:g}s")
                continue
            except TimeoutError:
                problems.append(f"{url}: timed out after {deadline:g}s")
                continue
            except TransportError as exc:
                problems.append(f"{url}: {exc}")
                continue
            status, text = reply.status, reply.text()
            asked = _retry_after(reply.headers.get("retry-after"))
            if status >= 500:
                problems.append(f"{url}: HTTP {status} {_error_message(text)}".rstrip())
                if status == 503 and asked is not None:
                    retry_after = asked if retry_after is None else min(retry_after, asked)
                continue
            if index != self._current:
                log.warning(
                    "coordinator_failover",
                    previous=self._urls[self._current],
                    now=self._urls[index],
                    problems=problems,
                )
                self._current = index
                moved, self._moved = self._moved, asyncio.Event()
                moved.set()
            return _decode(status, text, registering=token is None)
        log.debug("coordinators_unavailable", problems=problems)
        raise CoordinatorUnavailable(
            "no coordinator answered: " + "; ".join(problems), retry_after=retry_after
        )


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the coordinator sends no HTTP dates); None if absent."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _decode(status: int, text: str, *, registering: bool) -> Any:
    if 200 <= status < 300:
        try:
            return json.loads(text)
        except ValueError:
            raise BadResponse(f"HTTP {status} with a body that is not JSON") from None
    message = _error_message(text) or f"HTTP {status}"
    if status == 401 and _error_code(text) == CLIENT_CERTIFICATE_REQUIRED:
        # The connection lacks a client certificate: the tokens are fine, so the node keeps
        # its identity and retries with backoff until the certificate is configured.
        raise RequestRejected(message, status=status, code=CLIENT_CERTIFICATE_REQUIRED)
    if status == 401 and _error_code(text) == NODE_REVOKED:
        # An operator revoked this node: registering again cannot help (its name stays
        # taken); the agent keeps its workloads and backs off, saying why.
        raise RequestRejected(
            f"this node was revoked by an operator: {message}", status=status, code=NODE_REVOKED
        )
    if status == 401:
        if registering:
            raise JoinTokenRejected(f"the coordinator rejected the join token: {message}")
        raise TokenRejected(f"the coordinator does not know this node's token: {message}")
    if status == 409 and registering:
        raise NameConflict(message)
    raise RequestRejected(message, status=status, code=_error_code(text))


def _error_body(text: str) -> Mapping[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _error_message(text: str) -> str:
    return str(_error_body(text).get("message", ""))


def _error_code(text: str) -> str:
    return str(_error_body(text).get("code", ""))


def _parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Field names and problems only: the input values may hold a node token.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise BadResponse(f"unexpected {model.__name__} from the coordinator: {problems}") from None


__all__ = ["CoordinatorClient", "CoordinatorError", "agent_version", "coordinator_session"]
