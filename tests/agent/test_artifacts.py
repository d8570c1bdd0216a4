"""ArtifactStore against a real local aiohttp file server: download, verify, unpack, retain."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
import stat
import tarfile
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.artifacts import MANIFEST, ArtifactError, ArtifactStore
from agent.launch import NodeInfo
from agent.paths import DataDir
from agent.runtime.exec import ExecRuntime
from agent.supervisor import Supervisor
from shared.clock import Clock, FakeClock, SystemClock
from shared.protocol import ExecutionState
from shared.spec import Artifact, JobSpec
from tests.agent.factories import PYTHON, TEST_POLICY, assignment, data_dir_writes, job_spec
from tests.helpers import eventually


@dataclass
class FileServer:
    """Serves ``files`` by name and counts the requests for each path."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/files/{name}", self.handle_file)
        app.router.add_get("/truncated/{name}", self.handle_truncated)
        app.router.add_get("/loop", self.handle_loop)
        app.router.add_get("/fail", self.handle_fail)
        return app

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def add(self, name: str, data: bytes, **extra: Any) -> Artifact:
        self.files[name] = data
        return Artifact(url=self.url(f"/files/{name}"), sha256=sha(data), **extra)

    def total(self) -> int:
        return sum(self.hits.values())

    def _count(self, request: web.Request) -> None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1

    async def handle_file(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        data = self.files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data)

    async def handle_truncated(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        data = self.files[request.match_info["name"]]
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.close()  # the connection dies mid-body
        return response

    async def handle_loop(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        raise web.HTTPFound("/loop")

    async def handle_fail(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        raise web.HTTPServiceUnavailable()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None], compression: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_member(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def zip_bytes(
    entries: dict[str, bytes], symlinks: dict[str, str] | None = None, *, deflate: bool = False
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.fixture
async def files(aiohttp_server: Any) -> FileServer:
    fs = FileServer()
    fs.server = await aiohttp_server(fs.app(), host="127.0.0.1")
    return fs


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def store(tmp_path: Path, http: aiohttp.ClientSession) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", http, keep=2)


def leftovers(store: ArtifactStore, job: str) -> list[str]:
    """Everything under the job's artifact dir (empty when nothing was installed)."""
    job_dir = store.root / job
    return sorted(p.name for p in job_dir.iterdir()) if job_dir.is_dir() else []


def files_below(path: Path, pattern: str = "*") -> list[Path]:
    """Every non-directory below ``path`` matching ``pattern`` (recursively for "*")."""
    found = path.rglob(pattern) if pattern == "*" else path.glob(pattern)
    return [p for p in found if not p.is_dir()]


class TestDownload:
    async def test_downloads_verifies_and_installs_with_mode(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """A plain file lands at its dest (or URL basename) in the version dir with its mode."""
        app = files.add("app.sh", b"#!/bin/sh\necho hi\n", mode="0755")
        conf = files.add("conf.txt", b"x=1\n", dest="etc/app.conf")
        path = await store.ensure("web", 1, [app, conf])
        assert path == store.version_dir("web", 1)
        assert (path / "app.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
        assert stat.S_IMODE((path / "app.sh").stat().st_mode) == 0o755
        assert (path / "etc" / "app.conf").read_bytes() == b"x=1\n"
        assert stat.S_IMODE((path / "etc" / "app.conf").stat().st_mode) == 0o644
        assert (path / MANIFEST).is_file()
        assert leftovers(store, "web") == ["1"]

    async def test_sha_mismatch_fails_and_leaves_nothing(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """A checksum mismatch names both hashes, is not transient and installs nothing."""
        files.files["app"] = b"real content"
        wrong = Artifact(url=files.url("/files/app"), sha256=sha(b"expected content"))
        with pytest.raises(ArtifactError) as err:
            await store.ensure("web", 1, [wrong])
        assert "sha256 mismatch" in err.value.message
        assert sha(b"expected content") in err.value.message
        assert sha(b"real content") in err.value.message
        assert not err.value.transient
        assert leftovers(store, "web") == []

    async def test_truncated_download_is_transient_and_leaves_nothing(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """A connection that dies mid-body is a transient failure with no partial install."""
        data = os.urandom(300_000)
        files.files["big"] = data
        artifact = Artifact(url=files.url("/truncated/big"), sha256=sha(data))
        with pytest.raises(ArtifactError) as err:
            await store.ensure("web", 1, [artifact])
        assert err.value.message.startswith("artifact download failed:")
        assert err.value.transient
        assert leftovers(store, "web") == []

    async def test_http_errors_are_classified(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """404 is permanent, 503 transient, a redirect loop permanent after the limit."""
        cases = {"/files/missing": False, "/fail": True, "/loop": False}
        for path, transient in cases.items():
            artifact = Artifact(url=files.url(path), sha256="0" * 64)
            with pytest.raises(ArtifactError) as err:
                await store.ensure("web", 1, [artifact])
            assert err.value.transient is transient, err.value.message
        assert 1 < files.hits["/loop"] <= 6  # followed, but at most max_redirects times

    async def test_size_limit(self, files: FileServer, tmp_path: Path, http: Any) -> None:
        """A download larger than max_bytes is refused."""
        small = ArtifactStore(tmp_path / "small", http, max_bytes=1000)
        artifact = files.add("big", b"x" * 5000)
        with pytest.raises(ArtifactError, match="larger than the limit"):
            await small.ensure("web", 1, [artifact])
        assert leftovers(small, "web") == []


class TestCache:
    async def test_cached_version_needs_no_server(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """A second ensure of an installed version sends no request, even with the server gone."""
        v1 = files.add("app-v1", b"one")
        v2 = files.add("app-v2", b"two")
        await store.ensure("web", 1, [v1])
        await store.ensure("web", 2, [v2])
        assert files.total() == 2
        assert files.server is not None
        await files.server.close()
        path = await store.ensure("web", 1, [v1])  # the rollback
        assert (path / "app-v1").read_bytes() == b"one"
        assert store.downloads == 2

    async def test_concurrent_ensures_download_once(
        self, files: FileServer, store: ArtifactStore, tmp_path: Path, http: Any
    ) -> None:
        """Concurrent ensures of one version (one store, or two on the same dir) all succeed."""
        artifact = files.add("app", os.urandom(200_000))
        other = ArtifactStore(store.root, http, keep=2)
        paths = await asyncio.gather(
            *(store.ensure("web", 1, [artifact]) for _ in range(5)),
            other.ensure("web", 1, [artifact]),
        )
        assert len(set(paths)) == 1
        assert store.downloads == 1
        assert files.total() <= 2
        assert (paths[0] / "app").read_bytes() == files.files["app"]
        assert leftovers(store, "web") == ["1"]

    async def test_incomplete_version_dir_is_rebuilt(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """A version dir without a manifest (or a stale staging dir) is never used as is."""
        artifact = files.add("app", b"good")
        broken = store.version_dir("web", 1)
        broken.mkdir(parents=True)
        (broken / "app").write_bytes(b"half")
        (store.root / "web" / ".tmp-1-deadbeef").mkdir()
        path = await store.ensure("web", 1, [artifact])
        assert (path / "app").read_bytes() == b"good"
        assert leftovers(store, "web") == ["1"]

    async def test_changed_artifact_list_reinstalls(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """A version whose manifest lists other artifacts (a recreated job) is installed anew."""
        await store.ensure("web", 1, [files.add("a", b"a")])
        path = await store.ensure("web", 1, [files.add("b", b"b")])
        assert sorted(p.name for p in path.iterdir()) == [MANIFEST, "b"]


class TestRetention:
    async def test_keeps_the_most_recently_used_versions(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """With keep=2 the two most recently used versions stay, whatever their numbers."""
        arts = {v: [files.add(f"app{v}", f"v{v}".encode())] for v in (1, 2, 3, 4)}
        await store.ensure("web", 1, arts[1])
        await store.ensure("web", 2, arts[2])
        await store.ensure("web", 1, arts[1])  # rolled back to 1: now the most recent
        await store.ensure("web", 3, arts[3])
        assert leftovers(store, "web") == ["1", "3"]
        await store.ensure("web", 4, arts[4])
        assert leftovers(store, "web") == ["3", "4"]
        assert store.versions("web") == [4, 3]

    async def test_protected_versions_are_kept(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """prune never removes a protected (running) version, even beyond keep."""
        store.keep = 3
        for v in (1, 2, 3):
            await store.ensure("web", v, [files.add(f"app{v}", f"v{v}".encode())])
        store.keep = 1
        removed = store.prune("web", protect={1})
        assert sorted(removed) == [2]
        assert leftovers(store, "web") == ["1", "3"]


class TestArchives:
    @pytest.mark.parametrize(
        ("name", "compression"), [("a.tar", ""), ("a.tgz", "gz"), ("a.tar.xz", "xz")]
    )
    async def test_tar_is_unpacked(
        self, files: FileServer, store: ArtifactStore, name: str, compression: str
    ) -> None:
        """Tar archives (plain, gzip, xz) unpack into dest; setuid bits are dropped."""
        data = tar_bytes(
            (file_member("bin/app", 0o4755), b"#!/bin/sh\n"),
            (link_member("current", "bin/app"), None),
            compression=compression,
        )
        path = await store.ensure("web", 1, [files.add(name, data, dest="pkg")])
        app = path / "pkg" / "bin" / "app"
        assert app.read_bytes() == b"#!/bin/sh\n"
        assert stat.S_IMODE(app.stat().st_mode) == 0o755
        assert (path / "pkg" / "current").resolve() == app.resolve()

    async def test_zip_is_unpacked(self, files: FileServer, store: ArtifactStore) -> None:
        """A zip unpacks into the version dir root with its members' modes."""
        data = zip_bytes({"bin/app": b"run", "README": b"hi"}, symlinks={"app": "bin/app"})
        path = await store.ensure("web", 1, [files.add("a.zip", data)])
        assert (path / "bin" / "app").read_bytes() == b"run"
        assert stat.S_IMODE((path / "bin" / "app").stat().st_mode) == 0o755
        assert (path / "app").is_symlink()

    @pytest.mark.parametrize(
        ("name", "data"),
        [
            ("dotdot.tar", tar_bytes((file_member("../evil"), b"x"))),
            ("nested.tar", tar_bytes((file_member("a/../../evil"), b"x"))),
            ("abs.tar", tar_bytes((file_member("/tmp/fleetwave-test-evil"), b"x"))),
            ("symlink.tar", tar_bytes((link_member("link", "../../.."), None))),
            ("abs-link.tar", tar_bytes((link_member("link", "/etc"), None))),
            (
                "via-link.tar",
                tar_bytes((link_member("d", "."), None), (file_member("d/x"), b"x")),
            ),
            ("hardlink.tar", tar_bytes((link_member("h", "../evil", tarfile.LNKTYPE), None))),
            (
                "hardlink-abs.tar",
                tar_bytes((link_member("h", "/etc/passwd", tarfile.LNKTYPE), None)),
            ),
            ("device.tar", tar_bytes((link_member("null", "", tarfile.CHRTYPE), None))),
            ("fifo.tar", tar_bytes((link_member("pipe", "", tarfile.FIFOTYPE), None))),
            ("dotdot.zip", zip_bytes({"../evil": b"x"})),
            ("abs.zip", zip_bytes({"/tmp/fleetwave-test-evil": b"x"})),
            ("symlink.zip", zip_bytes({}, symlinks={"link": "../../outside"})),
            ("not-really.tar.gz", b"this is not a tar archive"),
        ],
    )
    async def test_unsafe_archives_are_rejected(
        self, files: FileServer, store: ArtifactStore, tmp_path: Path, name: str, data: bytes
    ) -> None:
        """Members escaping the version dir (paths, links, devices) reject the whole artifact."""
        with pytest.raises(ArtifactError, match="rejected") as err:
            await store.ensure("web", 1, [files.add(name, data)])
        assert not err.value.transient
        assert leftovers(store, "web") == []
        assert files_below(tmp_path) == []
        assert files_below(Path("/tmp"), "fleetwave-test-evil*") == []

    async def test_the_review_chain_cannot_carry_a_later_artifact_out(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """The zip chain (``a/l1 -> ..`` ... ``out -> l15/tmp``) is refused at ``l2``, so the
        next artifact's ``dest = "out/..."`` never writes in /tmp."""
        name = f"fleetwave-test-evil-{secrets.token_hex(4)}"
        links = {"a/l1": "..", "l2": "a/l1/.."}
        links |= {f"l{n}": f"l{n - 1}/.." for n in range(3, 16)}
        links["out"] = "l15/tmp"
        chain = files.add("chain.zip", zip_bytes({}, symlinks=links))
        payload = files.add("payload", b"pwned", dest=f"out/{name}")
        with pytest.raises(ArtifactError) as err:
            await store.ensure("web", 1, [chain, payload])
        assert err.value.message == (
            f"artifact {chain.url} rejected: member 'l2': symlink to 'a/l1/..' "
            "leads outside the directory"
        )
        assert files_below(Path("/tmp"), name) == []
        assert leftovers(store, "web") == []

    async def test_a_dest_through_an_earlier_artifacts_link_cannot_leave_the_version(
        self, files: FileServer, store: ArtifactStore, tmp_path: Path
    ) -> None:
        """Two zips that are each inside on their own (``m -> y/..``; ``y -> .``) make ``m``
        the parent of the version dir; a later ``dest`` through ``m`` is refused."""
        first = files.add("one.zip", zip_bytes({}, symlinks={"m": "y/.."}))
        second = files.add("two.zip", zip_bytes({}, symlinks={"y": "."}))
        payload = files.add("payload", b"pwned", dest="m/evil")
        with pytest.raises(ArtifactError) as err:
            await store.ensure("web", 1, [first, second, payload])
        assert err.value.message == (
            f"artifact {payload.url} rejected: dest 'm/evil' leads outside the directory"
        )
        assert files_below(store.root / "web") == []
        assert files_below(tmp_path, "evil") == []

    async def test_a_link_turned_outward_by_a_later_artifact_fails_the_version(
        self, files: FileServer, store: ArtifactStore
    ) -> None:
        """No version dir is committed with a link leading out of it, whoever created it."""
        first = files.add("one.zip", zip_bytes({}, symlinks={"m": "y/.."}))
        second = files.add("two.zip", zip_bytes({}, symlinks={"y": "."}))
        with pytest.raises(ArtifactError) as err:
            await store.ensure("web", 1, [first, second])
        assert err.value.message == (
            "artifacts rejected: symlink 'm' -> 'y/..' leads outside the directory"
        )
        assert leftovers(store, "web") == []

    async def test_a_zip_bomb_is_refused_by_the_unpacked_size_cap(
        self, files: FileServer, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """An archive may unpack to 8x the download limit; past that it is refused by name."""
        store = ArtifactStore(tmp_path / "artifacts", http, max_bytes=1000)
        bomb = files.add("bomb.zip", zip_bytes({"zeros": bytes(9000)}, deflate=True))
        assert len(files.files["bomb.zip"]) < 1000
        with pytest.raises(ArtifactError) as err:
            await store.ensure("web", 1, [bomb])
        assert err.value.message == (
            f"artifact {bomb.url} rejected: member 'zeros': unpacked size exceeds "
            "the limit of 8000 bytes"
        )
        assert not err.value.transient


class TestExecution:
    """A Supervisor with the real exec runtime; FakeClock only paces the retry backoff."""

    def supervisor(
        self,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        spec: JobSpec,
        clock: Clock,
        max_members: int = 100_000,
    ) -> Supervisor:
        data_dir = DataDir(tmp_path / "data")
        data_dir.ensure()
        sup = Supervisor(
            assignment(spec),
            node=NodeInfo(node_id="n-1", name="node-1"),
            runtime=ExecRuntime(clock),
            data_dir=data_dir,
            clock=clock,
            http=http,
            on_change=lambda s: None,
            writes=data_dir_writes(data_dir.root, clock),
            policy=TEST_POLICY,
            artifacts=ArtifactStore(data_dir.artifacts, http, max_members=max_members),
            rand=lambda: 1.0,
        )
        sup.start()
        return sup

    async def test_runs_in_the_version_dir(
        self, files: FileServer, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """The workload starts in its version dir with FLEETWAVE_VERSION_DIR naming it."""
        out = tmp_path / "seen.txt"
        script = (
            "import os, pathlib, time\n"
            f"pathlib.Path({str(out)!r}).write_text("
            "os.environ['FLEETWAVE_VERSION_DIR'] + '|' + os.getcwd())\n"
            "time.sleep(60)\n"
        )
        artifact = files.add("app.py", script.encode())
        spec = job_spec(
            command=[PYTHON, "app.py"],
            task={"artifacts": [artifact.model_dump()], "kill_timeout": "2s"},
        )
        sup = self.supervisor(tmp_path, http, spec, SystemClock())
        try:
            await eventually(lambda: out.exists() and "|" in out.read_text())
            version_dir = tmp_path / "data" / "artifacts" / "web" / "1"
            assert out.read_text() == f"{version_dir}|{version_dir}"
            assert sup.state is ExecutionState.HEALTHY
        finally:
            await sup.stop()

    async def test_sha_mismatch_fails_without_starting(
        self, files: FileServer, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A checksum mismatch fails the execution at once with the reason, nothing started."""
        files.files["app.py"] = b"print('tampered')"
        artifact = {"url": files.url("/files/app.py"), "sha256": sha(b"print('original')")}
        spec = job_spec(command=[PYTHON, "app.py"], task={"artifacts": [artifact]})
        sup = self.supervisor(tmp_path, http, spec, FakeClock())
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message.startswith(f"artifact {artifact['url']} sha256 mismatch (expected ")
        assert sup.report().pid is None
        assert files.hits["/files/app.py"] == 1

    async def test_an_unsafe_archive_is_the_failure_reason(
        self, files: FileServer, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """An archive over the member cap fails the execution with the member named."""
        data = zip_bytes({f"f{i}": b"x" for i in range(3)})
        artifact = files.add("many.zip", data)
        spec = job_spec(command=[PYTHON, "f0"], task={"artifacts": [artifact.model_dump()]})
        sup = self.supervisor(tmp_path, http, spec, FakeClock(), max_members=2)
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert sup.message == (
            f"artifact {artifact.url} rejected: member 'f2': the archive has more than 2 members"
        )
        assert sup.report().pid is None

    async def test_transient_failures_are_retried_then_fail(
        self, files: FileServer, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A 503 is retried with backoff (PENDING, reason shown), then fails after 5 tries."""
        clock = FakeClock()
        artifact = {"url": files.url("/fail"), "sha256": "0" * 64}
        spec = job_spec(command=[PYTHON, "app.py"], task={"artifacts": [artifact]})
        sup = self.supervisor(tmp_path, http, spec, clock)
        for attempt in range(1, 5):
            await eventually(lambda: files.hits.get("/fail", 0) == attempt)  # noqa: B023
            await eventually(lambda: f"attempt {attempt};" in sup.message)  # noqa: B023
            assert sup.state is ExecutionState.PENDING
            assert sup.message.startswith("artifact download failed: ")
            clock.advance(30)
        await eventually(lambda: sup.state is ExecutionState.FAILED)
        assert files.hits["/fail"] == 5
        assert "HTTP 503" in sup.message
