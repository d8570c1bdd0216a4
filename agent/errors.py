"""The agent's one error tree: configuration problems, coordinator failures, launch failures."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every expected failure inside the agent."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(AgentError):
    """The configuration is invalid; the message names the option. ``main`` exits with 2."""


class CoordinatorError(AgentError):
    """A coordinator request did not succeed."""


class CoordinatorUnavailable(CoordinatorError):
    """No configured coordinator answered (connection error, timeout or 5xx on every URL).

    ``retry_after``: seconds a coordinator asked to wait (a 503 with ``Retry-After``, sent
    while it sheds load or its database is away); None when none asked."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokenRejected(CoordinatorError):
    """A node endpoint answered 401: the node token is unknown, so the node must re-register."""


class JoinTokenRejected(CoordinatorError):
    """Registration answered 401: the join token is wrong."""


class NameConflict(CoordinatorError):
    """Registration answered 409: another live node holds this node name."""


class RequestRejected(CoordinatorError):
    """The coordinator refused a request with a 4xx other than 401/409."""

    def __init__(self, message: str, *, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BadResponse(CoordinatorError):
    """The coordinator answered with a body that does not match the protocol."""


class LaunchError(AgentError):
    """A workload could not be started (bad user, missing program, unsupported driver)."""
