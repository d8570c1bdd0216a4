"""Cached images for the systemd end-to-end suite: a Debian rootfs and a venv layer on top.

Both live outside the repository (``$FLEETWAVE_E2E_CACHE``, default
``/var/cache/fleetwave-e2e``), are keyed by a hash of what goes into them, are built into a
temporary directory and renamed into place (so a half-built image is never used), and are
guarded by a lock file so concurrent runs build each image once.

- ``rootfs-<hash>``: ``debootstrap --variant=minbase bookworm`` with ``PACKAGES``.
- ``venv-<hash>``: an overlayfs upper directory holding ``/opt/fleetwave``, a venv with the
  project's runtime dependencies (read from pyproject.toml) installed by pip from PyPI.

Each run stacks a fresh upper directory over ``venv`` and ``rootfs`` (see ``Overlay``), so the
cached layers are never written to.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "systemd", "dbus", "curl", "procps")
VENV = "/opt/fleetwave"
IMAGE_FORMAT = 1
"""Bump when the build steps change so old cached images are not reused."""

REPO = Path(__file__).resolve().parents[3]


def cache_dir() -> Path:
    return Path(os.environ.get("FLEETWAVE_E2E_CACHE", "/var/cache/fleetwave-e2e"))


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def rootfs_key() -> str:
    return _digest(IMAGE_FORMAT, SUITE, MIRROR, sorted(PACKAGES))


def project_dependencies() -> list[str]:
    """The runtime dependency list of pyproject.toml (what the venv layer holds)."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return sorted(data["project"]["dependencies"])


def venv_key() -> str:
    return _digest(IMAGE_FORMAT, rootfs_key(), project_dependencies())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: Sequence[str | Path], **kwargs: object) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)  # type: ignore[call-overload]


def _build_once(final: Path, build: object) -> Path:
    """Build ``final`` with ``build(tmpdir)`` unless it exists; atomic and lock-guarded."""
    if final.is_dir():
        return final
    with _locked(final.with_name(final.name + ".lock")):
        if final.is_dir():
            return final  # another run built it while we waited
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            build(tmp)  # type: ignore[operator]
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_rootfs() -> Path:
    """The cached Debian rootfs, built with debootstrap on first use (takes minutes)."""
    return _build_once(cache_dir() / f"rootfs-{rootfs_key()}", _debootstrap)


def _debootstrap(target: Path) -> None:
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            target,
            MIRROR,
        ],
        stdout=subprocess.DEVNULL,
    )
    # A booted container needs a machine id slot and no first-boot wizard; apt caches only
    # take space.
    (target / "etc/machine-id").write_text("")
    shutil.rmtree(target / "var/cache/apt/archives", ignore_errors=True)
    (target / "var/cache/apt/archives/partial").mkdir(parents=True)
    for unit in ("systemd-networkd-wait-online.service", "getty@tty1.service"):
        with contextlib.suppress(FileNotFoundError):
            (target / "etc/systemd/system/getty.target.wants" / unit).unlink()


def ensure_venv_layer(rootfs: Path) -> Path:
    """The cached venv layer (an overlay upper dir holding /opt/fleetwave with the deps)."""
    return _build_once(
        cache_dir() / f"venv-{venv_key()}", lambda tmp: _build_venv_layer(rootfs, tmp)
    )


def _build_venv_layer(rootfs: Path, upper: Path) -> None:
    work = upper.with_name(upper.name + ".work")
    merged = upper.with_name(upper.name + ".merged")
    try:
        with Overlay([rootfs], upper, work, merged), Chroot(merged) as chroot:
            chroot.run(["python3", "-m", "venv", VENV])
            chroot.run([f"{VENV}/bin/pip", "install", "--no-cache-dir", "-q", "--upgrade", "pip"])
            chroot.run(
                [f"{VENV}/bin/pip", "install", "--no-cache-dir", "-q", *project_dependencies()]
            )
    finally:
        for path in (work, merged):
            shutil.rmtree(path, ignore_errors=True)
    # Only /opt/fleetwave belongs to the layer; drop whatever else the chroot touched.
    for entry in upper.iterdir():
        if entry.name != "opt":
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


class Overlay:
    """``mount -t overlay`` of ``lowers`` (first = top) with ``upper`` onto ``merged``."""

    def __init__(self, lowers: Sequence[Path], upper: Path, work: Path, merged: Path) -> None:
        self.lowers = lowers
        self.upper = upper
        self.work = work
        self.merged = merged

    def __enter__(self) -> Path:
        for path in (self.upper, self.work, self.merged):
            path.mkdir(parents=True, exist_ok=True)
        lower = ":".join(str(p) for p in self.lowers)
        options = f"lowerdir={lower},upperdir={self.upper},workdir={self.work}"
        _run(["mount", "-t", "overlay", "overlay", "-o", options, self.merged])
        return self.merged

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.merged)], check=False)


class Chroot:
    """Run commands in a directory tree with /proc, /dev and the host's DNS and CA bundle."""

    MOUNTS = (("proc", "proc", ["-t", "proc"]), ("dev", "/dev", ["--bind"]))

    def __init__(self, root: Path) -> None:
        self.root = root
        self._mounted: list[Path] = []

    def __enter__(self) -> Chroot:
        for target, source, opts in self.MOUNTS:
            path = self.root / target
            _run(["mount", *opts, source, path])
            self._mounted.append(path)
        resolv = self.root / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", resolv)
        # pip verifies PyPI against the host's CA bundle (it may hold a proxy's CA).
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", self.root / "etc/fleetwave-ca.crt")
        return self

    def __exit__(self, *exc: object) -> None:
        for path in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(path)], check=False)
        self._mounted.clear()

    def run(self, cmd: Sequence[str]) -> None:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PIP_CERT": "/etc/fleetwave-ca.crt",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        _run(["chroot", self.root, *cmd], env=env)


BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")
"""pyproject.toml's [build-system] requires; installed once into a cached builder venv."""


def ensure_builder() -> Path:
    """A host venv with the build backend, so each run builds the wheel offline in seconds."""

    def build(target: Path) -> None:
        _run(["python3", "-m", "venv", target])
        _run([target / "bin/pip", "install", "-q", *BUILD_REQUIREMENTS], stdout=subprocess.DEVNULL)

    key = _digest(IMAGE_FORMAT, BUILD_REQUIREMENTS)
    return _build_once(cache_dir() / f"builder-{key}", build)


def build_wheel(out_dir: Path) -> Path:
    """A wheel of the checkout (no dependencies), built on the host from a copy of the
    sources so the shared working tree gets no build/ or egg-info litter."""
    src = out_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("agent", "coordinator", "shared"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    python = ensure_builder() / "bin/python"
    _run(
        [
            python,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            out_dir,
            src,
        ],
        capture_output=True,  # setuptools' deprecation chatter; kept on the error if it fails
    )
    (wheel,) = out_dir.glob("fleetwave-*.whl")
    return wheel


if __name__ == "__main__":
    # `python -m tests.e2e.systemd.images` prebuilds both cached layers.
    root = ensure_rootfs()
    print(root)
    print(ensure_venv_layer(root))
