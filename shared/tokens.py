"""Managed tokens as the API shows them (DESIGN §10, §11): operator tokens with a role and
job scopes, and join tokens that enroll nodes. The secret is shown once, at creation."""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from shared.durations import Duration
from shared.nodes import ID_SHAPE_PATTERN, NODE_LABELS_SCHEMA, check_node_labels
from shared.status import Timestamp

TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"  # noqa: S105 (a pattern, not a secret)
JOB_GLOB_PATTERN = r"^[a-z0-9*?\[\]\-!]{1,63}$"
MAX_JOB_GLOBS = 32
MAX_TTL = timedelta(days=3650)
RESERVED_NAMES = ("self", "bootstrap-admin", "default-join")
"""No token has these names: ``/v1/tokens/self`` is the calling token, and the others are the
configured tokens' (``coordinator.access``). Nor the shape of an id (ID_SHAPE_PATTERN)."""


class TokenKind(StrEnum):
    OPERATOR = "operator"  # people, pipelines, dashboards: a role and job scopes
    JOIN = "join"  # enrolls nodes; can call nothing but registration


class Role(StrEnum):
    """Each role has the rights of the ones before it (DESIGN §11)."""

    VIEWER = "viewer"
    DEPLOYER = "deployer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Approval(StrEnum):
    AUTO = "auto"  # a node enrolled with the token is a fleet member at once
    MANUAL = "manual"  # it is ``pending`` until ``fleetwave node approve``


def job_in_scope(job: str, globs: list[str]) -> bool:
    """Whether ``job`` matches one of the ``globs`` (shell-style, case-sensitive)."""
    return any(fnmatch.fnmatchcase(job, pattern) for pattern in globs)


_NULL = {"type": "null"}
_KIND_RULES: dict[str, Any] = {
    "anyOf": [
        {
            "title": "An operator token of a role without job scopes",
            "properties": {
                "kind": {"const": TokenKind.OPERATOR.value},
                "role": {"enum": [Role.VIEWER.value, Role.OPERATOR.value, Role.ADMIN.value]},
                "jobs": _NULL,
                "max_uses": _NULL,
                "labels": _NULL,
                "approval": _NULL,
            },
            "required": ["role"],
        },
        {
            "title": "A deployer token, scoped to jobs",
            "properties": {
                "kind": {"const": TokenKind.OPERATOR.value},
                "role": {"const": Role.DEPLOYER.value},
                "max_uses": _NULL,
                "labels": _NULL,
                "approval": _NULL,
            },
            "required": ["role"],
        },
        {
            "title": "A join token",
            "properties": {"kind": {"const": TokenKind.JOIN.value}, "role": _NULL, "jobs": _NULL},
            "required": ["kind"],
        },
    ]
}
"""``TokenRequest.problems()`` as a JSON schema: which fields each kind of token may have."""


class TokenRequest(BaseModel):
    """``POST /v1/tokens``."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, json_schema_extra=_KIND_RULES
    )

    name: str = Field(
        pattern=TOKEN_NAME_PATTERN,
        description="who or what holds the token; not self, bootstrap-admin, default-join or"
        " shaped like an id (a UUID)",
        json_schema_extra={
            "not": {"anyOf": [{"enum": list(RESERVED_NAMES)}, {"pattern": ID_SHAPE_PATTERN}]}
        },
    )
    kind: TokenKind = Field(default=TokenKind.OPERATOR, strict=False)
    role: Role | None = Field(
        default=None,
        strict=False,
        description="operator tokens: viewer, deployer, operator or admin",
    )
    jobs: list[str] | None = Field(
        default=None,
        json_schema_extra={
            "items": {"type": "string", "pattern": JOB_GLOB_PATTERN},
            "minItems": 1,
            "maxItems": MAX_JOB_GLOBS,
        },
        description='deployer tokens: the job names (globs) it may change; default ["*"]',
    )
    ttl: Duration | None = Field(
        default=None, description="lifetime from 1s to 87600h, e.g. 720h; none: no expiry"
    )
    max_uses: int | None = Field(
        default=None, ge=1, le=1_000_000, description="join tokens: how many nodes it may enroll"
    )
    labels: Annotated[dict[str, str], WithJsonSchema(NODE_LABELS_SCHEMA)] | None = Field(
        default=None,
        description="join tokens: labels every node it enrolls gets (they override the agent's)",
    )
    approval: Approval | None = Field(
        default=None,
        strict=False,
        description="join tokens: auto (default) or manual (nodes start pending)",
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES or re.fullmatch(ID_SHAPE_PATTERN, value):
            raise ValueError("reserved: self, bootstrap-admin, default-join and id-shaped names")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_node_labels(value) if value is not None else None

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError('at least one job glob (use ["*"] for every job)')
        if len(value) > MAX_JOB_GLOBS:
            raise ValueError(f"at most {MAX_JOB_GLOBS} job globs")
        for glob in value:
            if re.fullmatch(JOB_GLOB_PATTERN, glob) is None:
                raise ValueError(
                    f"invalid job glob {glob[:80]!r}: job-name characters (a-z, 0-9, '-')"
                    " and the wildcards * ? [ ]"
                )
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(seconds=1) <= value <= MAX_TTL:
            raise ValueError("must be between 1s and 87600h (ten years)")
        return value

    def problems(self) -> dict[str, str]:
        """Fields that do not fit the token's kind: field -> what is wrong."""
        out: dict[str, str] = {}
        if self.kind == TokenKind.OPERATOR:
            if self.role is None:
                out["role"] = "an operator token needs a role: viewer, deployer, operator or admin"
            for key in ("max_uses", "labels", "approval"):
                if getattr(self, key) is not None:
                    out[key] = "only join tokens have it"
            if self.jobs is not None and self.role != Role.DEPLOYER:
                out["jobs"] = "only deployer tokens are scoped to jobs (the other roles act on all)"
        else:
            for key in ("role", "jobs"):
                if getattr(self, key) is not None:
                    out[key] = f"join tokens only enroll nodes; they have no {key}"
        return out


class Token(BaseModel):
    """A token as ``GET /v1/tokens`` shows it: everything but the secret."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="the accessor: public, names the token in the audit log")
    name: str
    kind: TokenKind
    role: Role | None = None
    jobs: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    approval: Approval | None = None
    max_uses: int | None = None
    uses: int = 0
    created_at: Timestamp
    created_by: str = ""
    expires_at: Timestamp | None = None
    revoked_at: Timestamp | None = None
    bootstrap: bool = Field(
        default=False, description="configured (--admin-token/--join-token), not stored"
    )


class CreatedToken(Token):
    """``POST /v1/tokens``' answer: the token with its secret, shown this once."""

    secret: str
