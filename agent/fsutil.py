"""Crash-safe file helpers: private directories and atomic writes (tmp + fsync + rename)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it accessible to its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        # Only when it differs: an agent starting on a read-only data dir that is already
        # set up must not fail here.
        os.chmod(path, 0o700)
    return path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file.

    On an error (a full disk) the old file stays and no temp file is left behind.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed or widened the mode
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_problem(st: os.statvfs_result, *, privileged: bool) -> int | None:
    """The errno a new file on a filesystem with these ``statvfs`` figures would fail with:
    EROFS when it is mounted read-only, ENOSPC when no block or inode is left (root may use
    the reserved ones); None when writing may work."""
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    blocks = st.f_bfree if privileged else st.f_bavail
    inodes = st.f_ffree if privileged else st.f_favail
    if blocks == 0 or (st.f_files and inodes == 0):  # f_files 0: no inode limit (btrfs)
        return errno.ENOSPC
    return None


def check_writable(path: Path) -> None:
    """Raise the OSError a write under ``path`` would meet (full, read-only), without
    writing anything."""
    code = write_problem(os.statvfs(path), privileged=os.geteuid() == 0)
    if code is not None:
        raise OSError(code, os.strerror(code), str(path))


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
