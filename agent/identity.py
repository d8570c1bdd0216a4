"""The node's identity (id, token, name) and report sequence, persisted in the data dir."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.fsutil import atomic_write

log = structlog.get_logger("agent.identity")


class Identity(BaseModel):
    """Who this node is to the coordinator; the token never appears in logs or reprs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    node_id: str = Field(min_length=1)
    node_token: str = Field(min_length=1, repr=False)
    name: str
    status: str = Field(default="", description="as registration answered; pending: unapproved")


class IdentityStore:
    """``identity.json`` (mode 0600) and ``report_seq.json`` inside the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "identity.json"
        self.seq_path = data_dir / "report_seq.json"
        self.key_path = data_dir / "node.key"

    def node_key(self) -> str:
        """This host's node key: made once (256 random bits, mode 0600) and kept. The
        coordinator renews a node's registration only for the agent that has its key, so
        no other host can take over the node's name.

        When it cannot be stored (an unwritable data dir) the key lives in memory for
        this run: the node can register, but not renew its name after a restart."""
        try:
            value = self.key_path.read_text().strip()
        except FileNotFoundError:
            value = ""
        except (OSError, UnicodeDecodeError) as exc:
            # The key exists but cannot be read now (EIO, EACCES): never replace it, or the
            # node could never renew its name again. Register with a key for this run only.
            log.warning("node_key_unreadable", path=str(self.key_path), error=str(exc))
            return secrets.token_urlsafe(32)
        if len(value) >= 32:
            return value
        if value:
            log.warning("node_key_too_short", path=str(self.key_path), length=len(value))
            return secrets.token_urlsafe(32)
        value = secrets.token_urlsafe(32)
        try:
            atomic_write(self.key_path, (value + "\n").encode())
        except OSError as exc:
            log.warning("node_key_not_saved", path=str(self.key_path), error=str(exc))
        return value

    def load(self) -> Identity | None:
        """The stored identity, or None when there is none (or it is unreadable)."""
        try:
            return Identity.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            # A corrupt identity is not fatal: the agent registers again as a new node.
            log.warning("identity_unreadable", path=str(self.path), error=str(exc))
            return None

    def save(self, identity: Identity) -> None:
        """Persist ``identity`` atomically with mode 0600.

        The report sequence is left as it is: a new node's seqs may start anywhere, and the
        report loop starts them over itself.
        """
        atomic_write(self.path, identity.model_dump_json(indent=2).encode())

    def load_seq(self) -> int:
        """The highest report sequence number this node may have used (0 when unknown)."""
        try:
            data = json.loads(self.seq_path.read_bytes())
            value = data.get("reserved", data.get("last_seq", 0))  # last_seq: older agents
        except (OSError, ValueError, AttributeError):
            return 0
        return value if isinstance(value, int) and value >= 0 else 0

    def save_seq(self, reserved: int) -> None:
        """Persist the highest report sequence number this node may use before saving again."""
        atomic_write(self.seq_path, json.dumps({"reserved": reserved}).encode())
