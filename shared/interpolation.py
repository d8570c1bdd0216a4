"""``${...}`` placeholders in commands, env and check targets, filled in by the agent."""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}")
_NAMES = r"node\.name|node\.id|job\.name|job\.version|node\.label\.[A-Za-z0-9_.\-/]+"
_NAME = re.compile(f"(?:{_NAMES})")

PLACEHOLDERS_BODY = rf"(?:[^$]|\$\$|\$\{{(?:{_NAMES})\}}|\$(?![{{$]))*"
"""Text whose every placeholder is allowed, as a regular expression (ECMA 262 and Python alike):
any character but ``$``, an escaped ``$$``, an allowed ``${name}``, or a ``$`` that starts
neither. ``placeholder_problems(text) == []`` exactly when it matches all of ``text``."""
PLACEHOLDERS_PATTERN = f"^{PLACEHOLDERS_BODY}$"

ALLOWED = "${node.name}, ${node.id}, ${node.label.KEY}, ${job.name}, ${job.version}"


class InterpolationError(ValueError):
    """A placeholder names something that does not exist for this node."""


def placeholder_problems(text: str) -> list[str]:
    """Every placeholder in ``text`` that is not one of the allowed names (``$$`` escapes ``$``)."""
    problems = []
    for match in _TOKEN.finditer(text):
        name = match.group(1)
        if name is not None and not _NAME.fullmatch(name):
            problems.append(f"unknown placeholder ${{{name}}}; allowed: {ALLOWED}")
    if "${" in _TOKEN.sub("", text):
        problems.append("unterminated placeholder '${'")
    return problems


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Replace each ``${name}`` with ``variables[name]``; ``$$`` yields a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in variables:
            raise InterpolationError(f"placeholder ${{{name}}} has no value on this node")
        return variables[name]

    return _TOKEN.sub(replace, text)


def node_variables(
    *, node_id: str, node_name: str, labels: Mapping[str, str], job_name: str, job_version: int
) -> dict[str, str]:
    """The variables a job sees on one node."""
    out = {
        "node.id": node_id,
        "node.name": node_name,
        "job.name": job_name,
        "job.version": str(job_version),
    }
    out.update({f"node.label.{k}": v for k, v in labels.items()})
    return out
