"""Node and token decisions: registration renewal, token rotation, join-token use and
liveness, as pure functions of the stored records. Stores call them inside their write
transaction, on the latest committed state, and persist what they return."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from coordinator.domain.records import Event, NodeRecord, TokenRecord
from shared.errors import Conflict, Unauthorized
from shared.nodes import Eligibility, NodeStatus, Resources


class NameTaken(Conflict):
    """A node name is held by another node (names belong to their node, whatever its status)."""

    def __init__(self, name: str, holder: NodeRecord) -> None:
        status = holder.api_status.value
        hint = (
            f"purge it first (fleetwave node purge {holder.id}) to reuse the name"
            if status in ("down", "revoked")
            else "pick another name, or stop that agent and purge the node first"
        )
        super().__init__(
            f"node name {name!r} belongs to node {holder.id} (status {status}); {hint}",
            {"name": name, "node_id": holder.id, "status": status},
        )
        self.holder = holder


def check_name_free(name: str, holders: Iterable[NodeRecord]) -> None:
    """Raise NameTaken if any stored node holds ``name``."""
    for holder in holders:
        if holder.name == name:
            raise NameTaken(name, holder)


def renewed(
    current: NodeRecord | None,
    *,
    token_hash: str,
    labels: dict[str, str],
    resources: Resources,
    agent_version: str,
    issued_at: datetime,
    expires_at: datetime | None,
) -> NodeRecord | None:
    """The node registered again by the agent holding its key: a new token and what the
    agent registered with now. None (nothing to write) when it is gone or revoked."""
    if current is None or current.revoked_at is not None:
        return None
    return current.model_copy(
        update={
            "token_hash": token_hash,
            "token_issued_at": issued_at,
            "token_expires_at": expires_at,
            "next_token_hash": "",
            "next_token_expires_at": None,
            "labels": labels,
            "resources": resources,
            "agent_version": agent_version,
        }
    )


def token_offered(node: NodeRecord, token_hash: str, expires_at: datetime | None) -> NodeRecord:
    """A rotated token is offered; the current one stays valid until the new one is used."""
    return node.model_copy(
        update={"next_token_hash": token_hash, "next_token_expires_at": expires_at}
    )


def token_promoted(node: NodeRecord, token_hash: str, now: datetime) -> NodeRecord | None:
    """The offered token was used: it becomes the node's only token. None when there is
    nothing to change (promoted already: two requests with the new token at once)."""
    if node.next_token_hash != token_hash:
        return None
    return node.model_copy(
        update={
            "token_hash": token_hash,
            "token_issued_at": now,
            "token_expires_at": node.next_token_expires_at,
            "next_token_hash": "",
            "next_token_expires_at": None,
        }
    )


def revoked(node: NodeRecord, now: datetime) -> NodeRecord | None:
    """The node revoked at ``now``; None when it already is (the first revocation stands)."""
    return node.model_copy(update={"revoked_at": now}) if node.revoked_at is None else None


def rescheduled(
    node: NodeRecord, *, eligibility: Eligibility | None = None, drain: bool | None = None
) -> NodeRecord:
    update: dict[str, object] = {}
    if eligibility is not None:
        update["eligibility"] = eligibility
    if drain is not None:
        update["drain"] = drain
    return node.model_copy(update=update)


def join_token_used(token: TokenRecord | None) -> TokenRecord:
    """The join token with one more use counted; Unauthorized when it cannot enroll now
    (unknown, revoked, or used up)."""
    if token is None or token.revoked_at is not None:
        raise Unauthorized("invalid join token")
    if token.max_uses is not None and token.uses >= token.max_uses:
        raise Unauthorized(
            f"join token {token.name!r} is used up ({token.uses} of {token.max_uses} uses)"
        )
    return token.model_copy(update={"uses": token.uses + 1})


def token_usable(token: TokenRecord, now: datetime) -> bool:
    """Not revoked and not expired at ``now``."""
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > now)


def check_token_name_free(token: TokenRecord, others: Iterable[TokenRecord]) -> None:
    """Conflict when a usable token already has ``token``'s name."""
    for other in others:
        if other.name == token.name and token_usable(other, token.created_at):
            raise Conflict(
                f"a token named {token.name!r} exists ({other.id}); revoke it first"
                " or pick another name",
                {"name": token.name, "token_id": other.id},
            )


def token_revoked(token: TokenRecord, now: datetime) -> TokenRecord | None:
    """The token revoked at ``now``; None when it already was."""
    return token.model_copy(update={"revoked_at": now}) if token.revoked_at is None else None


@dataclass(frozen=True)
class Lost:
    """A node the coordinator has not heard from for the TTL: mark it down, with its event."""

    node: NodeRecord
    event: Event


def lost_nodes(
    nodes: Iterable[NodeRecord],
    now: datetime,
    ttl: Callable[[str], timedelta],
    heard_since: Callable[[datetime], datetime],
) -> list[Lost]:
    """The nodes to mark ``down``: silent for more than their ``ttl(node_id)`` of observed
    time (it follows the heartbeat interval the node may be using, coordinator/heartbeats.py).

    ``heard_since(last)`` is the moment from which silence counts for a node last heard at
    ``last``: the later of ``last`` and the start of the coordinator's own observation (its
    start, the end of a pause of its process, or the moment it became leader). No node is
    lost for silence nobody could have heard.
    """
    lost = []
    for node in nodes:
        if node.status == NodeStatus.DOWN or node.revoked_at is not None:
            continue
        last = max(node.last_heartbeat, node.registered_at)
        if now - heard_since(last) > ttl(node.id):
            lost.append(
                Lost(
                    node,
                    Event(
                        time=now,
                        node=node.id,
                        kind="node_status",
                        old=node.status.value,
                        new=NodeStatus.DOWN.value,
                        reason=f"no heartbeat for {int((now - last).total_seconds())}s",
                    ),
                )
            )
    return lost
