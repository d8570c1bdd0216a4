"""Tokens: generation, hashing, constant-time comparison and the 0600 token files."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path


def new_token(prefix: str) -> str:
    """A random 256-bit token, prefixed so a leaked token says what it is."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """Tokens are high-entropy, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(given: str, expected_hash: str) -> bool:
    """``given`` is the token whose hash is ``expected_hash`` (compared in constant time)."""
    return hmac.compare_digest(hash_token(given), expected_hash)


@dataclass(frozen=True)
class LoadedToken:
    value: str
    path: Path | None
    generated: bool


def load_or_create(configured: str | None, path: Path, prefix: str) -> LoadedToken:
    """Use the configured token, else the one in ``path``, else generate one there (mode 0600)."""
    if configured:
        return LoadedToken(configured, None, generated=False)
    if path.exists():
        value = path.read_text().strip()
        if value:
            return LoadedToken(value, path, generated=False)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = new_token(prefix)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return LoadedToken(value, path, generated=True)
