"""The node's session with the coordinator: identity, registration, index and heartbeat."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial

import structlog

from agent.client import CoordinatorClient, agent_version
from agent.errors import JoinTokenRejected
from agent.host import HostProbe
from agent.identity import Identity, IdentityStore
from agent.launch import NodeInfo
from agent.writes import DataDirWrites
from shared.protocol import RegisterRequest

log = structlog.get_logger("agent.session")

DEFAULT_HEARTBEAT = 10.0


class NodeSession:
    """State the sync and report loops share; registration happens here, one at a time."""

    def __init__(
        self,
        *,
        client: CoordinatorClient,
        store: IdentityStore,
        writes: DataDirWrites,
        name: str,
        labels: Mapping[str, str],
        join_token: str,
        host: HostProbe,
    ) -> None:
        self._client = client
        self._store = store
        self._writes = writes
        self._name = name
        self._labels = dict(labels)
        self._join_token = join_token
        self._host = host
        self._lock = asyncio.Lock()
        self._node_key: str | None = None
        self.identity: Identity | None = store.load()
        if self.identity is not None and self.identity.name != name:
            # The node was renamed: the coordinator knows it by name, so it joins anew.
            log.info("node_renamed", old=self.identity.name, new=name)
            self.identity = None
        self.index = 0
        self.heartbeat_interval = DEFAULT_HEARTBEAT
        self.repoll = asyncio.Event()
        """Set when the assignments should be fetched again at once."""
        self.last_contact: float | None = None
        """Monotonic time a coordinator last answered (None: not since the agent started)."""
        self.offline_since: float | None = None
        """Monotonic time of the first failed call since the last answer; None when online."""
        self.reconnected = asyncio.Event()
        """Set when a coordinator answers again after an outage; cuts other loops' backoff."""

    def mark_contact(self, now: float) -> None:
        """A coordinator answered: if it was an outage, wake every loop to catch up at once."""
        self.last_contact = now
        if self.offline_since is not None:
            log.info("coordinator_reconnected", offline_seconds=round(now - self.offline_since, 3))
            self.offline_since = None
            self.reconnected.set()
            self.repoll.set()

    def mark_unreachable(self, now: float) -> None:
        """No configured coordinator answered; workloads keep running as they are."""
        if self.offline_since is None:
            log.warning("coordinator_unreachable", running_jobs_kept=True)
            self.offline_since = now
        self.reconnected.clear()

    def connected_within(self, now: float, seconds: float) -> bool:
        """Whether a coordinator answered in the last ``seconds``."""
        return self.last_contact is not None and now - self.last_contact <= seconds

    def node_info(self) -> NodeInfo:
        node_id = self.identity.node_id if self.identity else ""
        return NodeInfo(node_id=node_id, name=self._name, labels=self._labels)

    async def ensure_identity(self) -> Identity:
        """The stored identity, registering first when there is none."""
        identity = self.identity
        if identity is not None:
            return identity
        return await self._register(stale=None)

    async def reregister(self, stale: Identity) -> Identity:
        """Register again after ``stale``'s token was rejected (unless another loop already did)."""
        return await self._register(stale=stale)

    async def _register(self, *, stale: Identity | None) -> Identity:
        async with self._lock:
            current = self.identity
            if current is not None and current != stale:
                return current  # someone registered while we waited for the lock
            if not self._join_token:
                raise JoinTokenRejected(
                    "cannot register: no join token configured"
                    " (--join-token, FLEETWAVE_JOIN_TOKEN or join_token_file)"
                )
            if stale is not None:
                log.warning("node_token_rejected", node_id=stale.node_id)
            if self._node_key is None:
                self._node_key = self._store.node_key()
            response = await self._client.register(
                RegisterRequest(
                    join_token=self._join_token,
                    name=self._name,
                    labels=self._labels,
                    resources=self._host.resources(),
                    agent_version=agent_version(),
                    node_key=self._node_key,
                )
            )
            identity = Identity(
                node_id=response.node_id,
                node_token=response.node_token,
                name=self._name,
                status=response.status,
            )
            # Kept in memory when the data dir cannot take it (and written when it can): the
            # node is registered either way, and only an agent restart before then would
            # need to register it again.
            self._writes.attempt("identity", partial(self._store.save, identity))
            self.identity = identity
            self.index = 0
            self.heartbeat_interval = response.heartbeat_interval or DEFAULT_HEARTBEAT
            self.repoll.set()
            log.info(
                "node_registered", node_id=identity.node_id, name=self._name, status=response.status
            )
            if response.status == "pending":
                log.warning(
                    "node_pending_approval",
                    node_id=identity.node_id,
                    hint=f"an operator runs: fleetwave node approve {identity.node_id}",
                )
            return identity

    async def rotate_token(self, current: Identity) -> Identity:
        """Switch to a new node token before the current one expires.

        The new token is written to the data dir before it is used: the coordinator keeps
        the old one valid until the new one is first used, so a crash or a lost answer at
        any point leaves the agent with a token that works."""
        async with self._lock:
            if self.identity is not current:
                return self.identity or current  # registered or rotated meanwhile
            rotation = await self._client.rotate_token(current.node_token)
            identity = current.model_copy(update={"node_token": rotation.node_token})
            if not self._writes.attempt("identity", partial(self._store.save, identity)):
                # Not saved: switching now would leave a restarted agent with a token the
                # switch made invalid. The current one works on; the next report asks again.
                log.warning("node_token_rotation_deferred", node_id=current.node_id)
                return current
            self.identity = identity
            log.info("node_token_rotated", node_id=identity.node_id)
            return identity
