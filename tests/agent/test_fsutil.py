"""Crash-safe file helpers, and telling from ``statvfs`` alone that a write would fail."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from agent.fsutil import atomic_write, ensure_private_dir, write_problem


def statvfs(
    *,
    bfree: int = 10,
    bavail: int = 5,
    files: int = 100,
    ffree: int = 10,
    favail: int = 5,
    flag: int = 0,
) -> os.statvfs_result:
    return os.statvfs_result((4096, 4096, 1000, bfree, bavail, files, ffree, favail, flag, 255))


class TestWriteProblem:
    @pytest.mark.parametrize(
        ("figures", "privileged", "problem"),
        [
            (statvfs(), False, None),
            (statvfs(flag=os.ST_RDONLY), True, errno.EROFS),  # remounted read-only
            (statvfs(bfree=0, bavail=0), True, errno.ENOSPC),
            (statvfs(bavail=0), False, errno.ENOSPC),  # only the reserved blocks are left
            (statvfs(bavail=0), True, None),  # ... which root may use
            (statvfs(ffree=0, favail=0), True, errno.ENOSPC),  # no inode for a new file
            (statvfs(files=0, ffree=0, favail=0), False, None),  # no inode limit at all
        ],
    )
    def test_table(self, figures: os.statvfs_result, privileged: bool, problem: int | None) -> None:
        """Read-only, or no block or inode left for this user, means a write would fail."""
        assert write_problem(figures, privileged=privileged) == problem


class TestFiles:
    def test_failed_atomic_write_leaves_no_temp_file(self, tmp_path: Path) -> None:
        """A write that cannot replace its file (a directory stands there) cleans up."""
        path = tmp_path / "state.json"
        path.mkdir()
        with pytest.raises(IsADirectoryError):
            atomic_write(path, b"new")
        assert list(tmp_path.iterdir()) == [path]

    def test_private_dir_gets_its_mode(self, tmp_path: Path) -> None:
        """A directory with a wider mode is narrowed to 0700; a new one is made so."""
        wide = tmp_path / "wide"
        wide.mkdir(mode=0o755)
        os.chmod(wide, 0o755)  # noqa: S103 - a wider mode for the helper to narrow
        for path in (ensure_private_dir(wide), ensure_private_dir(tmp_path / "new" / "sub")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700
