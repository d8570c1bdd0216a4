"""A regression guard for the agent's lean imports (docs/agent.md, "Memory").

The agent's entry point is imported in a fresh interpreter, as ``fleetwave-agent`` does before
it parses its flags, and modules the idle agent must not hold are looked for in sys.modules.
This guards what is imported, not how much memory it takes: the figures are measured by
``python -m bench.run quick --only agent`` and reported in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

IMPORT_LIKE_THE_AGENT = """
import json, sys
from agent.__main__ import keep_out_unused_modules
keep_out_unused_modules()
import agent.main, agent.daemon
print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))
"""

KEPT_OUT = {
    "aiohttp": "coordinator calls go through agent/transport.py; aiohttp (13.9 MB) loads at the"
    " first HTTP check or artifact download (agent/outbound.py)",
    "yarl": "comes with aiohttp",
    "rich": "structlog's pretty console tracebacks (3.7 MB with pygments); the agent logs JSON",
    "pygments": "comes with rich",
    "greenlet": "structlog's deprecated thread-local context imports it when installed (1 MB)",
    "aiohttp.web": "the local endpoints run on asyncio streams; aiohttp's server is 2 MB",
    "aiohttp.web_app": "part of aiohttp's server",
    "tarfile": "loaded only when an artifact archive is unpacked",
    "prometheus_client": "agent/exposition.py writes the agent's few metrics (1.5 MB saved)",
    "wsgiref": "came with prometheus_client's exposition servers",
    "http.server": "came with prometheus_client's exposition servers",
}
"""Module -> why an idle agent must not import it."""


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_LIKE_THE_AGENT],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return set(json.loads(out))


class TestLeanImports:
    def test_entry_point_imports_the_agent(self, loaded: set[str]) -> None:
        """The probe really imported the agent (a guard that sees nothing proves nothing)."""
        assert {"agent.main", "agent.daemon", "agent.transport", "structlog", "pydantic"} <= loaded

    @pytest.mark.parametrize("module", sorted(KEPT_OUT))
    def test_heavy_module_not_imported(self, loaded: set[str], module: str) -> None:
        """An idle agent has not imported ``module`` (KEPT_OUT says why)."""
        assert module not in loaded, KEPT_OUT[module]

    def test_other_processes_keep_rich(self) -> None:
        """Importing agent.main alone (tests, tools) leaves rich importable."""
        code = "import agent.main, rich.console; print('ok')"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        )
        assert out.stdout.strip() == "ok"
