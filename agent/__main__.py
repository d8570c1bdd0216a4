"""``python -m agent`` and the ``fleetwave-agent`` console script: the agent process starts here."""

import sys

UNUSED_MODULES = ("rich", "greenlet")
"""Importable when installed, and of no use to the agent process: rich is there for the
coordinator's CLI, greenlet wherever something else brought it (playwright, gevent)."""


def keep_out_unused_modules() -> None:
    """Make ``import`` of UNUSED_MODULES fail in this process, so nothing loads them.

    structlog imports rich (and pygments with it) for pretty console tracebacks whenever rich
    is installed: 3.7 MB of RSS the agent kept for good. The agent logs JSON under systemd;
    on a terminal its tracebacks are plain text. structlog also imports greenlet, when it is
    installed, for its deprecated thread-local context (1 MB); the agent uses contextvars.
    Only the agent process does this: tests and tools that import ``agent.main`` are not
    affected.
    """
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: import fails


def main() -> None:
    """Start the agent: keep out what it does not use, then run the CLI."""
    keep_out_unused_modules()
    from agent.main import main as run_agent

    run_agent()


if __name__ == "__main__":
    main()
