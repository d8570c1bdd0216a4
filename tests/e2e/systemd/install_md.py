"""docs/install.md §7 ("TLS end to end") as data: its fenced blocks in order, split into the
setup and the renewal of the coordinator's certificate, and the config edit its TOML blocks
ask for. The systemd suite runs these blocks as written: the docs say what works."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

from tests.e2e.systemd.machine import REPO

INSTALL_MD = REPO / "docs/install.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """A fenced block of install.md §7; ``target`` is the config file that the text before
    a TOML block tells the operator to put it in."""

    lang: str
    text: str
    target: str | None


def blocks_of(text: str) -> list[Block]:
    """The fenced blocks of ``text``, in order."""
    blocks = []
    start = 0
    for match in FENCE.finditer(text):
        named = re.findall(r"`(/etc/fleetwave/[\w.-]+\.toml)`", text[start : match.start()])
        blocks.append(Block(match[1], match[2], named[-1] if named else None))
        start = match.end()
    return blocks


def tls_section() -> tuple[list[Block], list[Block]]:
    """§7's blocks that set TLS up (steps 1 to 5) and those that renew the coordinator's
    certificate."""
    section = INSTALL_MD.read_text(encoding="utf-8").split("## 7. TLS end to end", 1)[1]
    section = section.split("\n## ", 1)[0]
    setup, found, renewal = section.partition("**Renewing the coordinator's certificate.**")
    assert found, "install.md §7 lost its renewal paragraph"
    return blocks_of(setup), blocks_of(renewal.partition("**Renewing an agent's")[0])


def edit_config(config: str, snippet: str) -> str:
    """``config`` edited as §7 says: ``allow_plain_http`` removed and the snippet's keys set
    (replacing the same top-level keys; tables such as ``[policy]`` stay as they are)."""
    keys = {"allow_plain_http"} | set(tomllib.loads(snippet))
    lines = config.splitlines()
    tables = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    top = [line for line in lines[:tables] if line.partition("=")[0].strip() not in keys]
    edited = "\n".join([*top, *snippet.strip().splitlines(), *lines[tables:]]) + "\n"
    parsed = tomllib.loads(edited)
    assert {key: parsed[key] for key in tomllib.loads(snippet)} == tomllib.loads(snippet)
    assert "allow_plain_http" not in parsed
    return edited
