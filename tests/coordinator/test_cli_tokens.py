"""``fleetwave token …`` and ``node approve|revoke|purge`` against the real app on a real
SQLite file: what an operator sees, the secret shown once, confirmations, the messages of
401/403/409, and text from agents cleaned of control characters."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner, Result

from coordinator.cli import cli
from coordinator.cli_tokens import token_state, token_table
from tests.coordinator.conftest import ADMIN, Harness

CLEAN_ENV = {"FLEETWAVE_TOKEN_FILE": None, "FLEETWAVE_CA_FILE": None}


async def run(harness: Harness, *args: str, token: str = ADMIN, stdin: str | None = None) -> Result:
    """The CLI in a thread (it blocks on HTTP) against the app this test's loop serves."""
    env = CLEAN_ENV | {
        "FLEETWAVE_ADDR": str(harness.client.make_url("")).rstrip("/"),
        "FLEETWAVE_TOKEN": token,
    }
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, list(args), input=stdin, env=env, prog_name="fleetwave"
    )


async def create(harness: Harness, *args: str) -> dict[str, Any]:
    result = await run(harness, "token", "create", *args, "--json")
    assert result.exit_code == 0, result.output
    created: dict[str, Any] = json.loads(result.stdout)
    return created


async def pending_node(harness: Harness, name: str = "rack7-a", **labels: str) -> str:
    """A node enrolled with a manual-approval join token; returns its id."""
    join = await create(harness, "--name", f"join-{name}", "--kind", "join", "--approval", "manual")
    node_id, _ = await harness.register(name, join=join["secret"], **labels)
    return node_id


class TestTokenCreate:
    async def test_secret_is_printed_once_with_the_warning(self, harness: Harness) -> None:
        """The text output names the token and prints the secret once, set apart, saying so;
        the secret then works as FLEETWAVE_TOKEN."""
        result = await run(
            harness, "token", "create", "--name", "ci-web", "--role", "deployer",
            "--jobs", "web-*", "--jobs", "api", "--ttl", "720h",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "Created operator token ci-web." in out
        assert "shown once; store it now" in out
        assert "jobs:     web-*, api" in out
        secrets = [line.strip() for line in out.splitlines() if line.strip().startswith("fwo_")]
        assert len(secrets) == 1
        assert out.count(secrets[0]) == 1
        me = await run(harness, "token", "whoami", token=secrets[0])
        assert me.exit_code == 0, me.output
        assert "Token ci-web" in me.stdout
        assert "role:     deployer" in me.stdout
        assert "jobs:read" not in me.stdout
        assert "jobs:write" in me.stdout
        assert "by:       bootstrap-admin" in me.stdout

    async def test_join_token_json_is_the_created_token(self, harness: Harness) -> None:
        """``--json`` prints the API's CreatedToken: kind, bound labels, limit, approval."""
        created = await create(
            harness, "--name", "rack-7", "--kind", "join", "--max-uses", "3",
            "--label", "rack=7", "--label", "zone=b", "--approval", "manual", "--ttl", "24h",
        )  # fmt: skip
        assert created["secret"].startswith("fwj_")
        assert created["kind"] == "join"
        assert created["labels"] == {"rack": "7", "zone": "b"}
        assert (created["max_uses"], created["uses"], created["approval"]) == (3, 0, "manual")
        assert created["expires_at"] is not None

    async def test_the_servers_field_errors_are_listed(self, harness: Harness) -> None:
        """An operator token without a role, or join options on one: exit 2, each field named."""
        result = await run(harness, "token", "create", "--name", "x", "--max-uses", "2")
        assert result.exit_code == 2
        assert "  - role: an operator token needs a role" in result.stderr
        assert "  - max_uses: only join tokens have it" in result.stderr

    async def test_bad_label_and_ttl_are_usage_errors(self, harness: Harness) -> None:
        """A label without '=' or a duration that does not parse is refused before any call."""
        bad_label = await run(harness, "token", "create", "--name", "j", "--label", "rack7")
        assert bad_label.exit_code == 2
        assert "'rack7' is not KEY=VALUE" in bad_label.stderr
        bad_ttl = await run(harness, "token", "create", "--name", "j", "--ttl", "30d")
        assert bad_ttl.exit_code == 2
        assert "invalid duration '30d'" in bad_ttl.stderr


class TestTokenList:
    async def test_lists_bootstrap_and_managed_tokens(self, harness: Harness) -> None:
        """Bootstrap rows are marked and explained; a join token shows approval and uses."""
        await create(harness, "--name", "rack-7", "--kind", "join", "--max-uses", "2")
        await create(harness, "--name", "ci", "--role", "deployer", "--jobs", "web-*")
        result = await run(harness, "token", "list")
        assert result.exit_code == 0, result.output
        rows = {line.split()[1]: line for line in result.stdout.splitlines()[1:] if line}
        assert rows["bootstrap-admin"].split()[2:4] == ["operator", "admin"]
        assert rows["bootstrap-admin"].endswith("(bootstrap)")
        assert "approval=auto" in rows["rack-7"]
        assert " 0/2 " in rows["rack-7"]
        assert "deployer jobs=web-*" in rows["ci"]
        assert "bootstrap-admin" in result.stdout
        assert "cannot be revoked" in result.stdout

    async def test_json_never_holds_a_secret(self, harness: Harness) -> None:
        """``--json`` is the API's list: every token, no secret among them."""
        created = await create(harness, "--name", "ci", "--role", "viewer")
        result = await run(harness, "token", "list", "--json")
        assert result.exit_code == 0
        body = json.loads(result.stdout)
        assert [t["name"] for t in body["tokens"]] == ["bootstrap-admin", "default-join", "ci"]
        assert created["secret"] not in result.stdout
        assert all("secret" not in t for t in body["tokens"])

    def test_status_says_revoked_expired_or_used_up(self) -> None:
        """STATUS is judged at ``now``: revoked first, then expiry, then a join token's uses."""
        now = datetime(2026, 6, 1, tzinfo=UTC)
        base = {"kind": "join", "uses": 2, "max_uses": 2, "expires_at": None, "revoked_at": None}
        assert token_state(base, now) == "used up"
        assert token_state(base | {"max_uses": 3}, now) == "active"
        past = (now - timedelta(seconds=1)).isoformat()
        assert token_state(base | {"max_uses": None, "expires_at": past}, now) == "expired"
        revoked = base | {"revoked_at": "2026-05-01T10:00:00.5Z"}
        assert token_state(revoked, now) == "revoked 2026-05-01T10:00:00Z"

    def test_text_written_by_others_is_cleaned(self) -> None:
        """Control characters in labels or names (an escape sequence) never reach the terminal."""
        token = {
            "id": "t1", "name": "rack", "kind": "join", "labels": {"rack": "\x1b[2J7"},
            "uses": 0, "created_by": "ops\x07", "created_at": "2026-01-01T00:00:00Z",
        }  # fmt: skip
        text = token_table([token], datetime(2026, 1, 1, tzinfo=UTC))
        assert "\x1b" not in text
        assert "\x07" not in text
        assert "labels=rack= [2J7" in text


class TestTokenRevoke:
    async def test_revoked_by_name_is_refused_at_once(self, harness: Harness) -> None:
        """``token revoke NAME`` revokes it; the next call with it is a 401 that says so and
        what to do."""
        created = await create(harness, "--name", "laptop", "--role", "operator")
        result = await run(harness, "token", "revoke", "laptop")
        assert result.exit_code == 0, result.output
        assert f"Revoked operator token laptop ({created['id']})" in result.stdout
        refused = await run(harness, "token", "whoami", token=created["secret"])
        assert refused.exit_code == 2
        assert "the coordinator refused the token (token 'laptop' was revoked)" in refused.stderr
        assert "Ask an admin for a new token" in refused.stderr

    async def test_bootstrap_tokens_cannot_be_revoked(self, harness: Harness) -> None:
        """Revoking a configured token is a 409 whose message says how to change it instead."""
        result = await run(harness, "token", "revoke", "bootstrap-admin")
        assert result.exit_code == 2
        assert "is configured, not managed" in result.stderr
        assert "restart the coordinator" in result.stderr

    async def test_unknown_token_points_at_token_list(self, harness: Harness) -> None:
        """A token that does not exist names ``fleetwave token list``."""
        result = await run(harness, "token", "revoke", "nope")
        assert result.exit_code == 2
        assert "no token 'nope'; see `fleetwave token list`" in result.stderr


class TestPermissions:
    async def test_403_names_the_missing_right(self, harness: Harness) -> None:
        """A viewer listing tokens or approving a node: exit 2 with the server's reason (the
        right and the role that has it) and where to look next."""
        viewer = await create(harness, "--name", "dash", "--role", "viewer")
        node_id = await pending_node(harness)
        for args in (("token", "list"), ("node", "approve", node_id)):
            result = await run(harness, *args, token=viewer["secret"])
            assert result.exit_code == 2, args
            assert result.stderr.startswith("Error: permission denied: token 'dash' (role viewer)")
            assert "fleetwave token whoami" in result.stderr
        assert "lacks the right 'nodes:write' (needs role operator" in result.stderr

    async def test_no_token_at_all(self, harness: Harness) -> None:
        """Without a token the CLI says none was given and how to give one."""
        result = await run(harness, "token", "whoami", token="")
        assert result.exit_code == 2
        assert "no token given" in result.stderr
        assert "FLEETWAVE_TOKEN" in result.stderr


class TestNodeApprove:
    async def test_pending_node_is_listed_then_approved(self, harness: Harness) -> None:
        """``node list`` shows the pending node and what to do; ``node approve`` lets it in."""
        await pending_node(harness, "rack7-a")
        listed = await run(harness, "node", "list")
        assert listed.exit_code == 0, listed.output
        assert listed.stdout.splitlines()[1].split()[1:3] == ["rack7-a", "pending"]
        assert "1 pending approval (rack7-a)" in listed.stdout
        shown = await run(harness, "node", "show", "rack7-a")
        assert "pending approval: `fleetwave node approve rack7-a`" in shown.stdout
        approved = await run(harness, "node", "approve", "rack7-a")
        assert approved.exit_code == 0, approved.output
        assert "approved: status initializing" in approved.stdout
        listed = await run(harness, "node", "list")
        assert "pending" not in listed.stdout

    async def test_a_revoked_node_cannot_be_approved(self, harness: Harness) -> None:
        """Approving a revoked node is a 409 whose reason is printed."""
        await pending_node(harness, "rack7-b")
        assert (await run(harness, "node", "revoke", "rack7-b", "--yes")).exit_code == 0
        result = await run(harness, "node", "approve", "rack7-b")
        assert result.exit_code == 2
        assert "was revoked; a revoked node never returns" in result.stderr


class TestNodeRevokeAndPurge:
    async def test_revoke_asks_first(self, harness: Harness) -> None:
        """Without ``--yes`` revoke asks; "n" or a closed stdin does nothing (exit 2), "y"
        revokes."""
        await harness.register("web-1")
        declined = await run(harness, "node", "revoke", "web-1", stdin="n\n")
        assert declined.exit_code == 2
        assert "Revoke node web-1" in declined.stderr
        assert "not confirmed: nothing was done" in declined.stderr
        closed = await run(harness, "node", "revoke", "web-1", stdin="")
        assert closed.exit_code == 2
        assert "give --yes to revoke without asking" in closed.stderr
        assert (await harness.store.find_node("web-1")).revoked_at is None  # type: ignore[union-attr]
        agreed = await run(harness, "node", "revoke", "web-1", stdin="y\n")
        assert agreed.exit_code == 0, agreed.output
        assert "Node web-1" in agreed.stdout
        assert "revoked" in agreed.stdout
        listed = await run(harness, "node", "list")
        assert listed.stdout.splitlines()[1].split()[1:3] == ["web-1", "revoked"]

    async def test_purge_only_a_revoked_or_down_node(self, harness: Harness) -> None:
        """Purging a live node is refused with the server's reason; a revoked one is forgotten."""
        await harness.register("web-2")
        refused = await run(harness, "node", "purge", "web-2", "--yes")
        assert refused.exit_code == 2
        assert "only a down or revoked node can be purged" in refused.stderr
        await run(harness, "node", "revoke", "web-2", "--yes")
        declined = await run(harness, "node", "purge", "web-2", stdin="n\n")
        assert declined.exit_code == 2
        purged = await run(harness, "node", "purge", "web-2", stdin="y\n")
        assert purged.exit_code == 0, purged.output
        assert "Node web-2" in purged.stdout
        assert "purged" in purged.stdout
        gone = await run(harness, "node", "show", "web-2")
        assert gone.exit_code == 2
        assert "no node named web-2" in gone.stderr

    async def test_labels_from_agents_are_cleaned(self, harness: Harness) -> None:
        """An agent's label with an escape sequence is shown without it."""
        await harness.register("web-3", zone="\x1b]0;owned\x07a")
        for args in (("node", "list"), ("node", "show", "web-3")):
            result = await run(harness, *args)
            assert result.exit_code == 0, result.output
            assert "\x1b" not in result.stdout
            assert "\x07" not in result.stdout
            assert "zone= ]0;owned a" in result.stdout
