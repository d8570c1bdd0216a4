"""Tests for the persisted node identity and report sequence."""

from __future__ import annotations

import errno
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.identity import Identity, IdentityStore
from agent.paths import DataDir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestIdentityStore:
    def test_round_trip_with_private_modes(self, tmp_path: Path) -> None:
        """The identity is stored 0600 inside a 0700 data dir and loads back equal."""
        data = DataDir(tmp_path / "data")
        data.ensure()
        store = IdentityStore(data.root)
        identity = Identity(node_id="n-1", node_token="tok", name="node-1")
        store.save(identity)
        assert store.load() == identity
        assert mode(data.root) == 0o700
        assert mode(store.path) == 0o600
        assert "tok" not in repr(identity)
        assert [p.name for p in data.root.iterdir() if p.name.startswith(".")] == []

    def test_missing_or_corrupt_is_none(self, tmp_path: Path) -> None:
        """No file, or a corrupt one, means the node has to register."""
        store = IdentityStore(tmp_path)
        assert store.load() is None
        store.path.write_text("{not json")
        assert store.load() is None

    def test_reserved_seq_persists(self, tmp_path: Path) -> None:
        """The reserved seq survives reloads, also across a new identity (whose seqs the
        report loop starts over); an older agent's file (the last seq used) reads the same."""
        store = IdentityStore(tmp_path)
        assert store.load_seq() == 0
        store.save_seq(41)
        assert IdentityStore(tmp_path).load_seq() == 41
        store.save(Identity(node_id="n-2", node_token="t", name="n"))
        assert store.load_seq() == 41
        store.seq_path.write_text('{"last_seq": 7}')
        assert store.load_seq() == 7


class TestNodeKey:
    def test_made_once_and_kept(self, tmp_path: Path) -> None:
        store = IdentityStore(tmp_path)
        key = store.node_key()
        assert len(key) >= 32
        assert store.node_key() == key
        assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600

    def test_an_unreadable_key_is_never_replaced(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A read error (EIO) must not make the agent overwrite its key: the node could
        never renew its name again. It registers with a key for this run only."""
        store = IdentityStore(tmp_path)
        key = store.node_key()
        real_read = Path.read_text

        def failing(path: Path, *args: Any, **kwargs: Any) -> str:
            if path == store.key_path:
                raise OSError(errno.EIO, "Input/output error")
            return real_read(path, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", failing)
        assert store.node_key() != key
        monkeypatch.undo()
        assert store.key_path.read_text().strip() == key
