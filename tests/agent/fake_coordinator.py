"""A small in-memory coordinator implementing the three agent endpoints, for agent tests.

One state can be served as several replicas (``app(replica=...)``), like HA coordinators that
share one database: a replica can answer 503 on its own (``unavailable``) or be stopped.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from shared.durations import parse_duration
from shared.protocol import (
    Assignment,
    AssignmentsResponse,
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
    ReportResponse,
)


@dataclass
class FakeNode:
    node_id: str
    name: str
    token: str
    last_seq: int = 0


REPLICA = web.AppKey("replica", str)


def _error(status: int, code: str, message: str) -> web.Response:
    headers = {"Retry-After": "2"} if status == 503 else None
    return web.json_response(
        {"error": {"code": code, "message": message, "details": {}}}, status=status, headers=headers
    )


@dataclass
class FakeCoordinator:
    """Coordinator state a test reads and changes directly; ``app()`` serves it over HTTP."""

    join_token: str = "join-secret"
    heartbeat_interval: float = 0.2
    index: int = 1
    nodes: dict[str, FakeNode] = field(default_factory=dict)
    """Live nodes by token."""
    desired: dict[str, list[Assignment]] = field(default_factory=dict)
    """Assignments by node name."""
    registrations: list[RegisterRequest] = field(default_factory=list)
    reports: list[tuple[str, ReportRequest]] = field(default_factory=list)
    polls: int = 0
    requests: int = 0
    fail_with: int | None = None
    """When set, every agent endpoint answers with this status."""
    unavailable: set[str] = field(default_factory=set)
    """Replicas that answer 503 ``store_unavailable`` (their database is down)."""
    frozen: set[str] = field(default_factory=set)
    """Replicas that take requests and never answer (a paused process: SIGSTOP)."""
    served: collections.Counter[str] = field(default_factory=collections.Counter)
    """Requests each replica received (503s included)."""
    poll_log: list[tuple[str, int]] = field(default_factory=list)
    """(replica, index asked for) of every assignments poll a replica served."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def assign(self, node_name: str, assignments: list[Assignment], *, wake: bool = True) -> None:
        """Replace a node's desired state; ``wake=False`` leaves blocked polls asleep, as a
        replica that missed the change would."""
        self.desired[node_name] = assignments
        self.index += 1
        if wake:
            self._changed.set()
            self._changed = asyncio.Event()

    def forget_nodes(self) -> None:
        """Lose every node token, as if the coordinator's data were wiped."""
        self.nodes.clear()

    def node(self, name: str) -> FakeNode | None:
        return next((n for n in self.nodes.values() if n.name == name), None)

    def last_report(self, node_id: str) -> ReportRequest | None:
        for reporter, report in reversed(self.reports):
            if reporter == node_id:
                return report
        return None

    def app(self, replica: str = "") -> web.Application:
        """This state over HTTP, as the replica named ``replica``."""

        @web.middleware
        async def as_replica(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.served[replica] += 1
            if replica in self.unavailable:
                return _error(503, "store_unavailable", "could not read: database is down")
            if replica in self.frozen:
                await asyncio.Event().wait()  # until the client gives up
            return await handler(request)

        app = web.Application(middlewares=[as_replica])
        app[REPLICA] = replica
        app.router.add_post("/v1/agent/register", self.handle_register)
        app.router.add_get("/v1/agent/assignments", self.handle_assignments)
        app.router.add_post("/v1/agent/report", self.handle_report)
        return app

    def _authenticate(self, request: web.Request) -> FakeNode | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return self.nodes.get(token)

    async def handle_register(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail_with:
            return _error(self.fail_with, "injected", "injected failure")
        body = RegisterRequest.model_validate(await request.json())
        if body.join_token != self.join_token:
            return _error(401, "unauthorized", "bad join token")
        if self.node(body.name) is not None:
            return _error(409, "conflict", f"node name {body.name!r} is taken")
        number = next(self._ids)
        node = FakeNode(node_id=f"node-{number}", name=body.name, token=f"token-{number}")
        self.nodes[node.token] = node
        self.registrations.append(body)
        response = RegisterResponse(
            node_id=node.node_id,
            node_token=node.token,
            heartbeat_interval=self.heartbeat_interval,
        )
        return web.json_response(response.model_dump(), status=201)

    async def handle_assignments(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail_with:
            return _error(self.fail_with, "injected", "injected failure")
        node = self._authenticate(request)
        if node is None:
            return _error(401, "unauthorized", "unknown node token")
        self.polls += 1
        since = int(request.query.get("index", "0"))
        self.poll_log.append((request.app[REPLICA], since))
        wait = parse_duration(request.query.get("wait", "30s")).total_seconds()
        if self.index <= since:
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait()
            except TimeoutError:
                pass
        if self._authenticate(request) is None:
            return _error(401, "unauthorized", "unknown node token")
        response = AssignmentsResponse(
            node_id=node.node_id,
            index=self.index,
            heartbeat_interval=self.heartbeat_interval,
            assignments=self.desired.get(node.name, []),
        )
        return web.json_response(
            response.model_dump(mode="json"), headers={"X-Fleetwave-Index": str(self.index)}
        )

    async def handle_report(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail_with:
            return _error(self.fail_with, "injected", "injected failure")
        node = self._authenticate(request)
        if node is None:
            return _error(401, "unauthorized", "unknown node token")
        body = ReportRequest.model_validate(await request.json())
        accepted = body.seq > node.last_seq
        if accepted:
            node.last_seq = body.seq
            self.reports.append((node.node_id, body))
        response = ReportResponse(accepted=accepted, last_seq=node.last_seq, index=self.index)
        return web.json_response(response.model_dump())
