"""Reading job spec files: TOML, YAML or JSON, chosen by extension."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml


class SpecFileError(Exception):
    """The file could not be read or parsed; the message says where."""


def load_spec_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        kind = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}.get(suffix, "TOML")
        raise SpecFileError(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise SpecFileError(f"{path} must contain a table/object at the top level")
    return data
