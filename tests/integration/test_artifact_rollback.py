"""A job whose program is an artifact: v1, v2, then a rollback to v1 with no artifact server."""

from __future__ import annotations

import functools
import hashlib
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coordinator.demo.fleet import LocalFleet, free_port, wait_for
from tests.integration.conftest import print_logs_on_failure

pytestmark = [pytest.mark.slow, pytest.mark.integration]

APP = """\
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"{version}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def artifact_server(tmp_path: Path) -> Iterator[tuple[ThreadingHTTPServer, Path]]:
    """A real HTTP file server on loopback serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, root
    finally:
        server.shutdown()
        server.server_close()


def publish(root: Path, server: ThreadingHTTPServer, version: str) -> dict[str, str]:
    data = APP.replace("{version}", version).encode()
    (root / f"app-{version}.py").write_bytes(data)
    host, port = server.server_address[:2]
    return {
        "url": f"http://{host!s}:{port}/app-{version}.py",
        "sha256": hashlib.sha256(data).hexdigest(),
        "dest": "app.py",
    }


def spec(artifact: dict[str, str], port: int) -> dict[str, Any]:
    return {
        "name": "web",
        "task": {
            "command": [sys.executable, "app.py", str(port)],
            "artifacts": [artifact],
            "kill_timeout": "3s",
        },
        "health": {
            "checks": [{"type": "http", "url": f"http://127.0.0.1:{port}/", "interval": "200ms"}]
        },
        "rollout": {"min_healthy_time": "300ms", "healthy_deadline": "30s", "canary": 0},
    }


def served(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        return str(resp.read().decode())


def test_rollback_runs_the_cached_artifact_offline(
    fleet: LocalFleet, artifact_server: tuple[ThreadingHTTPServer, Path]
) -> None:
    """v1 and v2 download their artifact; the rollback to v1 runs from the agent's cache."""
    server, root = artifact_server
    port = free_port()
    fleet.start_coordinator()
    fleet.start_agent("n1")
    fleet.wait_nodes_ready(1)
    try:
        fleet.api.request("PUT", "/v1/jobs/web", spec(publish(root, server, "v1"), port))
        fleet.wait_state("web", "running")
        assert served(port) == "v1"
        fleet.api.request("PUT", "/v1/jobs/web", spec(publish(root, server, "v2"), port))
        wait_for(
            "v2 to serve", lambda: fleet.status("web")["version"] == 2 and served(port) == "v2"
        )
        fleet.wait_state("web", "running")

        server.shutdown()
        server.server_close()
        fleet.api.request("POST", "/v1/jobs/web/rollback", {"to_version": 1})
        wait_for("v1 to serve again", lambda: served(port) == "v1", timeout=60)
        status = fleet.wait_state("web", "running")
        assert status["rollout"]["type"] == "rollback"
        versions = fleet.base_dir / "agents" / "n1" / "artifacts" / "web"
        assert sorted(p.name for p in versions.iterdir()) == ["1", "2"]
    except Exception:
        print(print_logs_on_failure(fleet))
        raise
