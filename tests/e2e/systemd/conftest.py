"""Fixtures for the end-to-end suite under a real systemd (a booted systemd-nspawn container).

- ``systemd_images`` (session): the cached rootfs and venv layers plus this run's install layer
  (the checkout's wheel, the repository's unit files and config); skips the suite, saying why,
  only where this machine cannot boot a container at all.
- ``systemd_host`` (function): a freshly booted container with both units enabled; see
  ``SystemdHost`` for ``run``, ``sh``, ``systemctl``, ``show``, ``journal``, ``api``,
  ``wait_until``. Always torn down, also when the test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.systemd.images import (
    Overlay,
    build_wheel,
    ensure_rootfs,
    ensure_venv_layer,
)
from tests.e2e.systemd.machine import SystemdHost, build_install_layer, run_dir

NSPAWN_PROBE = ("systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--private-network")
REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "chroot", "mount")


def cannot_boot_reason() -> str | None:
    """Why this machine cannot boot a systemd-nspawn container, or None if it can.

    Only facts of the machine count here (not root, tools missing, no overlayfs, nspawn
    refusing to start); a container that starts but misbehaves is a test failure instead.
    """
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"missing tools: {', '.join(missing)} (apt-get install systemd-container debootstrap)"
        )
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs (needed to keep the cached rootfs clean)"
    return None


def _probe_nspawn(lowers: list[Path]) -> str | None:
    """Start nspawn once without --boot on a throwaway overlay; its error if it cannot."""
    base = run_dir() / f"probe-{uuid.uuid4().hex[:8]}"
    overlay = Overlay(lowers, base / "upper", base / "work", base / "root")
    try:
        root = overlay.__enter__()
        result = subprocess.run(
            [*NSPAWN_PROBE, f"--directory={root}", "/bin/true"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            return f"systemd-nspawn cannot start a container here: {result.stderr.strip()}"
        return None
    finally:
        overlay.__exit__()
        shutil.rmtree(base, ignore_errors=True)


STALE_AFTER = 3 * 3600
"""Seconds after which a run dir is a leftover of a killed test run (no run takes this long)."""


def sweep_stale_runs(now: float | None = None) -> None:
    """Unmount and remove what a test run killed with SIGKILL left under the runs dir."""
    now = time.time() if now is None else now
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for entry in run_dir().iterdir():
        try:
            if now - entry.stat().st_mtime < STALE_AFTER:
                continue
        except OSError:
            continue
        for target in sorted((m for m in mounts if m.startswith(f"{entry}/")), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        shutil.rmtree(entry, ignore_errors=True)


@pytest.fixture(scope="session")
def systemd_images() -> Iterator[list[Path]]:
    """The lower layers every container of this session boots from, top first."""
    reason = cannot_boot_reason()
    if reason:
        pytest.skip(f"cannot boot a systemd container here: {reason}")
    sweep_stale_runs()
    rootfs = ensure_rootfs()
    venv = ensure_venv_layer(rootfs)
    reason = _probe_nspawn([venv, rootfs])
    if reason:
        pytest.skip(reason)
    session = Path(tempfile.mkdtemp(prefix="session-", dir=run_dir()))
    try:
        wheel = build_wheel(session / "wheel")
        install = build_install_layer([venv, rootfs], wheel, session / "install")
        yield [install, venv, rootfs]
    finally:
        shutil.rmtree(session, ignore_errors=True)


@pytest.fixture
def systemd_host(systemd_images: list[Path]) -> Iterator[SystemdHost]:
    """A booted container running fleetwave-coordinator and fleetwave-agent under systemd."""
    with SystemdHost(systemd_images) as host:
        yield host
