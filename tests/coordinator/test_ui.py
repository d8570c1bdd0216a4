"""The dashboard's static routes: open, typed, revalidated, and confined to coordinator/ui/."""

from __future__ import annotations

import pytest
from yarl import URL

from coordinator.api.ui import UI_DIR, resolve_asset
from tests.coordinator.conftest import Harness


class TestServing:
    async def test_bare_ui_redirects_to_the_trailing_slash(self, harness: Harness) -> None:
        """``/ui`` redirects to ``/ui/`` so relative asset paths resolve."""
        resp = await harness.client.get("/ui", allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == "/ui/"

    async def test_index_is_open_html(self, harness: Harness) -> None:
        """``/ui/`` serves index.html without a token, as UTF-8 HTML that loads app.js."""
        resp = await harness.client.get("/ui/")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        body = await resp.text()
        assert '<script type="module" src="app.js">' in body
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]

    @pytest.mark.parametrize(
        ("path", "content_type"),
        [
            ("app.js", "text/javascript; charset=utf-8"),
            ("stream.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml; charset=utf-8"),
        ],
    )
    async def test_assets_have_their_content_type(
        self, harness: Harness, path: str, content_type: str
    ) -> None:
        """Each shipped file is served with the content type a browser needs for it."""
        resp = await harness.client.get(f"/ui/{path}")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == content_type
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.read() == (UI_DIR / path).read_bytes()

    async def test_etag_revalidation_answers_304(self, harness: Harness) -> None:
        """Files are revalidated (no-cache) and an unchanged one answers 304 to its ETag."""
        first = await harness.client.get("/ui/app.js")
        etag = first.headers["ETag"]
        assert first.headers["Cache-Control"] == "no-cache"
        again = await harness.client.get("/ui/app.js", headers={"If-None-Match": etag})
        assert again.status == 304
        assert await again.read() == b""

    async def test_every_module_import_is_shipped(self, harness: Harness) -> None:
        """Every ``./x.js`` a module imports is served, so the page never breaks on a 404."""
        for module in sorted(UI_DIR.glob("*.js")):
            for line in module.read_text().splitlines():
                if line.startswith("import ") and ' from "./' in line:
                    name = line.split(' from "./', 1)[1].split('"', 1)[0]
                    resp = await harness.client.get(f"/ui/{name}")
                    assert resp.status == 200, f"{module.name} imports missing {name}"


class TestRefusals:
    async def test_unknown_file_is_404(self, harness: Harness) -> None:
        """A file that does not exist answers 404 with the error body naming it."""
        resp = await harness.client.get("/ui/nope.js")
        assert resp.status == 404
        body = await resp.json()
        assert body["error"]["details"] == {"path": "nope.js"}

    @pytest.mark.parametrize(
        "raw",
        [
            "/ui/..%2fapi%2fui.py",
            "/ui/%2e%2e/%2e%2e/pyproject.toml",
            "/ui/..%2F..%2F..%2Fetc%2Fpasswd",
            "/ui/%2E%2E%5Capp.py",
            "/ui/.%2e/app.py",
            "/ui//etc/passwd",
            "/ui/%2fetc%2fpasswd",
            "/ui/.hidden",
            "/ui/app.js%00.css",
        ],
    )
    async def test_traversal_attempts_are_404(self, harness: Harness, raw: str) -> None:
        """Encoded ``..``, absolute paths, hidden files and NUL bytes all answer 404."""
        resp = await harness.client.get(URL(raw, encoded=True))
        assert resp.status == 404, raw
        assert "error" in await resp.json()

    @pytest.mark.parametrize(
        "relative",
        ["../app.py", "../../pyproject.toml", "/etc/passwd", "a/../../app.py", "", ".", "x\\..\\y"],
    )
    def test_resolve_asset_refuses_paths_outside_the_directory(self, relative: str) -> None:
        """The resolver refuses any name that is not a plain file inside coordinator/ui/."""
        assert resolve_asset(relative) is None

    async def test_api_stays_closed(self, harness: Harness) -> None:
        """Opening /ui does not open the API: /v1 still needs the token."""
        resp = await harness.client.get("/v1/jobs")
        assert resp.status == 401
