"""Safe archive unpacking: every member must stay inside the destination directory.

Runs in a worker thread (blocking IO). An archive with any unsafe member is refused as a
whole before anything of it is written: absolute names, ``..``, links whose target leaves
the directory, members below a symlink, device files and FIFOs. setuid, setgid and sticky
bits are dropped; tar additionally goes through Python's ``data`` extraction filter.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from agent.errors import AgentError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".zip")
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


class UnsafeArchive(AgentError):
    """An archive member would escape the version directory, or is not a plain file."""


def archive_kind(name: str) -> str | None:
    """``"tar"`` or ``"zip"`` when ``name`` ends like an archive we unpack, else None."""
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if any(lower.endswith(suffix) for suffix in ARCHIVE_SUFFIXES):
        return "tar"
    return None


def member_path(name: str) -> str:
    """The normalised relative path of a member; raise UnsafeArchive when it escapes."""
    if "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"member {name!r}: backslashes and NUL are not allowed in names")
    if name.startswith("/"):
        raise UnsafeArchive(f"member {name!r}: absolute path")
    if ".." in name.split("/"):
        raise UnsafeArchive(f"member {name!r}: '..' leaves the directory")
    normal = posixpath.normpath(name)
    return "" if normal == "." else normal


def _check_link(name: str, target: str, *, hard: bool) -> None:
    kind = "hardlink" if hard else "symlink"
    if target.startswith("/"):
        raise UnsafeArchive(f"member {name!r}: {kind} to absolute path {target!r}")
    # A hardlink names another member (archive-relative); a symlink is relative to its dir.
    base = "" if hard else posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../") or (hard and resolved == "."):
        raise UnsafeArchive(f"member {name!r}: {kind} to {target!r} points outside")


def _check_not_below_link(path: str, links: set[str], name: str) -> None:
    parts = path.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise UnsafeArchive(f"member {name!r}: lies below the symlink {'/'.join(parts[:i])!r}")


def _check_tar(members: Iterable[tarfile.TarInfo], limit: int) -> None:
    links: set[str] = set()
    total = 0
    for member in members:
        path = member_path(member.name)
        _check_not_below_link(path, links, member.name)
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise UnsafeArchive(f"member {member.name!r}: device files and FIFOs are not allowed")
        if member.issym():
            _check_link(path, member.linkname, hard=False)
            links.add(path)
        elif member.islnk():
            _check_link(path, member.linkname, hard=True)
            _check_not_below_link(member_path(member.linkname), links, member.name)
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchive(f"member {member.name!r}: unsupported member type")
        total += max(member.size, 0)
        if total > limit:
            raise UnsafeArchive(f"unpacked size exceeds the limit of {limit} bytes")


def _tar_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    checked = tarfile.data_filter(member, dest)
    if checked is not None and checked.mode is not None:
        checked = checked.replace(mode=checked.mode & ~_SPECIAL_BITS, deep=False)
    return checked


def unpack_tar(archive: Path, dest: Path, limit: int) -> None:
    """Unpack a (possibly compressed) tar into ``dest`` after checking every member."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            _check_tar(members, limit)
            tar.extractall(dest, members=members, filter=_tar_filter)  # noqa: S202 - checked
    except tarfile.FilterError as exc:
        raise UnsafeArchive(str(exc)) from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeArchive(f"cannot unpack tar archive: {exc}") from None


def unpack_zip(archive: Path, dest: Path, limit: int) -> None:
    """Unpack a zip into ``dest``; symlink members are created only when they stay inside."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            plan = _check_zip(zf, infos, limit)
            for info, path, kind, target in plan:
                out = dest / path if path else dest
                if kind == "dir":
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                if kind == "link":
                    os.symlink(target, out)
                    continue
                mode = (info.external_attr >> 16) & 0o777 or 0o644
                with zf.open(info) as src, open(out, "xb") as dst:
                    while chunk := src.read(1 << 16):
                        dst.write(chunk)
                os.chmod(out, mode & ~_SPECIAL_BITS & ~0o022)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise UnsafeArchive(f"cannot unpack zip archive: {exc}") from None


def _check_zip(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limit: int
) -> list[tuple[zipfile.ZipInfo, str, str, str]]:
    links: set[str] = set()
    plan: list[tuple[zipfile.ZipInfo, str, str, str]] = []
    total = 0
    for info in infos:
        path = member_path(info.filename.rstrip("/") if info.is_dir() else info.filename)
        _check_not_below_link(path, links, info.filename)
        kind_bits = stat.S_IFMT(info.external_attr >> 16)
        if kind_bits and kind_bits not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
            raise UnsafeArchive(f"member {info.filename!r}: device files and FIFOs are not allowed")
        if kind_bits == stat.S_IFLNK:
            target = zf.read(info).decode("utf-8", "replace")
            _check_link(path, target, hard=False)
            links.add(path)
            plan.append((info, path, "link", target))
            continue
        total += info.file_size
        if total > limit:
            raise UnsafeArchive(f"unpacked size exceeds the limit of {limit} bytes")
        plan.append((info, path, "dir" if info.is_dir() else "file", ""))
    return plan
