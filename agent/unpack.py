"""Safe archive unpacking: nothing is written, and no link leads, outside the destination.

Runs in a worker thread (blocking IO). Links are resolved on disk rather than refused,
because real packages carry them (``current -> bin/app``, ``libfoo.so -> libfoo.so.1``).
Checking a link's target as text is what failed before: ``l2 -> a/l1/..`` reads as ``a``,
but once ``a/l1 -> ..`` exists on disk it is the parent of the destination. So every path
the agent writes to, and every link target, goes through :func:`resolve_inside`, which walks
the real filesystem one component at a time and returns a path with no link left in it.
That is safe because the agent is the only writer of a staging tree: what was resolved is
what gets written. Every link an archive created is resolved again once the archive is
unpacked, since a later member can change what an earlier link means (``l -> x/..``, then
``x -> .``).

Refused, with a message naming the member: absolute names and ``..``, a member below a
symlink of the same archive, a symlink or hardlink leading outside, device files and FIFOs,
more than ``max_members`` members, and more than ``max_bytes`` unpacked in total (a bomb).
setuid, setgid and sticky bits are dropped; tar additionally goes through Python's ``data``
extraction filter, which resolves each member on disk as it extracts it.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import AgentError

if TYPE_CHECKING:
    # tarfile and zipfile (with the compression modules behind them) load only when an
    # artifact is unpacked: an idle agent, or one whose jobs have no archive, never needs them.
    import tarfile
    import zipfile

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".zip")
MAX_MEMBERS = 100_000
"""Default cap on the members of one archive (each costs an inode and some memory)."""
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_MAX_LINK_HOPS = 40  # the kernel's own limit (ELOOP)
_MAX_LINK_TARGET = 4096  # PATH_MAX: a zip symlink member's body is its target


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


def resolve_inside(root: Path, rel: str, *, what: str) -> Path:
    """``root/rel`` with every symlink in it resolved on disk: a path with no link left in it.

    Raise UnsafeArchive, starting with ``what``, when resolving leaves ``root`` at any step,
    meets a link to an absolute path, or follows more than 40 links (a loop). Components that
    do not exist yet are kept as they are (they will be created as real directories).
    """
    base = os.path.realpath(root)
    done: list[str] = []
    todo = rel.split("/")
    hops = 0
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if not done:
                raise UnsafeArchive(f"{what} leads outside the directory")
            done.pop()
            continue
        here = os.path.join(base, *done, name)
        if not os.path.islink(here):
            done.append(name)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            raise UnsafeArchive(f"{what}: too many levels of symlinks")
        target = os.readlink(here)
        if target.startswith("/"):
            raise UnsafeArchive(f"{what} goes through a symlink to the absolute path {target!r}")
        todo = target.split("/") + todo
    return Path(base, *done)


def _check_link(name: str, path: str, target: str, *, hard: bool) -> None:
    """The text-only checks of a link member, before anything is written."""
    kind = "hardlink" if hard else "symlink"
    if not target or "\x00" in target:
        raise UnsafeArchive(f"member {name!r}: {kind} with an empty or NUL target")
    if target.startswith("/"):
        raise UnsafeArchive(f"member {name!r}: {kind} to absolute path {target!r}")
    # A hardlink names another member (archive-relative); a symlink is relative to its dir.
    base = "" if hard else posixpath.dirname(path)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../") or (hard and resolved == "."):
        raise UnsafeArchive(f"member {name!r}: {kind} to {target!r} points outside")


def _check_not_below_link(path: str, links: set[str], name: str) -> None:
    parts = path.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise UnsafeArchive(f"member {name!r}: lies below the symlink {'/'.join(parts[:i])!r}")


def _check_links_stay_inside(dest: Path, links: dict[str, tuple[str, str]]) -> None:
    """Resolve every created link again, now that all members exist: ``path -> (name, target)``."""
    for path, (name, target) in links.items():
        resolve_inside(dest, path, what=f"member {name!r}: symlink to {target!r}")


def _count(name: str, seen: int, max_members: int) -> None:
    if seen > max_members:
        raise UnsafeArchive(f"member {name!r}: the archive has more than {max_members} members")


def _too_big(name: str, max_bytes: int) -> UnsafeArchive:
    return UnsafeArchive(f"member {name!r}: unpacked size exceeds the limit of {max_bytes} bytes")


def _scan_tar(tar: tarfile.TarFile, max_bytes: int, max_members: int) -> list[tarfile.TarInfo]:
    """Every member, checked; stops reading at the first one over a cap."""
    members: list[tarfile.TarInfo] = []
    links: set[str] = set()
    total = 0
    while (member := tar.next()) is not None:
        members.append(member)
        _count(member.name, len(members), max_members)
        path = member_path(member.name)
        _check_not_below_link(path, links, member.name)
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise UnsafeArchive(f"member {member.name!r}: device files and FIFOs are not allowed")
        if member.issym():
            _check_link(member.name, path, member.linkname, hard=False)
            links.add(path)
        elif member.islnk():
            _check_link(member.name, path, member.linkname, hard=True)
            _check_not_below_link(member_path(member.linkname), links, member.name)
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchive(f"member {member.name!r}: unsupported member type")
        total += max(member.size, 0)
        if total > max_bytes:
            raise _too_big(member.name, max_bytes)
    return members


def _tar_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    import tarfile  # loaded already by unpack_tar; see the imports above

    checked = tarfile.data_filter(member, dest)
    if checked is not None and checked.mode is not None:
        checked = checked.replace(mode=checked.mode & ~_SPECIAL_BITS, deep=False)
    return checked


def unpack_tar(archive: Path, dest: Path, *, max_bytes: int, max_members: int) -> None:
    """Unpack a (possibly compressed) tar into ``dest`` (a path with no link in it)."""
    import tarfile  # only when an artifact is unpacked (see the imports above)

    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _scan_tar(tar, max_bytes, max_members)
            tar.extractall(dest, members=members, filter=_tar_filter)  # noqa: S202 - checked
        links = {member_path(m.name): (m.name, m.linkname) for m in members if m.issym()}
        _check_links_stay_inside(dest, links)
    except tarfile.FilterError as exc:
        raise UnsafeArchive(str(exc)) from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeArchive(f"cannot unpack tar archive: {exc}") from None


def unpack_zip(archive: Path, dest: Path, *, max_bytes: int, max_members: int) -> None:
    """Unpack a zip into ``dest`` (a path with no link in it), resolving every write on disk."""
    import zipfile  # only when an artifact is unpacked (see the imports above)

    try:
        with zipfile.ZipFile(archive) as zf:
            plan = _scan_zip(zf, max_bytes, max_members)
            links: dict[str, tuple[str, str]] = {}
            written = 0
            for info, path, kind, target in plan:
                name = info.filename
                if kind == "dir":
                    resolve_inside(dest, path, what=f"member {name!r}").mkdir(
                        parents=True, exist_ok=True
                    )
                    continue
                parent = resolve_inside(dest, posixpath.dirname(path), what=f"member {name!r}")
                parent.mkdir(parents=True, exist_ok=True)
                out = parent / posixpath.basename(path)
                if kind == "link":
                    here = posixpath.join(os.path.relpath(parent, os.path.realpath(dest)), target)
                    resolve_inside(dest, here, what=f"member {name!r}: symlink to {target!r}")
                    os.symlink(target, out)
                    links[path] = (name, target)
                    continue
                mode = (info.external_attr >> 16) & 0o777 or 0o644
                # "x" never follows a link at ``out``: an existing entry is an error.
                with zf.open(info) as src, open(out, "xb") as dst:
                    while chunk := src.read(1 << 16):
                        written += len(chunk)
                        if written > max_bytes:
                            raise _too_big(name, max_bytes)
                        dst.write(chunk)
                os.chmod(out, mode & ~_SPECIAL_BITS & ~0o022)
            _check_links_stay_inside(dest, links)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise UnsafeArchive(f"cannot unpack zip archive: {exc}") from None


def _scan_zip(
    zf: zipfile.ZipFile, max_bytes: int, max_members: int
) -> list[tuple[zipfile.ZipInfo, str, str, str]]:
    """``(info, path, "dir"|"file"|"link", link target)`` for every member, all checked."""
    infos = zf.infolist()
    if len(infos) > max_members:
        _count(infos[max_members].filename, len(infos), max_members)
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
            if not path or info.file_size > _MAX_LINK_TARGET:
                raise UnsafeArchive(f"member {info.filename!r}: not a valid symlink")
            target = zf.read(info).decode("utf-8", "replace")
            _check_link(info.filename, path, target, hard=False)
            links.add(path)
            plan.append((info, path, "link", target))
            continue
        total += info.file_size
        if total > max_bytes:
            raise _too_big(info.filename, max_bytes)
        if not path and not info.is_dir():
            raise UnsafeArchive(f"member {info.filename!r}: a file needs a name")
        plan.append((info, path, "dir" if info.is_dir() else "file", ""))
    return plan
