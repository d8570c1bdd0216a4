"""The agent's side of node token rotation: the new token is used only once it is saved.
The coordinator client is a stand-in (our own seam); the identity store is the real one on a
real data dir."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from agent.identity import Identity, IdentityStore
from agent.session import NodeSession
from shared.protocol import TokenRotation
from tests.agent.factories import data_dir_writes


class RotatingClient:
    """Answers ``rotate_token`` with a new token each time."""

    def __init__(self) -> None:
        self.rotations = 0

    async def rotate_token(self, token: str) -> TokenRotation:
        self.rotations += 1
        return TokenRotation(node_token=f"fwn_rotated-{self.rotations}")


def session(tmp_path: Path, store: IdentityStore, client: RotatingClient) -> NodeSession:
    store.save(Identity(node_id="n1", node_token="fwn_first", name="web-1"))
    return NodeSession(
        client=client,  # type: ignore[arg-type]
        store=store,
        writes=data_dir_writes(tmp_path),
        name="web-1",
        labels={},
        join_token="fwj_x",
        host=None,  # type: ignore[arg-type]
    )


async def test_the_new_token_is_saved_before_it_is_used(tmp_path: Path) -> None:
    store, client = IdentityStore(tmp_path), RotatingClient()
    node = session(tmp_path, store, client)
    assert node.identity is not None
    rotated = await node.rotate_token(node.identity)
    assert rotated.node_token == "fwn_rotated-1"
    assert node.identity == rotated
    saved = store.load()
    assert saved is not None
    assert saved.node_token == "fwn_rotated-1"


async def test_a_token_that_cannot_be_saved_is_not_used(tmp_path: Path) -> None:
    """With an unwritable data dir the agent keeps its current token (valid until the new
    one is first used), so a restart never finds a token the switch made invalid."""
    store, client = IdentityStore(tmp_path), RotatingClient()
    node = session(tmp_path, store, client)
    first = node.identity
    assert first is not None

    def full_disk(identity: Identity, *args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store.save = full_disk  # type: ignore[method-assign]
    kept = await node.rotate_token(first)
    assert kept == first
    assert node.identity == first
    assert client.rotations == 1
