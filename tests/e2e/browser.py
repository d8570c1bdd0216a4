"""Headless Chromium for the dashboard tests: Debian's ``chromium`` through Playwright (no
browser download), and what every dashboard test shares.

Without Chromium or Playwright a dashboard test module is skipped with a message saying what
to install; under CI (``CI=true``) it fails instead, so that a missing browser never passes as
green. Screenshots go to ``$FLEETWAVE_TEST_ARTIFACTS`` (default ``<repo>/.artifacts/``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
UI_TIMEOUT_MS = 60_000


def _missing(message: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def playwright_sync_api() -> ModuleType:
    """``playwright.sync_api`` with its ``expect`` set to the UI timeout; call it at the top of
    a test module (it skips the module, or fails under CI, when the browser is missing)."""
    if not CHROMIUM.exists():
        _missing("needs Chromium at /usr/bin/chromium: install the Debian package `chromium`")
    try:
        sync_api = importlib.import_module("playwright.sync_api")
    except ImportError:
        _missing("needs the Python package `playwright` (pip install -e '.[dev]')")
    sync_api.expect.set_options(timeout=UI_TIMEOUT_MS)
    return sync_api


def artifacts_dir() -> Path:
    path = Path(os.environ.get("FLEETWAVE_TEST_ARTIFACTS") or REPO / ".artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sign_in(page: Any, token: str) -> None:
    """Fill in the sign-in form and send it."""
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in").click()
