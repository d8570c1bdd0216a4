"""Unpacking real malicious archives: nothing lands, or links, outside the destination."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.unpack import UnsafeArchive, resolve_inside, unpack_tar, unpack_zip

Unpack = Callable[..., None]
UNDER_TMP = f"fleetwave-test-{uuid.uuid4().hex}"
"""A name the chain would create in the real /tmp if it escaped."""


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


def zip_bytes(*members: tuple[str, bytes, int]) -> bytes:
    """Members as ``(name, data, st_mode)``; a symlink's data is its target."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def zfile(name: str, data: bytes = b"x") -> tuple[str, bytes, int]:
    return (name, data, stat.S_IFREG | 0o644)


def zlink(name: str, target: str) -> tuple[str, bytes, int]:
    return (name, target.encode(), stat.S_IFLNK | 0o777)


def chain(link: Callable[[str, str], object], escape_to: str) -> list[object]:
    """The review's chain: ``a/l1 -> ..``, ``l2 -> a/l1/..``, ..., ``out -> l15/<escape_to>``.

    Each link reads as inside on its own; on disk ``l<n>`` is n-1 levels above the
    destination, so ``l15`` is ``/`` from anywhere below /tmp.
    """
    links = [link("a/l1", ".."), link("l2", "a/l1/..")]
    links += [link(f"l{n}", f"l{n - 1}/..") for n in range(3, 16)]
    return [*links, link("out", f"l15/{escape_to}")]


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``(dest, sentinel)``: a destination and an empty directory beside it."""
    dest = tmp_path / "root" / "dest"
    dest.mkdir(parents=True)
    sentinel = tmp_path / "root" / "sentinel"
    sentinel.mkdir()
    return dest, sentinel


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_nothing_outside(dest: Path, sentinel: Path) -> None:
    assert list(sentinel.iterdir()) == []
    assert not Path("/tmp", UNDER_TMP).exists()
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                assert real == str(dest) or real.startswith(f"{dest}/"), (path, real)


def unpack(kind: str, archive: Path, dest: Path, max_bytes: int = 1 << 20) -> None:
    do = unpack_zip if kind == "zip" else unpack_tar
    do(archive, dest, max_bytes=max_bytes, max_members=100)


class TestSymlinks:
    def test_the_review_chain_in_a_zip_is_refused_at_its_first_outward_link(
        self, tmp_path: Path, layout: tuple[Path, Path]
    ) -> None:
        """The zip chain from the review is refused at ``l2``, whose target leaves on disk."""
        dest, sentinel = layout
        data = zip_bytes(*chain(zlink, "tmp"))  # type: ignore[arg-type]
        with pytest.raises(UnsafeArchive, match=r"member 'l2': symlink to 'a/l1/\.\.'"):
            unpack("zip", write(tmp_path, "chain.zip", data), dest)
        assert_nothing_outside(dest, sentinel)

    def test_the_review_chain_in_a_tar_is_refused(
        self, tmp_path: Path, layout: tuple[Path, Path]
    ) -> None:
        """The same chain as a tar is refused at ``l2`` too (the data filter resolves on disk)."""
        dest, sentinel = layout
        members = [(m, None) for m in chain(lambda n, t: tar_member(n, tarfile.SYMTYPE, t), "tmp")]
        data = tar_bytes(*members)  # type: ignore[arg-type]
        with pytest.raises(UnsafeArchive, match="'l2'"):
            unpack("tar", write(tmp_path, "chain.tar", data), dest)
        assert_nothing_outside(dest, sentinel)

    @pytest.mark.parametrize("kind", ["zip", "tar"])
    def test_a_link_turned_outward_by_a_later_member_is_refused(
        self, kind: str, tmp_path: Path, layout: tuple[Path, Path]
    ) -> None:
        """``l -> x/..`` is inside until ``x -> .`` exists; the final re-check names ``l``."""
        dest, sentinel = layout
        if kind == "zip":
            data = zip_bytes(zlink("l", "x/.."), zlink("x", "."))
        else:
            data = tar_bytes(
                (tar_member("l", tarfile.SYMTYPE, "x/.."), None),
                (tar_member("x", tarfile.SYMTYPE, "."), None),
            )
        with pytest.raises(UnsafeArchive, match=r"member 'l': symlink to 'x/\.\.' leads outside"):
            unpack(kind, write(tmp_path, f"a.{kind}", data), dest)
        assert list(sentinel.iterdir()) == []

    @pytest.mark.parametrize("kind", ["zip", "tar"])
    def test_links_that_stay_inside_are_kept(
        self, kind: str, tmp_path: Path, layout: tuple[Path, Path]
    ) -> None:
        """Links within the destination (to a file, to a directory) unpack as links."""
        dest, sentinel = layout
        if kind == "zip":
            data = zip_bytes(
                zfile("bin/app", b"run"), zlink("current", "bin/app"), zlink("b", "bin")
            )
        else:
            data = tar_bytes(
                (tar_member("bin/app"), b"run"),
                (tar_member("current", tarfile.SYMTYPE, "bin/app"), None),
                (tar_member("b", tarfile.SYMTYPE, "bin"), None),
            )
        unpack(kind, write(tmp_path, f"a.{kind}", data), dest)
        assert (dest / "current").is_symlink()
        assert (dest / "current").read_bytes() == b"run"
        assert (dest / "b" / "app").read_bytes() == b"run"
        assert_nothing_outside(dest, sentinel)

    def test_a_zip_member_below_an_existing_outward_link_is_refused(
        self, tmp_path: Path, layout: tuple[Path, Path]
    ) -> None:
        """A link already on disk (another artifact's) is resolved, never followed out."""
        dest, sentinel = layout
        os.symlink("../sentinel", dest / "out")
        data = zip_bytes(zfile("out/evil"))
        with pytest.raises(UnsafeArchive, match="member 'out/evil' leads outside"):
            unpack("zip", write(tmp_path, "a.zip", data), dest)
        assert list(sentinel.iterdir()) == []


class TestRefusedMembers:
    @pytest.mark.parametrize(
        ("kind", "members", "named"),
        [
            ("zip", [zfile("/tmp/" + UNDER_TMP)], f"'/tmp/{UNDER_TMP}': absolute path"),
            ("zip", [zfile("../sentinel/evil")], "'../sentinel/evil': '..' leaves"),
            ("zip", [zfile("a/../../sentinel/evil")], "'a/../../sentinel/evil': '..' leaves"),
            ("zip", [zlink("l", "../sentinel")], "'l': symlink to '../sentinel' points outside"),
            ("zip", [zlink("l", "/tmp")], "'l': symlink to absolute path '/tmp'"),
            ("zip", [zlink("d", "."), zfile("d/x")], "'d/x': lies below the symlink 'd'"),
            (
                "zip",
                [("null", b"", stat.S_IFCHR | 0o666)],
                "'null': device files and FIFOs are not allowed",
            ),
            ("zip", [("p", b"", stat.S_IFIFO | 0o666)], "'p': device files and FIFOs"),
        ],
    )
    def test_zip(
        self,
        kind: str,
        members: list[tuple[str, bytes, int]],
        named: str,
        tmp_path: Path,
        layout: tuple[Path, Path],
    ) -> None:
        """Each unsafe zip member refuses the archive with a message naming the member."""
        dest, sentinel = layout
        with pytest.raises(UnsafeArchive) as err:
            unpack(kind, write(tmp_path, "a.zip", zip_bytes(*members)), dest)
        assert f"member {named}" in err.value.message
        assert_nothing_outside(dest, sentinel)
        assert list(dest.iterdir()) == []  # refused before anything was written

    @pytest.mark.parametrize(
        ("members", "named"),
        [
            ([(tar_member("/tmp/" + UNDER_TMP), b"x")], f"'/tmp/{UNDER_TMP}': absolute path"),
            ([(tar_member("../sentinel/evil"), b"x")], "'../sentinel/evil': '..' leaves"),
            (
                [(tar_member("h", tarfile.LNKTYPE, "../sentinel/f"), None)],
                "'h': hardlink to '../sentinel/f' points outside",
            ),
            (
                [(tar_member("h", tarfile.LNKTYPE, "/etc/passwd"), None)],
                "'h': hardlink to absolute path '/etc/passwd'",
            ),
            (
                [
                    (tar_member("d", tarfile.SYMTYPE, "."), None),
                    (tar_member("h", tarfile.LNKTYPE, "d/f"), None),
                ],
                "'h': lies below the symlink 'd'",
            ),
            (
                [(tar_member("null", tarfile.CHRTYPE), None)],
                "'null': device files and FIFOs are not allowed",
            ),
            ([(tar_member("disk", tarfile.BLKTYPE), None)], "'disk': device files"),
            ([(tar_member("pipe", tarfile.FIFOTYPE), None)], "'pipe': device files"),
        ],
    )
    def test_tar(
        self,
        members: list[tuple[tarfile.TarInfo, bytes | None]],
        named: str,
        tmp_path: Path,
        layout: tuple[Path, Path],
    ) -> None:
        """Each unsafe tar member refuses the archive with a message naming the member."""
        dest, sentinel = layout
        with pytest.raises(UnsafeArchive) as err:
            unpack("tar", write(tmp_path, "a.tar", tar_bytes(*members)), dest)
        assert f"member {named}" in err.value.message
        assert_nothing_outside(dest, sentinel)
        assert list(dest.iterdir()) == []

    def test_a_hardlink_to_a_file_outside_through_an_existing_link_is_refused(
        self, tmp_path: Path, layout: tuple[Path, Path]
    ) -> None:
        """A tar hardlink through a link already on disk is resolved there and refused."""
        dest, sentinel = layout
        (sentinel / "secret").write_text("s")
        os.symlink("../sentinel", dest / "out")
        data = tar_bytes((tar_member("h", tarfile.LNKTYPE, "out/secret"), None))
        with pytest.raises(UnsafeArchive, match="'h'"):
            unpack("tar", write(tmp_path, "a.tar", data), dest)
        assert not (dest / "h").exists()
        assert (sentinel / "secret").stat().st_nlink == 1


class TestBombs:
    @pytest.mark.parametrize("kind", ["zip", "tar"])
    def test_more_than_the_size_cap_is_refused(
        self, kind: str, tmp_path: Path, layout: tuple[Path, Path]
    ) -> None:
        """Members adding up to more than ``max_bytes`` are refused at the member that tips it."""
        dest, _ = layout
        zeros = bytes(6000)
        if kind == "zip":
            data = zip_bytes(zfile("small", zeros), zfile("big", zeros))
            assert len(data) < 1000  # it compresses: a bomb in miniature
        else:
            data = tar_bytes((tar_member("small"), zeros), (tar_member("big"), zeros))
        with pytest.raises(UnsafeArchive) as err:
            unpack(kind, write(tmp_path, f"a.{kind}", data), dest, max_bytes=10_000)
        assert err.value.message == ("member 'big': unpacked size exceeds the limit of 10000 bytes")
        assert list(dest.iterdir()) == []

    @pytest.mark.parametrize("kind", ["zip", "tar"])
    def test_more_than_the_member_cap_is_refused(
        self, kind: str, tmp_path: Path, layout: tuple[Path, Path]
    ) -> None:
        """The member after the ``max_members``-th is named in the error."""
        dest, _ = layout
        if kind == "zip":
            data = zip_bytes(*(zfile(f"f{i}") for i in range(4)))
        else:
            data = tar_bytes(*((tar_member(f"f{i}"), b"x") for i in range(4)))
        do = unpack_zip if kind == "zip" else unpack_tar
        with pytest.raises(UnsafeArchive) as err:
            do(write(tmp_path, f"a.{kind}", data), dest, max_bytes=1 << 20, max_members=3)
        assert err.value.message == "member 'f3': the archive has more than 3 members"
        assert list(dest.iterdir()) == []


class TestResolveInside:
    def test_missing_components_are_kept_and_links_resolved(self, tmp_path: Path) -> None:
        """A path through an inside link comes back with the link resolved away."""
        (tmp_path / "real").mkdir()
        os.symlink("real", tmp_path / "l")
        got = resolve_inside(tmp_path, "l/new/file", what="x")
        assert got == tmp_path.resolve() / "real" / "new" / "file"

    def test_a_loop_is_refused(self, tmp_path: Path) -> None:
        """A link loop is an error, not a hang."""
        os.symlink("b", tmp_path / "a")
        os.symlink("a", tmp_path / "b")
        with pytest.raises(UnsafeArchive, match="dest 'a/x': too many levels of symlinks"):
            resolve_inside(tmp_path, "a/x", what="dest 'a/x'")

    def test_an_absolute_link_is_refused(self, tmp_path: Path) -> None:
        """A link to an absolute path is never followed, even one that points inside."""
        os.symlink(str(tmp_path), tmp_path / "abs")
        with pytest.raises(UnsafeArchive, match="absolute path"):
            resolve_inside(tmp_path, "abs/x", what="dest 'abs/x'")
