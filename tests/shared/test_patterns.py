"""The patterns the OpenAPI document gives are exactly what the validators check: each is tried
in Python's ``re`` (the validators) and in jsonschema-rs (an ECMA 262 engine, as schemathesis and
other clients read the document) against what the validator says."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import timedelta

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.durations import (
    DURATION_PATTERN,
    MAX_DURATION_CHARS,
    POSITIVE_DURATION_PATTERN,
    parse_duration,
)
from shared.interpolation import PLACEHOLDERS_PATTERN, placeholder_problems
from shared.spec import (
    LABEL_KEY_PATTERN,
    PERCENT_PATTERN,
    PROGRAM_PATTERN,
    RELATIVE_PATH_PATTERN,
    SPACE_CHARS,
    TCP_ADDRESS_PATTERN,
    Artifact,
    RolloutPolicy,
    Target,
    Task,
    TcpCheck,
)


def ecma(pattern: str, **extra: object) -> Callable[[str], bool]:
    """Whether a string is valid by ``{"type": "string", "pattern": pattern, ...}`` as a
    JSON Schema (ECMA 262) validator reads it."""
    validator = jsonschema_rs.validator_for({"type": "string", "pattern": pattern, **extra})
    return validator.is_valid


def accepts(build: Callable[[], object]) -> bool:
    try:
        build()
    except (ValidationError, ValueError):
        return False
    return True


def agree(pattern: str, validator: Callable[[str], bool], text: str, **extra: object) -> None:
    python = re.fullmatch(pattern, text) is not None
    if "maxLength" in extra:
        python = python and len(text) <= int(str(extra["maxLength"]))
    assert python == ecma(pattern, **extra)(text) == validator(text), repr(text)


def texts(*pieces: str, max_size: int = 10) -> st.SearchStrategy[str]:
    """Strings made of pieces that sit near the rules' edges, plus any character UTF-8 (and so
    JSON) can carry."""
    chars = st.characters(exclude_categories=["Cs"])
    return st.lists(st.sampled_from(pieces) | chars, max_size=max_size).map("".join)


class TestWhiteSpace:
    def test_the_blank_class_is_str_isspace(self) -> None:
        """The program's "not blank" class is exactly what str.strip() removes (ECMA's \\s is
        not: it has U+FEFF and lacks U+001C-U+001F and U+0085)."""
        space = re.compile(f"[{SPACE_CHARS}]")
        for code in range(sys.maxunicode + 1):
            char = chr(code)
            assert (space.fullmatch(char) is not None) == char.isspace(), hex(code)


class TestPlaceholders:
    @settings(max_examples=400)
    @given(texts("$", "$$", "${", "}", "{", "node.name", "node.label.a/b", "job.version", "x"))
    def test_pattern_is_placeholder_problems(self, text: str) -> None:
        """A text matches PLACEHOLDERS_PATTERN exactly when placeholder_problems finds none."""
        agree(PLACEHOLDERS_PATTERN, lambda t: placeholder_problems(t) == [], text)

    @settings(max_examples=300)
    @given(texts(" ", "\t", "\x1c", "\ufeff", "\x85", "a", "${node.id}", "${x}", "$"))
    def test_program_pattern_is_the_command_rule(self, text: str) -> None:
        """The first element of a command: not blank, placeholders allowed ones."""
        agree(PROGRAM_PATTERN, lambda t: accepts(lambda: Task(command=[t])), text)


class TestDurations:
    @settings(max_examples=400)
    @given(texts("0", "1", "9", "999999999", "1234567890", ".", "5", "ms", "s", "m", "h", " "))
    def test_pattern_is_parse_duration(self, text: str) -> None:
        """A duration is valid by the document exactly when parse_duration takes it."""
        agree(
            DURATION_PATTERN,
            lambda t: accepts(lambda: parse_duration(t)),
            text,
            maxLength=MAX_DURATION_CHARS,
        )

    @settings(max_examples=300)
    @given(texts("0", "00", "0.0", "0.0000001", "1", "ms", "s", "h", max_size=6))
    def test_positive_pattern_is_above_zero(self, text: str) -> None:
        """POSITIVE_DURATION_PATTERN is a duration that parses to more than zero."""
        agree(
            POSITIVE_DURATION_PATTERN,
            lambda t: accepts(lambda: parse_duration(t)) and parse_duration(t) > timedelta(0),
            text,
            maxLength=MAX_DURATION_CHARS,
        )

    @pytest.mark.parametrize("text", [" 10s", "10s ", "10s\n", "\u0663s", "1 s", "+1s", "1e3s"])
    def test_nothing_the_document_forbids(self, text: str) -> None:
        """No spaces, no other scripts' digits, no signs or exponents (once tolerated)."""
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(text)

    def test_a_tiny_duration_is_not_zero(self) -> None:
        """Below a microsecond rounds up to one: "0.0000001s" is above zero, as it reads."""
        assert parse_duration("0.0000001s") == timedelta(microseconds=1)
        assert parse_duration("0.000000ms") == timedelta(0)


class TestSpecPatterns:
    @settings(max_examples=300)
    @given(texts("0", "1", "9", "10", "100", ".", "5", "%", " ", "\u0663", max_size=7))
    def test_percent(self, text: str) -> None:
        """A percentage of 0% to 100%, as canary and max_failed_nodes take it."""
        agree(
            PERCENT_PATTERN,
            lambda t: accepts(lambda: RolloutPolicy.model_validate({"canary": t})),
            text,
        )

    @settings(max_examples=300)
    @given(texts("a", "Z", "0", "_", ".", "-", "/", "\n", " ", "a" * 62, max_size=4))
    def test_label_key(self, text: str) -> None:
        """Selector keys: a trailing newline is refused too (re.match's $ once let it in)."""
        agree(
            LABEL_KEY_PATTERN,
            lambda t: accepts(lambda: Target.model_validate({"selector": {t: "v"}})),
            text,
        )

    @settings(max_examples=300)
    @given(texts("host", ":", "80", "${node.name}", "${node.label.port}", "${", "\u0663", "["))
    def test_tcp_address(self, text: str) -> None:
        """host:port, split at the last colon; a port of ASCII digits or a placeholder."""
        agree(
            TCP_ADDRESS_PATTERN,
            lambda t: accepts(lambda: TcpCheck(type="tcp", address=t)),
            text,
        )

    @settings(max_examples=300)
    @given(texts("a", "/", "..", ".", "\n", max_size=6))
    def test_relative_path(self, text: str) -> None:
        """An artifact's dest: not absolute, no ".." segment."""
        validator = ecma(RELATIVE_PATH_PATTERN)
        python = re.match(RELATIVE_PATH_PATTERN, text) is not None
        model = accepts(lambda: Artifact(url="https://x", sha256="0" * 64, dest=text))
        assert python == validator(text) == model, repr(text)
