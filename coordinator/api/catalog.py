"""What the OpenAPI document says about each route, keyed by (method, path).

Every route the app serves needs an entry here and every entry needs a route:
``tests/coordinator/test_openapi.py`` fails otherwise. Schemas come from the models named here.
"""

from __future__ import annotations

from pydantic import BaseModel

from coordinator.api.deps import IF_MATCH_PATTERN, MAX_PLAIN_INT
from coordinator.api.schemas import (
    ActionResult,
    AuditPage,
    ClusterView,
    DrainRequest,
    EligibilityRequest,
    EventPage,
    JobDetail,
    JobList,
    JobNodeList,
    NodeDetail,
    NodeList,
    PlanPreview,
    ProbeStatus,
    PromoteRequest,
    RollbackRequest,
    RolloutView,
    SubmitResult,
    TokenList,
    VersionList,
)
from coordinator.domain.records import JobVersion
from coordinator.openapi import (
    RETRY_AFTER,
    Auth,
    Header,
    Media,
    Param,
    Reply,
    RouteDoc,
    RouteKey,
    json_reply,
)
from shared.durations import DURATION_PATTERN, MAX_DURATION_CHARS
from shared.nodes import Node
from shared.protocol import (
    AssignmentsResponse,
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
    ReportResponse,
    TokenRotation,
)
from shared.spec import NAME_PATTERN, JobSpec
from shared.status import JobStatus
from shared.tokens import TOKEN_NAME_PATTERN, CreatedToken, Token, TokenRequest

TAGS = {
    "jobs": "Submit job specs and read jobs, their versions, status and nodes.",
    "rollouts": "Steer a job's rollout: pause, resume, promote, abort, retry, roll back, "
    "restart, stop, delete; dry-run plans and the wave-by-wave view.",
    "nodes": "The fleet: list nodes, drain them, change their eligibility.",
    "events": "What happened, as a server-sent event stream or a JSON page.",
    "audit": "Who did what: operator requests and refused requests, durably recorded.",
    "tokens": "Operator and join tokens: create (the secret is shown once), list, revoke.",
    "agent": "The protocol agents speak: register, long-poll assignments, report.",
    "system": "Open monitoring endpoints: liveness, readiness, Prometheus metrics.",
    "docs": "This document and the page that renders it.",
    "dashboard": "The operator dashboard's static files; its data comes from `/v1`.",
}

_JOB = Param("name", "path", "The job's name.", {"type": "string", "pattern": NAME_PATTERN})
_NODE = Param("node", "path", "The node's id or name (a name resolves to its live node).")
_TOKEN = Param(
    "id", "path", "The token's id (its accessor), or its name; never `self` (a GET there)."
)
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PLAIN_INT = {"type": "integer", "minimum": 0, "maximum": MAX_PLAIN_INT}
"""A plain integer parameter: ASCII digits only, at most 18 (coordinator/api/deps.plain_int)."""
_INDEX = Param(
    "index",
    "query",
    "Block until the index is above this value (from the last `X-Fleetwave-Index`).",
    _PLAIN_INT,
)
_WAIT = Param(
    "wait",
    "query",
    "How long to block at most: a duration such as `30s` (default); longer ones wait 5m.",
    {
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": MAX_DURATION_CHARS,
        "default": "30s",
    },
)
_INDEX_HEADER = {
    "X-Fleetwave-Index": Header(
        "The index to pass as `?index=` on the next call.",
        {"type": "string", "pattern": "^[0-9]+$"},
    )
}
_REVISION_ETAG = Header(
    "The job's revision, quoted (`If-Match` takes it).",
    {"type": "string", "pattern": '^"[0-9]+"$'},
)
_FILE_ETAG = Header(
    "The file's hash, quoted (`If-None-Match` takes it).",
    {"type": "string", "pattern": '^"[0-9a-f]{32}"$'},
)


def _action(
    summary: str,
    description: str,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
) -> RouteDoc:
    return RouteDoc(
        summary=summary,
        tag="rollouts",
        description=description + " Answers with the job's status after the engine reacted.",
        params=(_JOB,),
        replies={200: json_reply("The action was applied.", ActionResult)},
        body=body,
        body_required=body_required,
        errors=(409, 503),
    )


_STREAM = """\
Server-sent events (`text/event-stream`) unless the request says `Accept: application/json`.

Messages:

- a stored transition: `id: <int>`, `event: <kind>`, `data: <Event JSON>` (`{id, time, job, \
node, kind, old, new, reason}`); kinds include `rollout_started`, `rollout_paused`, \
`rollout_resumed`, `rollout_promoted`, `rollout_aborted`, `rollback_started`, `job_stopped`, \
`job_deleted`, `node_registered`, `node_status`, `node_drain`, `node_eligibility` and the \
engine's wave and node transitions;
- `event: status`, `data: {"job": NAME, "revision": R}` (no id) whenever a job's status \
revision changes: refetch `/v1/jobs/{name}/status` or `/rollout`;
- a comment `: keepalive` every 15 s.

Browsers' `EventSource` cannot send the `Authorization` header: read the stream with \
`fetch()` and a stream reader instead. With `Accept: application/json` the answer is one page \
of stored events (`after`, `limit`)."""

ROUTE_DOCS: dict[RouteKey, RouteDoc] = {
    # --- system -------------------------------------------------------------------------
    ("GET", "/healthz"): RouteDoc(
        summary="Liveness",
        tag="system",
        auth=Auth.OPEN,
        replies={200: json_reply("The process serves requests.", ProbeStatus)},
    ),
    ("GET", "/readyz"): RouteDoc(
        summary="Readiness",
        tag="system",
        auth=Auth.OPEN,
        description="Ready once the store is open and the engine runs, and while the store's "
        "writes commit. After a failed write (disk full, I/O error) it answers 503 "
        '`{"status": "storage_failing", "error": ...}` and tries a small write at most once '
        "a second, so it turns ready again by itself once the storage works.",
        replies={
            200: json_reply("Ready.", ProbeStatus),
            503: json_reply(
                "Starting or stopping, or the store cannot write (`storage_failing`).",
                ProbeStatus,
                {
                    "Retry-After": Header(
                        "With `storage_failing`: seconds to wait before asking again.",
                        RETRY_AFTER.schema,
                        required=False,
                    )
                },
            ),
        },
    ),
    ("GET", "/metrics"): RouteDoc(
        summary="Prometheus metrics",
        tag="system",
        auth=Auth.OPEN,
        description="Jobs and nodes by state, per-job rollout progress, HTTP latency by route "
        "template, engine timings; every metric is listed in `docs/metrics.md`.",
        replies={
            200: Reply(
                "Prometheus text exposition format.",
                (Media("text/plain", schema={"type": "string"}),),
            )
        },
    ),
    # --- docs ---------------------------------------------------------------------------
    ("GET", "/openapi.json"): RouteDoc(
        summary="This OpenAPI document",
        tag="docs",
        auth=Auth.OPEN,
        replies={
            200: Reply(
                "The OpenAPI 3.1 document, generated from the live routes.",
                (Media(schema={"type": "object"}),),
            )
        },
    ),
    ("GET", "/docs"): RouteDoc(
        summary="API reference page",
        tag="docs",
        auth=Auth.OPEN,
        description="Renders `/openapi.json` in the browser; needs no network beyond the "
        "coordinator.",
        replies={200: Reply("An HTML page.", (Media("text/html", schema={"type": "string"}),))},
    ),
    ("GET", "/docs/assets/{name}"): RouteDoc(
        summary="Asset of the reference page",
        tag="docs",
        auth=Auth.OPEN,
        params=(Param("name", "path", "A file name such as `docs.css` or `docs.js`."),),
        replies={
            200: Reply(
                "The file.",
                (
                    Media("text/css", schema={"type": "string"}),
                    Media("text/javascript", schema={"type": "string"}),
                ),
            )
        },
    ),
    # --- dashboard ----------------------------------------------------------------------
    ("GET", "/ui"): RouteDoc(
        summary="Dashboard (redirect)",
        tag="dashboard",
        auth=Auth.OPEN,
        replies={
            302: Reply(
                "Redirects to `/ui/`.",
                headers={"Location": Header("`/ui/`", {"type": "string", "const": "/ui/"})},
            )
        },
    ),
    ("GET", "/ui/"): RouteDoc(
        summary="Dashboard page",
        tag="dashboard",
        auth=Auth.OPEN,
        description="The page asks for a token and calls the `/v1` API with it.",
        replies={
            200: Reply(
                "An HTML page.",
                (Media("text/html", schema={"type": "string"}),),
                {"ETag": _FILE_ETAG},
            ),
            304: Reply("Unchanged (`If-None-Match`).", headers={"ETag": _FILE_ETAG}),
        },
    ),
    ("GET", "/ui/{path}"): RouteDoc(
        summary="Dashboard file",
        tag="dashboard",
        auth=Auth.OPEN,
        params=(Param("path", "path", "A file of the dashboard, e.g. `app.js`."),),
        replies={
            200: Reply(
                "The file.",
                (
                    Media("text/javascript", schema={"type": "string"}),
                    Media("text/css", schema={"type": "string"}),
                    Media("image/svg+xml", schema={"type": "string"}),
                    Media("text/html", schema={"type": "string"}),
                ),
                {"ETag": _FILE_ETAG},
            ),
            304: Reply("Unchanged (`If-None-Match`).", headers={"ETag": _FILE_ETAG}),
        },
    ),
    # --- jobs ---------------------------------------------------------------------------
    ("PUT", "/v1/jobs/{name}"): RouteDoc(
        summary="Create or update a job",
        tag="jobs",
        description="The body is the job spec; its `name` must equal the path's. An identical "
        'resubmission changes nothing (`changed: false`). `If-Match: "<revision>"` makes the '
        'write conditional; `"0"` means only if the job does not exist.',
        params=(
            _JOB,
            Param(
                "If-Match",
                "header",
                'The revision the write expects, e.g. `"3"` (also `W/"3"` or `3`).',
                {"type": "string", "pattern": IF_MATCH_PATTERN},
            ),
        ),
        body=JobSpec,
        replies={
            200: json_reply("Updated, or unchanged.", SubmitResult),
            201: json_reply("Created.", SubmitResult),
        },
        errors=(409, 412, 503),  # 409: changed concurrently
    ),
    ("GET", "/v1/jobs"): RouteDoc(
        summary="List jobs",
        tag="jobs",
        description="By name; deleted jobs stay listed with state `deleted`.",
        replies={200: json_reply("Every job.", JobList)},
    ),
    ("GET", "/v1/jobs/{name}"): RouteDoc(
        summary="Read a job",
        tag="jobs",
        description="Its summary and its current spec with every default filled in.",
        params=(_JOB,),
        replies={200: json_reply("The job.", JobDetail, {"ETag": _REVISION_ETAG})},
    ),
    ("GET", "/v1/jobs/{name}/status"): RouteDoc(
        summary="Job status (blocking query)",
        tag="jobs",
        description="The `JobStatus` object. With `?index=R` the answer waits until the "
        "revision is above `R` or `wait` has passed.",
        params=(
            _JOB,
            _INDEX,
            _WAIT,
            Param(
                "If-None-Match",
                "header",
                "A quoted revision; answers 304 while it is current (without `index`).",
            ),
        ),
        replies={
            200: json_reply(
                "The status.",
                JobStatus,
                {
                    "ETag": _REVISION_ETAG,
                    "X-Fleetwave-Index": Header(
                        "The revision: pass it as `?index=` to wait for a change.",
                        {"type": "string", "pattern": "^[0-9]+$"},
                    ),
                },
            ),
            304: Reply(
                "The revision in `If-None-Match` is current.", headers={"ETag": _REVISION_ETAG}
            ),
        },
    ),
    ("GET", "/v1/jobs/{name}/versions"): RouteDoc(
        summary="List a job's versions",
        tag="jobs",
        params=(_JOB,),
        replies={200: json_reply("Every stored version, oldest first.", VersionList)},
    ),
    ("GET", "/v1/jobs/{name}/versions/{version}"): RouteDoc(
        summary="Read one version of a job",
        tag="jobs",
        params=(
            _JOB,
            Param("version", "path", "The version number.", _PLAIN_INT | {"minimum": 1}),
        ),
        replies={200: json_reply("The version's spec.", JobVersion)},
        errors=(400,),
    ),
    ("GET", "/v1/jobs/{name}/nodes"): RouteDoc(
        summary="A job's nodes",
        tag="jobs",
        description="Nodes assigned the job or reporting it, with the agent's last report.",
        params=(_JOB,),
        replies={200: json_reply("The nodes.", JobNodeList)},
    ),
    # --- rollouts -----------------------------------------------------------------------
    ("POST", "/v1/jobs/{name}/plan"): RouteDoc(
        summary="Plan a submission (dry run)",
        tag="rollouts",
        description="The diff against the current version and the wave plan the spec in the "
        "body would get. Stores nothing.",
        params=(_JOB,),
        body=JobSpec,
        replies={200: json_reply("The plan.", PlanPreview)},
    ),
    ("GET", "/v1/jobs/{name}/rollout"): RouteDoc(
        summary="The rollout, wave by wave",
        tag="rollouts",
        description="Target and stable version, gate and pause reason, and every canary and "
        "wave node with its execution state and result.",
        params=(_JOB,),
        replies={200: json_reply("The latest rollout.", RolloutView)},
    ),
    ("POST", "/v1/jobs/{name}/rollout/pause"): _action(
        "Pause the rollout", "No further node is moved until it is resumed."
    ),
    ("POST", "/v1/jobs/{name}/rollout/resume"): _action(
        "Resume the rollout", "Continues a paused rollout (also opens a manual wave gate)."
    ),
    ("POST", "/v1/jobs/{name}/rollout/promote"): _action(
        "Promote past the canary or a wave gate",
        '`{"full": true}` also skips every later wave gate.',
        body=PromoteRequest,
        body_required=False,
    ),
    ("POST", "/v1/jobs/{name}/rollout/abort"): _action(
        "Abort the rollout", "Halts it where it is; nothing is rolled back automatically."
    ),
    ("POST", "/v1/jobs/{name}/rollout/retry"): _action(
        "Retry a halted rollout", "Starts the halted rollout again for the same version."
    ),
    ("POST", "/v1/jobs/{name}/rollback"): _action(
        "Roll back",
        "Returns to the stable version, or to `to_version`.",
        body=RollbackRequest,
        body_required=False,
    ),
    ("POST", "/v1/jobs/{name}/restart"): _action(
        "Restart in waves", "Restarts the running version wave by wave, under the same policy."
    ),
    ("POST", "/v1/jobs/{name}/stop"): _action(
        "Stop the job", "Every node stops it; it stays stored and can be resubmitted."
    ),
    ("DELETE", "/v1/jobs/{name}"): _action(
        "Delete the job", "Stops it everywhere and leaves a tombstone; idempotent."
    ),
    # --- events -------------------------------------------------------------------------
    ("GET", "/v1/events"): RouteDoc(
        summary="Event stream",
        tag="events",
        description=_STREAM,
        params=(
            Param("job", "query", "Only this job's events (node events are left out then)."),
            Param(
                "after",
                "query",
                "Replay stored events with an id above this first (default: 0 for a page, "
                "only new events for a stream).",
                _PLAIN_INT,
            ),
            Param(
                "limit",
                "query",
                "Page size for `Accept: application/json` (default 100).",
                {"type": "integer", "minimum": 1, "maximum": 1000},
            ),
            Param(
                "Last-Event-ID",
                "header",
                "Resume after this id (overrides `after`, for a page too).",
                {"type": "string", "pattern": "^[0-9]{1,18}$"},
            ),
        ),
        replies={
            200: Reply(
                "The stream, or with `Accept: application/json` one page of events.",
                (
                    Media("text/event-stream", schema={"type": "string"}),
                    Media(model=EventPage),
                ),
            )
        },
    ),
    # --- nodes --------------------------------------------------------------------------
    ("GET", "/v1/nodes"): RouteDoc(
        summary="List nodes",
        tag="nodes",
        description="`status`: `initializing` (registered, no report yet), `ready`, or `down` "
        "(no heartbeat for 3 heartbeat intervals). `conditions`: what the node's agent last "
        "reported as wrong while it keeps working, e.g. `data_dir_unwritable`.",
        replies={200: json_reply("Every node.", NodeList)},
    ),
    ("GET", "/v1/nodes/{node}"): RouteDoc(
        summary="Read a node",
        tag="nodes",
        params=(_NODE,),
        replies={200: json_reply("The node and its assignments.", NodeDetail)},
    ),
    ("POST", "/v1/nodes/{node}/drain"): RouteDoc(
        summary="Drain a node",
        tag="nodes",
        description="A drained node's jobs stop and it gets no new ones; `enable: false` ends it.",
        params=(_NODE,),
        body=DrainRequest,
        body_required=False,
        replies={200: json_reply("The node.", Node)},
        errors=(503,),
    ),
    ("POST", "/v1/nodes/{node}/eligibility"): RouteDoc(
        summary="Set a node's eligibility",
        tag="nodes",
        description="An ineligible node keeps what it runs but gets no new version.",
        params=(_NODE,),
        body=EligibilityRequest,
        replies={200: json_reply("The node.", Node)},
        errors=(503,),
    ),
    ("POST", "/v1/nodes/{node}/approve"): RouteDoc(
        summary="Approve a pending node",
        tag="nodes",
        description="A node enrolled with a manual-approval join token is `pending`: it gets "
        "no assignments and sees no job spec until it is approved. Approving an approved node "
        "changes nothing; a revoked node cannot be approved (409).",
        params=(_NODE,),
        replies={200: json_reply("The node.", Node)},
        errors=(409, 503),
    ),
    ("POST", "/v1/nodes/{node}/revoke"): RouteDoc(
        summary="Revoke a node",
        tag="nodes",
        description="Its token is refused from now on (an open long-poll ends with 401 "
        "`node_revoked`), its status is `revoked` and no rollout targets it again; its name "
        "stays taken until the node is purged.",
        params=(_NODE,),
        replies={200: json_reply("The node.", Node)},
        errors=(503,),
    ),
    ("DELETE", "/v1/nodes/{node}"): RouteDoc(
        summary="Purge a down or revoked node",
        tag="nodes",
        description="Forgets the node, its assignments and executions (its events stay), so "
        "its name can be registered again. A node that is not `down` or `revoked` is a 409.",
        params=(_NODE,),
        replies={204: Reply("Purged.")},
        errors=(409, 503),
    ),
    # --- tokens -------------------------------------------------------------------------
    ("POST", "/v1/tokens"): RouteDoc(
        summary="Create a token",
        tag="tokens",
        description="An operator token (a `role`, and `jobs` globs for a deployer) or a join "
        "token (`max_uses`, bound `labels`, `approval`). The `secret` is in this answer only; "
        "the coordinator keeps its hash. Names are unique among usable tokens (409).",
        body=TokenRequest,
        replies={201: json_reply("Created; the secret is shown this once.", CreatedToken)},
        errors=(409, 503),
    ),
    ("GET", "/v1/tokens"): RouteDoc(
        summary="List tokens",
        tag="tokens",
        description="Every token without its secret, the configured (bootstrap) ones first.",
        replies={200: json_reply("The tokens.", TokenList)},
    ),
    ("GET", "/v1/tokens/self"): RouteDoc(
        summary="The calling token",
        tag="tokens",
        description="Who am I: the token this request was made with (any operator token).",
        replies={200: json_reply("The token.", Token)},
        errors=(404,),  # revoked and purged between authentication and the answer
    ),
    ("GET", "/v1/cluster"): RouteDoc(
        summary="The coordinators and their leader",
        tag="system",
        description="Every coordinator sharing the database, which one leads (runs the "
        "rollout engine, its timers and node liveness) and the leadership epoch. Any "
        "coordinator answers; every one serves the whole API. With SQLite there is one "
        "member, the leader, at epoch 0. Clients that lose their coordinator can try the "
        "others' `address`.",
        replies={200: json_reply("The cluster.", ClusterView)},
    ),
    ("DELETE", "/v1/tokens/{id}"): RouteDoc(
        summary="Revoke a token",
        tag="tokens",
        description="Refused from the next request on (401). The configured tokens cannot be "
        "revoked here (409): change the configuration instead.",
        params=(_TOKEN,),
        replies={200: json_reply("The revoked token.", Token)},
        errors=(404, 409, 503),
    ),
    # --- audit --------------------------------------------------------------------------
    ("GET", "/v1/audit"): RouteDoc(
        summary="The audit log",
        tag="audit",
        description="Every operator request that changes something (recorded before it runs; "
        "`status` 0 means its answer could not be recorded) and every refused request (401, "
        "403): time, token id and name, role, remote address, method, path, job or node, "
        "status, request id (also the answer's `X-Request-Id`). Never a secret. Kept for "
        "`audit_retention` and at most `audit_max_rows` entries. A page holds the oldest "
        "`limit` entries between `after` and `before`, oldest first, or with `order=desc` the "
        "newest, newest first: page forwards with `after=<last_id>`, or back from the newest "
        "with `order=desc&before=<last_id>`.",
        params=(
            Param("after", "query", "Only entries after this id.", _PLAIN_INT),
            Param("before", "query", "Only entries before this id.", _PLAIN_INT),
            Param(
                "limit",
                "query",
                "At most this many (default 100).",
                {"type": "integer", "minimum": 1, "maximum": 1000},
            ),
            Param(
                "order",
                "query",
                "`asc`: the oldest entries, oldest first; `desc`: the newest, newest first.",
                {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
            ),
            Param(
                "job",
                "query",
                "Only entries about this job (empty: every job).",
                {"type": "string", "pattern": f"^(?:{NAME_PATTERN[1:-1]})?$"},
            ),
            Param(
                "token",
                "query",
                "Only entries of this token, its name or id (empty: every token).",
                {"type": "string", "pattern": f"^(?:{TOKEN_NAME_PATTERN[1:-1]}|{_UUID})?$"},
            ),
        ),
        replies={200: json_reply("A page of entries.", AuditPage)},
    ),
    # --- agent --------------------------------------------------------------------------
    ("POST", "/v1/agent/register"): RouteDoc(
        summary="Register a node",
        tag="agent",
        auth=Auth.JOIN,
        description="Authenticated by the join token in the body (no header). The node token "
        "in the answer is shown only once.",
        body=RegisterRequest,
        replies={201: json_reply("Registered.", RegisterResponse)},
        errors=(401, 409, 503),
    ),
    ("GET", "/v1/agent/assignments"): RouteDoc(
        summary="The node's assignments (blocking query)",
        tag="agent",
        auth=Auth.NODE,
        description="The node's complete desired state: a job not listed must not run. With "
        "`?index=N` the answer waits until the node's assignment index is above `N`.",
        params=(_INDEX, _WAIT),
        replies={200: json_reply("The assignments.", AssignmentsResponse, _INDEX_HEADER)},
    ),
    ("POST", "/v1/agent/report"): RouteDoc(
        summary="Heartbeat and execution report",
        tag="agent",
        auth=Auth.NODE,
        description="A `seq` not above the last accepted one is ignored (`accepted: false`); "
        "`last_seq` in the answer is then the seq to continue after; after a crash of the "
        "coordinator it may be above anything the agent sent. `conditions` replace the node's "
        "(empty or absent: none); a change is recorded as a `node_condition` event.",
        body=ReportRequest,
        replies={200: json_reply("Recorded (or ignored as a replay).", ReportResponse)},
        errors=(503,),
    ),
    ("POST", "/v1/agent/token"): RouteDoc(
        summary="Rotate the node token",
        tag="agent",
        auth=Auth.NODE,
        description="A new token for the calling node, asked for when a report answers "
        "`rotate_token: true`. The current token keeps working until the new one is first "
        "used, so a lost answer cannot lock the node out.",
        replies={200: json_reply("The next token.", TokenRotation)},
        errors=(503,),
    ),
}
