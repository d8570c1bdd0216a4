"""The coordinator's composition root: what ``serve`` checks before it creates anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.main import serve
from shared.errors import FleetwaveError, StoreError, ValidationFailed


class TestServeRefusesABadDatabase:
    @pytest.mark.parametrize(
        ("database", "error"),
        [
            ("mysql://db.example/fleetwave", ValidationFailed),
            ("sqlite:///{tmp}/a-file/fleetwave.db", StoreError),
        ],
    )
    async def test_no_token_is_generated_or_printed(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        database: str,
        error: type[FleetwaveError],
    ) -> None:
        """A database the coordinator refuses (an unsupported URL, a file it cannot create)
        stops the start before a token file is written or a token printed."""
        (tmp_path / "a-file").write_text("not a directory")
        data_dir = tmp_path / "data"
        config = CoordinatorConfig(data_dir=data_dir, database=database.format(tmp=tmp_path))
        with pytest.raises(error):
            await serve(config)
        assert sorted(p.name for p in data_dir.iterdir()) == []
        assert "token" not in capsys.readouterr().err
