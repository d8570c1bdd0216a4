"""The job spec (DESIGN §3): what to run, where, how to check it and how to roll it out."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from shared.durations import Duration, PositiveDuration, parse_duration
from shared.errors import FieldError, ValidationFailed
from shared.interpolation import PLACEHOLDERS_BODY, PLACEHOLDERS_PATTERN, placeholder_problems

# Each pattern below is both what a validator here checks (re.fullmatch) and what the OpenAPI
# document says (ECMA 262): ASCII classes only, so the two engines read them alike.
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$"
PERCENT_PATTERN = r"^(?:[0-9]{1,2}(?:\.[0-9]+)?|0[0-9]{2}(?:\.[0-9]+)?|100(?:\.0+)?)%$"
"""0% to 100%, at most three digits before the point."""
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SPACE_CHARS = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""The characters str.isspace() calls white space (ECMA's \\s differs: it has U+FEFF, lacks
U+001C-U+001F and U+0085), spelled out so that both engines agree."""
_NOT_BLANK = re.compile(f"[^{SPACE_CHARS}]")
PROGRAM_PATTERN = rf"^(?=[\s\S]*[^{SPACE_CHARS}]){PLACEHOLDERS_BODY}$"
"""A command's program: not blank, and its placeholders are allowed ones."""
_PORT = r"(?:[0-9]+|\$\{[^:]*)"
TCP_ADDRESS_PATTERN = rf"^(?={PLACEHOLDERS_BODY}$)[\s\S]+:{_PORT}$"
"""host:port, split at the last colon: a port of digits or a placeholder."""
RELATIVE_PATH_PATTERN = r"^(?!/)(?![\s\S]*(?:^|/)\.\.(?:/|(?![\s\S])))"
"""Not absolute, and no ``..`` segment."""


def fullmatch(pattern: str, value: str) -> bool:
    """Whether ``pattern`` (one of the anchored patterns above) matches all of ``value``."""
    return re.fullmatch(pattern, value) is not None


class _Input(BaseModel):
    # Strict: a number is not a string, "5" is not a number, 1 is not true, as the schema says.
    # (JSON numbers with a zero fraction, 5.0, arrive as ints: coordinator/api/deps.decode_json.)
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class JobType(StrEnum):
    """``service`` runs until told to stop; ``batch`` runs to completion once per version."""

    SERVICE = "service"
    BATCH = "batch"


class Driver(StrEnum):
    """``exec`` supervises a child process; ``systemd`` runs a transient unit."""

    EXEC = "exec"
    SYSTEMD = "systemd"


class RestartMode(StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class OnUnreachable(StrEnum):
    """What a node that stops heartbeating mid-wave means for the rollout."""

    SKIP = "skip"
    FAIL = "fail"


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not fullmatch(LABEL_KEY_PATTERN, key):
            raise ValueError(
                f"invalid label key {key!r}: letters, digits, '_', '.', '-', '/' (max 63)"
            )
    return value


def _check_count_or_percent(value: object) -> int | str:
    if isinstance(value, bool):
        raise ValueError("must be a count (integer >= 0) or a percentage string like '10%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        if not fullmatch(PERCENT_PATTERN, value):
            raise ValueError(f"invalid percentage {value[:80]!r}: use '0%'..'100%'")
        return value
    raise ValueError("must be a count (integer >= 0) or a percentage string like '10%'")


def label_map_schema(**extra: object) -> dict[str, object]:
    """The JSON schema of labels (or a selector): label keys, string values."""
    return {
        "type": "object",
        "propertyNames": {"pattern": LABEL_KEY_PATTERN},
        "additionalProperties": {"type": "string"},
        **extra,
    }


Labels = Annotated[dict[str, str], WithJsonSchema(label_map_schema())]


def resolve_count(value: int | str, total: int, *, round_up: bool) -> int:
    """A count or percentage of ``total`` nodes as a node count (never above ``total``)."""
    if isinstance(value, int):
        return min(value, total)
    share = float(value[:-1]) / 100 * total
    count = math.ceil(share - 1e-9) if round_up else math.floor(share + 1e-9)
    return min(count, total)


class Target(_Input):
    """Which nodes run the job: all whose labels match ``selector``, optionally only ``count``."""

    selector: Labels = Field(default_factory=dict)
    count: int | None = Field(default=None, ge=1)

    _labels = field_validator("selector")(_check_labels)


class Artifact(_Input):
    """A file fetched over HTTP(S), verified by sha256 and installed under the version dir."""

    url: str = Field(pattern=r"^https?://")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dest: str = Field(
        default="",
        description="relative path inside the version directory",
        json_schema_extra={"pattern": RELATIVE_PATH_PATTERN},
    )
    mode: str = Field(default="0644", pattern=r"^0?[0-7]{3}$")

    @field_validator("dest")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a relative path that stays inside the version directory")
        return value


class RestartPolicy(_Input):
    """Restart a failed process with exponential backoff; too many restarts fail the node."""

    policy: RestartMode = Field(default=RestartMode.ON_FAILURE, strict=False)
    max_restarts: int = Field(default=5, ge=0)
    window: Duration = parse_duration("5m")
    delay: Duration = parse_duration("1s")
    max_delay: Duration = parse_duration("30s")


class Task(_Input):
    driver: Driver = Field(default=Driver.EXEC, strict=False)
    command: list[str] = Field(
        min_length=1,
        json_schema_extra={
            "prefixItems": [{"type": "string", "pattern": PROGRAM_PATTERN}],
            "items": {"type": "string", "pattern": PLACEHOLDERS_PATTERN},
        },
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={
            "propertyNames": {"pattern": ENV_NAME_PATTERN},
            "additionalProperties": {"type": "string", "pattern": PLACEHOLDERS_PATTERN},
        },
    )
    user: str | None = None
    working_dir: str | None = Field(default=None, json_schema_extra={"pattern": "^/"})
    artifacts: list[Artifact] = Field(default_factory=list)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    kill_timeout: Duration = parse_duration("10s")

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if _NOT_BLANK.search(value[0]) is None:
            raise ValueError("the program (first element) must not be empty")
        for item in value:
            if problems := placeholder_problems(item):
                raise ValueError(problems[0])
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not fullmatch(ENV_NAME_PATTERN, key):
                raise ValueError(f"invalid environment variable name {key!r}")
            if problems := placeholder_problems(item):
                raise ValueError(f"{key}: {problems[0]}")
        return value

    @field_validator("working_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class _CheckBase(_Input):
    interval: PositiveDuration = parse_duration("10s")
    timeout: PositiveDuration = parse_duration("2s")
    failure_threshold: int = Field(default=3, ge=1)
    success_threshold: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _timing(self) -> _CheckBase:
        if self.interval.total_seconds() <= 0:
            raise ValueError("interval must be greater than 0")
        if self.timeout.total_seconds() <= 0:
            raise ValueError("timeout must be greater than 0")
        return self


class HttpCheck(_CheckBase):
    """Healthy when a GET of ``url`` answers with a status in ``expect_status`` (else 2xx/3xx)."""

    type: Literal["http"]
    url: str = Field(
        pattern=r"^https?://", json_schema_extra={"pattern": f"^https?://{PLACEHOLDERS_BODY}$"}
    )
    expect_status: list[int] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        if problems := placeholder_problems(value):
            raise ValueError(problems[0])
        return value


class TcpCheck(_CheckBase):
    """Healthy when a TCP connection to ``address`` (host:port) opens."""

    type: Literal["tcp"]
    address: str = Field(min_length=3, json_schema_extra={"pattern": TCP_ADDRESS_PATTERN})

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if problems := placeholder_problems(value):
            raise ValueError(problems[0])
        host, sep, port = value.rpartition(":")
        if not sep or not host or not fullmatch(_PORT, port):
            raise ValueError(f"invalid address {value[:80]!r}: use host:port")
        return value


class ExecCheck(_CheckBase):
    """Healthy when ``command`` exits 0 within ``timeout``."""

    type: Literal["exec"]
    command: list[str] = Field(
        min_length=1,
        json_schema_extra={"items": {"type": "string", "pattern": PLACEHOLDERS_PATTERN}},
    )

    @field_validator("command")
    @classmethod
    def _placeholders(cls, value: list[str]) -> list[str]:
        for item in value:
            if problems := placeholder_problems(item):
                raise ValueError(problems[0])
        return value


HealthCheck = Annotated[HttpCheck | TcpCheck | ExecCheck, Field(discriminator="type")]


class Health(_Input):
    """No checks means "the process is alive" is healthy."""

    checks: list[HealthCheck] = Field(default_factory=list)


CountOrPercent = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": PERCENT_PATTERN},
            ]
        }
    ),
]
"""A node count, or a share of the nodes such as ``"10%"``."""

Waves = Annotated[
    int | list[str],
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {
                    "type": "array",
                    "items": {"type": "string", "pattern": PERCENT_PATTERN},
                    "minItems": 1,
                },
            ],
            "description": "a number of equal waves, or cumulative percentages of the nodes, "
            'strictly increasing and ending with "100%", e.g. ["10%", "50%", "100%"]',
        }
    ),
]


class RolloutPolicy(_Input):
    canary: CountOrPercent = 0
    canary_selector: Labels = Field(default_factory=dict)
    spread_by: str | None = Field(default=None, json_schema_extra={"pattern": LABEL_KEY_PATTERN})
    auto_promote: bool = True
    waves: Waves = 1
    max_parallel: int = Field(default=0, ge=0)
    pause_between_waves: Duration | Literal["manual"] = parse_duration("0s")
    min_healthy_time: Duration = parse_duration("10s")
    healthy_deadline: Duration = parse_duration("2m")
    progress_deadline: Duration = parse_duration("10m")
    max_failed_nodes: CountOrPercent = 0
    on_unreachable: OnUnreachable = Field(default=OnUnreachable.SKIP, strict=False)
    auto_rollback: bool = True

    _canary_labels = field_validator("canary_selector")(_check_labels)

    @field_validator("canary", "max_failed_nodes", mode="before")
    @classmethod
    def _count(cls, value: object) -> int | str:
        return _check_count_or_percent(value)

    @field_validator("waves", mode="before")
    @classmethod
    def _waves(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be a number of waves or a list of cumulative percentages")
        if isinstance(value, int):
            if value < 1:
                raise ValueError("must be at least 1")
            return value
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be empty")
            previous = 0.0
            for item in value:
                if not isinstance(item, str) or not fullmatch(PERCENT_PATTERN, item):
                    raise ValueError(f"{item!r:.80} is not a percentage like '50%'")
                share = float(item[:-1])
                if share <= previous or share > 100:
                    raise ValueError("percentages must be cumulative and strictly increasing")
                previous = share
            if previous != 100:
                raise ValueError("the last wave must be '100%'")
            return value
        raise ValueError("must be a number of waves or a list of cumulative percentages")

    @field_validator("pause_between_waves", mode="before")
    @classmethod
    def _pause(cls, value: object) -> object:
        if value == "manual":
            return value
        if isinstance(value, str):
            return parse_duration(value)
        return value

    @field_validator("spread_by")
    @classmethod
    def _spread(cls, value: str | None) -> str | None:
        if value is not None and not fullmatch(LABEL_KEY_PATTERN, value):
            raise ValueError(f"invalid label key {value[:80]!r}")
        return value

    @model_validator(mode="after")
    def _deadlines(self) -> RolloutPolicy:
        if self.healthy_deadline <= self.min_healthy_time:
            raise ValueError("healthy_deadline must be longer than min_healthy_time")
        if self.progress_deadline < self.healthy_deadline:
            raise ValueError("progress_deadline must not be shorter than healthy_deadline")
        return self


class JobSpec(_Input):
    """A whole job spec as submitted by an operator."""

    name: str = Field(pattern=NAME_PATTERN)
    type: JobType = Field(default=JobType.SERVICE, strict=False)
    target: Target = Field(default_factory=Target)
    task: Task
    health: Health = Field(default_factory=Health)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)

    def canonical(self) -> dict[str, Any]:
        """The spec with every default filled in; equal dicts mean identical specs."""
        return self.model_dump(mode="json")


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
}
_CHECK_TAGS = {"http", "tcp", "exec"}
_PATTERN_HINTS = {
    "name": "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit",
    "url": "must be an http:// or https:// URL",
    "sha256": "must be 64 lowercase hex digits",
    "mode": "must be an octal file mode such as '0644'",
}


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    previous: int | str | None = None
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(previous, int) and item in _CHECK_TAGS:
            pass  # the discriminator tag pydantic adds to union locations
        elif item.startswith("function-") or item in {"int", "str", "list[str]", "timedelta"}:
            pass  # union branch names
        else:
            parts.append(("." if parts else "") + item)
        previous = item
    return "".join(parts) or "(body)"


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic's errors as ``{field, message}`` pairs, one per field, in input order."""
    seen: dict[str, FieldError] = {}
    for err in exc.errors(include_url=False):
        field = _field_path(tuple(err["loc"]))
        message = _MESSAGES.get(err["type"], err["msg"])
        message = message.removeprefix("Value error, ")
        if err["type"] == "string_pattern_mismatch":
            message = _PATTERN_HINTS.get(str(err["loc"][-1]), message)
        if field not in seen:
            seen[field] = FieldError(field=field, message=message)
    return list(seen.values())


def parse_job_spec(data: Any) -> JobSpec:
    """Validate a decoded spec; raise ValidationFailed listing every problem."""
    if not isinstance(data, dict):
        raise ValidationFailed([FieldError(field="(body)", message="must be a JSON object")])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from None
