"""Nothing an agent or a spec wrote reaches an operator's terminal raw: every answer the CLI
reads is cleaned of control characters (the real app on a real SQLite file, the real CLI)."""

from __future__ import annotations

import pytest

from coordinator.client import terminal_safe
from tests.coordinator.conftest import Harness, web_spec
from tests.coordinator.test_cli_tokens import run

HOSTILE = "boom\x1b[2J\x1b]0;owned\x07\x9b31m\r\nfake: all healthy"


def test_terminal_safe_cleans_every_string_key_and_value() -> None:
    cleaned = terminal_safe({"a\x1b": [HOSTILE, 3, None, {"k": "\x07x"}]})
    assert cleaned == {"a ": ["boom [2J ]0;owned  31m  fake: all healthy", 3, None, {"k": " x"}]}


@pytest.mark.parametrize(
    "args",
    [
        ("job", "status", "web"),
        ("job", "history", "web"),
        ("job", "events", "web"),
        ("rollout", "show", "web"),
        ("node", "show", "a"),
        ("job", "status", "web", "--json"),
        ("job", "events", "web", "--json"),
    ],
)
async def test_agent_and_spec_text_is_cleaned(harness: Harness, args: tuple[str, ...]) -> None:
    _, token = await harness.register("a", port="1")
    spec = web_spec(canary=0, waves=1)
    spec["task"]["env"] = {"NOTE": HOSTILE}
    assert (await harness.put_job(spec)).status == 201
    await harness.report(token, 1, [])
    await harness.driver.step()
    execution = {"job": "web", "version": 1, "state": "failed", "message": HOSTILE}
    await harness.report(token, 2, [execution])
    await harness.driver.step()
    result = await run(harness, *args)
    assert result.exit_code in (0, 1), result.output
    for raw in ("\x1b", "\x07", "\x9b", "\r"):
        assert raw not in result.stdout, (args, raw)
        assert raw not in result.stderr, (args, raw)
