"""Helpers for tests of /metrics: lint with promtool, parse with prometheus_client's parser."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families


def promtool_check(text: str) -> None:
    """Fail unless ``promtool check metrics`` accepts ``text`` without a lint problem."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing: install the Debian package `prometheus`")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"promtool check metrics: {problems}"
    assert not problems, problems


@dataclass(frozen=True)
class Exposition:
    """Parsed exposition text: each family's type and help, and every sample."""

    types: dict[str, str]
    helps: dict[str, str]
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample ``name`` whose labels include ``labels``."""
        found = [v for n, ls, v in self.samples if n == name and labels.items() <= ls.items()]
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
        return found[0] if found else None

    def label_values(self, name: str, label: str) -> set[str]:
        return {ls[label] for n, ls, _ in self.samples if n == name and label in ls}


def parse(text: str) -> Exposition:
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        helps[family.name] = family.documentation
        samples += [(s.name, dict(s.labels), s.value) for s in family.samples]
    return Exposition(types, helps, samples)
