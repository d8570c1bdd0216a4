"""Who may call what (DESIGN §11), decided in one place: every route has one rule.

A request is authenticated into a ``Principal`` (an operator token with a role and job
scopes, or one node), then the route's ``Rule`` names the right it needs. Default-deny: the
app refuses to start when a route has no rule (``check_rules``), so a new endpoint cannot
ship open by accident.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from coordinator.domain.records import NodeRecord
from shared.tokens import Role, job_in_scope


class Right(StrEnum):
    OPEN = "open"  # no token: health, metrics, docs, the dashboard's files
    REGISTER = "register"  # the join token travels in the body
    AGENT = "agent"  # a node token
    SELF = "self"  # any operator token: who am I
    READ = "read"  # viewer
    JOBS_WRITE = "jobs:write"  # deployer, for jobs in its scope
    NODES_WRITE = "nodes:write"  # operator
    TOKENS = "tokens:manage"  # admin
    AUDIT = "audit:read"  # admin


ROLE_RIGHTS: dict[Role, frozenset[Right]] = {
    Role.VIEWER: frozenset({Right.SELF, Right.READ}),
    Role.DEPLOYER: frozenset({Right.SELF, Right.READ, Right.JOBS_WRITE}),
    Role.OPERATOR: frozenset({Right.SELF, Right.READ, Right.JOBS_WRITE, Right.NODES_WRITE}),
    Role.ADMIN: frozenset(
        {
            Right.SELF,
            Right.READ,
            Right.JOBS_WRITE,
            Right.NODES_WRITE,
            Right.TOKENS,
            Right.AUDIT,
        }
    ),
}


@dataclass(frozen=True)
class Rule:
    right: Right
    job_param: str | None = None
    """The path parameter naming the job a deployer's scope must cover."""


def _job_rule(right: Right) -> Rule:
    return Rule(right, job_param="name")


RULES: dict[tuple[str, str], Rule] = {
    # open
    ("GET", "/healthz"): Rule(Right.OPEN),
    ("GET", "/readyz"): Rule(Right.OPEN),
    ("GET", "/metrics"): Rule(Right.OPEN),
    ("GET", "/openapi.json"): Rule(Right.OPEN),
    ("GET", "/docs"): Rule(Right.OPEN),
    ("GET", "/docs/assets/{name}"): Rule(Right.OPEN),
    ("GET", "/ui"): Rule(Right.OPEN),
    ("GET", "/ui/"): Rule(Right.OPEN),
    ("GET", "/ui/{path}"): Rule(Right.OPEN),
    # agents
    ("POST", "/v1/agent/register"): Rule(Right.REGISTER),
    ("GET", "/v1/agent/assignments"): Rule(Right.AGENT),
    ("POST", "/v1/agent/report"): Rule(Right.AGENT),
    ("POST", "/v1/agent/token"): Rule(Right.AGENT),
    # reading
    ("GET", "/v1/jobs"): Rule(Right.READ),
    ("GET", "/v1/jobs/{name}"): Rule(Right.READ),
    ("GET", "/v1/jobs/{name}/status"): Rule(Right.READ),
    ("GET", "/v1/jobs/{name}/versions"): Rule(Right.READ),
    ("GET", "/v1/jobs/{name}/versions/{version}"): Rule(Right.READ),
    ("GET", "/v1/jobs/{name}/nodes"): Rule(Right.READ),
    ("GET", "/v1/jobs/{name}/rollout"): Rule(Right.READ),
    ("GET", "/v1/nodes"): Rule(Right.READ),
    ("GET", "/v1/nodes/{node}"): Rule(Right.READ),
    ("GET", "/v1/events"): Rule(Right.READ),
    # job writes
    ("PUT", "/v1/jobs/{name}"): _job_rule(Right.JOBS_WRITE),
    ("DELETE", "/v1/jobs/{name}"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/plan"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/rollout/pause"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/rollout/resume"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/rollout/promote"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/rollout/abort"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/rollout/retry"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/rollback"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/restart"): _job_rule(Right.JOBS_WRITE),
    ("POST", "/v1/jobs/{name}/stop"): _job_rule(Right.JOBS_WRITE),
    # node actions
    ("POST", "/v1/nodes/{node}/drain"): Rule(Right.NODES_WRITE),
    ("POST", "/v1/nodes/{node}/eligibility"): Rule(Right.NODES_WRITE),
    ("POST", "/v1/nodes/{node}/approve"): Rule(Right.NODES_WRITE),
    ("POST", "/v1/nodes/{node}/revoke"): Rule(Right.NODES_WRITE),
    ("DELETE", "/v1/nodes/{node}"): Rule(Right.NODES_WRITE),
    # tokens
    ("GET", "/v1/tokens/self"): Rule(Right.SELF),
    ("GET", "/v1/tokens"): Rule(Right.TOKENS),
    ("POST", "/v1/tokens"): Rule(Right.TOKENS),
    ("DELETE", "/v1/tokens/{id}"): Rule(Right.TOKENS),
    # audit
    ("GET", "/v1/audit"): Rule(Right.AUDIT),
    # cluster
    ("GET", "/v1/cluster"): Rule(Right.SELF),
}


def rule_for(method: str, route: str) -> Rule | None:
    """The rule of a route template (HEAD is GET's)."""
    return RULES.get(("GET" if method == "HEAD" else method, route))


def check_rules(routes: Iterable[tuple[str, str]]) -> None:
    """Raise RuntimeError naming every (method, route) without a rule."""
    missing = sorted(
        (method, path)
        for method, path in routes
        if method != "HEAD" and rule_for(method, path) is None
    )
    if missing:
        listed = ", ".join(f"{m} {p}" for m, p in missing)
        raise RuntimeError(f"routes without an access rule in coordinator/access.py: {listed}")


UUID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def looks_like_an_id(name: str) -> bool:
    """Whether ``name`` is shaped like the ids the coordinator gives nodes and tokens:
    operators name both by id or name, so a name must not pass for another's id."""
    return UUID_SHAPE.fullmatch(name.lower()) is not None


BOOTSTRAP_ADMIN_ID = "bootstrap-admin"
DEFAULT_JOIN_ID = "default-join"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an operator token (``role`` set) or one node (``node`` set)."""

    token_id: str
    name: str
    role: Role | None = None
    jobs: tuple[str, ...] = ("*",)
    node: NodeRecord | None = None

    @property
    def admin(self) -> bool:
        return self.role == Role.ADMIN

    def rights(self) -> frozenset[Right]:
        if self.node is not None:
            return frozenset({Right.AGENT})
        return ROLE_RIGHTS[self.role] if self.role is not None else frozenset()

    def missing(self, rule: Rule, job: str | None) -> str | None:
        """Why this principal may not take ``rule`` (for ``job``), or None if it may."""
        if rule.right in (Right.OPEN, Right.REGISTER):
            return None
        if rule.right not in self.rights():
            if self.node is not None:
                return "node tokens may only call the agent endpoints (/v1/agent/...)"
            if rule.right == Right.AGENT:
                return "agent endpoints need a node token, not an operator token"
            return (
                f"token {self.name!r} (role {self.role}) lacks the right {rule.right.value!r}"
                f" (needs role {_least_role(rule.right)} or higher)"
            )
        if (
            rule.right == Right.JOBS_WRITE
            and job is not None
            and not job_in_scope(job, list(self.jobs))
        ):
            return (
                f"token {self.name!r} may change only jobs matching {list(self.jobs)};"
                f" job {job!r} is out of its scope (right {rule.right.value!r})"
            )
        return None


def _least_role(right: Right) -> str:
    for role in Role:
        if right in ROLE_RIGHTS[role]:
            return role.value
    return "admin"
