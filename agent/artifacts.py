"""Artifacts: download, verify by sha256 and install each job version's files atomically.

Layout under ``<data-dir>/artifacts``::

    <job>/<version>/                  the version dir (complete: holds MANIFEST)
    <job>/<version>/.fleetwave-manifest.json
    <job>/.tmp-<version>-<random>/    a version being built; renamed into place when complete

A version dir is only ever created by renaming a fully built and verified staging dir,
and it is only used when its manifest lists exactly the wanted artifacts, so a crash in
the middle of an install never leaves something that is used later. The manifest's mtime
records when the version was last used; ``keep`` most recently used versions per job stay
on disk, so a rollback to one of them needs no network at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import structlog

from agent.errors import AgentError
from agent.unpack import (
    MAX_MEMBERS,
    UnsafeArchive,
    archive_kind,
    member_path,
    resolve_inside,
    unpack_tar,
    unpack_zip,
)
from shared.spec import Artifact

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger("agent.artifacts")

MANIFEST = ".fleetwave-manifest.json"
CHUNK = 1 << 16
UNPACK_FACTOR = 8
"""An archive may unpack to at most this many times the download size limit."""


class ArtifactError(AgentError):
    """An artifact could not be made available; ``transient`` errors are worth retrying."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def artifact_filename(artifact: Artifact) -> str:
    """The last segment of the URL's path (``dest = ""`` installs the file under this name)."""
    name = posixpath.basename(unquote(urlsplit(artifact.url).path))
    return name or "artifact"


def _wanted(artifacts: Sequence[Artifact]) -> list[dict[str, str]]:
    return [a.model_dump(mode="json") for a in artifacts]


def remove_tree(path: Path) -> None:
    """Delete ``path`` even when an archive left read-only directories in it."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            sub = os.path.join(dirpath, name)
            if not os.path.islink(sub):
                with contextlib.suppress(OSError):
                    os.chmod(sub, stat.S_IRWXU)
    with contextlib.suppress(OSError):
        os.chmod(path, stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)


class ArtifactStore:
    """Per-job, per-version artifact directories; ``ensure`` is safe to call concurrently."""

    def __init__(
        self,
        root: Path,
        http: aiohttp.ClientSession,
        *,
        keep: int = 3,
        max_bytes: int = 1 << 30,
        max_members: int = MAX_MEMBERS,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        total_timeout: float = 1800.0,
        max_redirects: int = 5,
    ) -> None:
        self.root = root
        self._http = http
        self.keep = keep
        self.max_bytes = max_bytes
        self.max_members = max_members
        self._timeouts = (total_timeout, connect_timeout, read_timeout)
        self._max_redirects = max_redirects
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._busy: set[tuple[str, int]] = set()
        self.downloads = 0
        """Artifacts downloaded by this store (a cache hit downloads nothing)."""

    def version_dir(self, job: str, version: int) -> Path:
        return self.root / job / str(version)

    def is_installed(self, job: str, version: int, artifacts: Sequence[Artifact]) -> bool:
        """Whether a complete install of exactly ``artifacts`` exists for the version."""
        try:
            data = json.loads((self.version_dir(job, version) / MANIFEST).read_bytes())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("artifacts") == _wanted(artifacts)

    def versions(self, job: str) -> list[int]:
        """Versions with a complete install, most recently used first."""
        found: list[tuple[int, int]] = []
        job_dir = self.root / job
        if not job_dir.is_dir():
            return []
        for entry in job_dir.iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    found.append(((entry / MANIFEST).stat().st_mtime_ns, int(entry.name)))
        return [version for _, version in sorted(found, reverse=True)]

    async def ensure(self, job: str, version: int, artifacts: Sequence[Artifact]) -> Path:
        """The version dir with every artifact verified in place, downloading what is missing.

        Raises ArtifactError; nothing partial stays behind. A cached version is used
        without any network access.
        """
        key = (job, version)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._busy.add(key)
            try:
                final = self.version_dir(job, version)
                if self.is_installed(job, version, artifacts):
                    try:
                        os.utime(final / MANIFEST)  # marks it used, for pruning
                    except OSError as exc:
                        # A full or read-only data dir must not stop a cached version from
                        # starting; only the pruning order becomes less exact.
                        log.debug("artifacts_touch_failed", job=job, error=str(exc))
                    log.debug("artifacts_cached", job=job, version=version)
                else:
                    await self._install(job, version, artifacts)
            finally:
                self._busy.discard(key)
        self.prune(job, protect={version})
        return final

    def prune(self, job: str, protect: Collection[int] = ()) -> list[int]:
        """Remove all but the ``keep`` most recently used versions (never ``protect``ed ones).

        Also removes staging dirs and incomplete versions that no install is working on.
        """
        job_dir = self.root / job
        if not job_dir.is_dir():
            return []
        for entry in job_dir.iterdir():
            if self._is_leftover(job, entry):
                remove_tree(entry)
        kept = 0
        removed: list[int] = []
        for version in self.versions(job):
            if version in protect or (job, version) in self._busy or kept < self.keep:
                kept += 1
                continue
            remove_tree(self.version_dir(job, version))
            removed.append(version)
        if removed:
            log.info("artifacts_pruned", job=job, versions=removed, keep=self.keep)
        return removed

    def _is_leftover(self, job: str, entry: Path) -> bool:
        """A staging dir or incomplete version dir that no install is working on."""
        staging = _parse_staging(entry.name)
        if staging is not None:
            if entry in _STAGING_IN_USE:
                return False  # being built right now by a store of this process
            version, pid = staging
            if pid != os.getpid() and _process_exists(pid):
                return False  # another agent process is installing (a shared data dir)
        elif entry.name.isdigit() and not (entry / MANIFEST).exists():
            version = int(entry.name)
        else:
            return False
        return (job, version) not in self._busy

    async def _install(self, job: str, version: int, artifacts: Sequence[Artifact]) -> None:
        job_dir = self.root / job
        job_dir.mkdir(parents=True, exist_ok=True)
        staging = job_dir / f".tmp-{version}-{os.getpid()}-{secrets.token_hex(4)}"
        tree = staging / "tree"
        _STAGING_IN_USE.add(staging)
        tree.mkdir(parents=True, mode=0o755)
        os.chmod(tree, 0o755)  # noqa: S103 - workloads (maybe another user) read their files
        try:
            for i, artifact in enumerate(artifacts):
                download = staging / f"download-{i}"
                await self._download(artifact, download)
                await asyncio.to_thread(self._place, artifact, download, tree)
            await asyncio.to_thread(_check_no_link_leaves, tree)
            manifest = {"job": job, "version": version, "artifacts": _wanted(artifacts)}
            (tree / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            await asyncio.to_thread(self._commit, tree, self.version_dir(job, version))
            log.info("artifacts_installed", job=job, version=version, count=len(artifacts))
        finally:
            await asyncio.to_thread(remove_tree, staging)
            _STAGING_IN_USE.discard(staging)

    async def _download(self, artifact: Artifact, path: Path) -> None:
        import aiohttp  # loaded by the first download (agent/outbound.py)

        url = artifact.url
        digest = hashlib.sha256()
        size = 0
        total, connect, read = self._timeouts
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)
        try:
            async with self._http.get(
                url, timeout=timeout, max_redirects=self._max_redirects
            ) as resp:
                if resp.status >= 400:
                    raise ArtifactError(
                        f"artifact download failed: {url}: HTTP {resp.status}",
                        transient=resp.status >= 500 or resp.status in (408, 429),
                    )
                if resp.content_length is not None and resp.content_length > self.max_bytes:
                    raise self._too_large(url)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise self._too_large(url)
                        digest.update(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                    await asyncio.to_thread(os.fsync, fd)
                finally:
                    os.close(fd)
        except aiohttp.TooManyRedirects:
            raise ArtifactError(
                f"artifact download failed: {url}: more than {self._max_redirects} redirects",
                transient=False,
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise ArtifactError(
                f"artifact download failed: {url}: incomplete transfer ({exc})", transient=True
            ) from None
        except TimeoutError:
            raise ArtifactError(
                f"artifact download failed: {url}: timed out", transient=True
            ) from None
        except aiohttp.ClientError as exc:
            raise ArtifactError(
                f"artifact download failed: {url}: {exc or type(exc).__name__}", transient=True
            ) from None
        self.downloads += 1
        got = digest.hexdigest()
        if got != artifact.sha256:
            raise ArtifactError(
                f"artifact {url} sha256 mismatch (expected {artifact.sha256}, got {got})",
                transient=False,
            )

    def _too_large(self, url: str) -> ArtifactError:
        return ArtifactError(
            f"artifact download failed: {url}: larger than the limit of {self.max_bytes} bytes",
            transient=False,
        )

    def _place(self, artifact: Artifact, download: Path, tree: Path) -> None:
        """Move a verified download into ``tree``: unpack an archive, else set its mode.

        ``dest`` is resolved on disk inside ``tree``, so it cannot go through a link an
        earlier artifact of the version created to leave it.
        """
        filename = artifact_filename(artifact)
        kind = archive_kind(filename)
        try:
            dest = member_path(artifact.dest.rstrip("/")) if artifact.dest else ""
        except UnsafeArchive:
            raise ArtifactError(f"artifact {artifact.url}: bad dest", transient=False) from None
        try:
            if kind is not None:
                target = resolve_inside(tree, dest, what=f"dest {artifact.dest!r}")
                target.mkdir(parents=True, exist_ok=True)
                unpack = unpack_zip if kind == "zip" else unpack_tar
                unpack(
                    download,
                    target,
                    max_bytes=self.max_bytes * UNPACK_FACTOR,
                    max_members=self.max_members,
                )
                return
            if not dest or artifact.dest.endswith("/"):
                dest = posixpath.join(dest, filename) if dest else filename
            parent = resolve_inside(tree, posixpath.dirname(dest), what=f"dest {artifact.dest!r}")
            target = parent / posixpath.basename(dest)
            if target.exists() or target.is_symlink():
                raise ArtifactError(
                    f"artifact {artifact.url}: dest {dest!r} is already taken by another artifact",
                    transient=False,
                )
            parent.mkdir(parents=True, exist_ok=True)
            os.replace(download, target)
            os.chmod(target, int(artifact.mode, 8) & 0o777)
        except UnsafeArchive as exc:
            raise ArtifactError(
                f"artifact {artifact.url} rejected: {exc.message}", transient=False
            ) from None
        except OSError as exc:
            raise ArtifactError(
                f"artifact {artifact.url}: cannot install: {exc}", transient=False
            ) from None

    def _commit(self, tree: Path, final: Path) -> None:
        """Rename the built ``tree`` to ``final`` (replacing an incomplete or stale one)."""
        _fsync_tree(tree)
        if final.exists():
            if _same_manifest(tree, final):
                return  # another agent process installed the same version meanwhile
            aside = final.with_name(f".tmp-{final.name}-old-{secrets.token_hex(4)}")
            os.rename(final, aside)
            remove_tree(aside)
        try:
            os.rename(tree, final)
        except OSError:
            if not _same_manifest(tree, final):
                raise
            return
        _fsync_dir(final.parent)


_STAGING_IN_USE: set[Path] = set()
"""Staging dirs an install in this process is building; never swept as leftovers."""


def _check_no_link_leaves(tree: Path) -> None:
    """Raise ArtifactError when a link in the built tree leads outside it.

    Each archive checks its own links; this catches one artifact's link that a later
    artifact's link turned outward (``m -> y/..`` first, then ``y -> .``), so a committed
    version dir never holds a link that the agent (root) could follow out of it.
    """
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                rel = os.path.relpath(path, tree)
                try:
                    resolve_inside(tree, rel, what=f"symlink {rel!r} -> {os.readlink(path)!r}")
                except UnsafeArchive as exc:
                    raise ArtifactError(
                        f"artifacts rejected: {exc.message}", transient=False
                    ) from None


def _same_manifest(a: Path, b: Path) -> bool:
    try:
        return (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes()
    except OSError:
        return False


def _parse_staging(name: str) -> tuple[int, int] | None:
    """(version, pid) of a staging dir ``.tmp-<version>-<pid>-<random>``; pid 0 if unknown."""
    if not name.startswith(".tmp-"):
        return None
    parts = name[len(".tmp-") :].split("-")
    if not parts[0].isdigit():
        return None
    pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
    return int(parts[0]), pid


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(root: Path) -> None:
    # Contents first, then the directory entries, so the rename publishes durable files.
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        with contextlib.suppress(OSError):
            _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
