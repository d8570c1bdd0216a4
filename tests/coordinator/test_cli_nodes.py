"""``fleetwave node list`` and ``node show`` as text: what an operator sees of conditions."""

from __future__ import annotations

from typing import Any

from coordinator.cli_nodes import condition_lines, node_table

FULL_DISK = {
    "type": "data_dir_unwritable",
    "message": "cannot write /var/lib/fleetwave-agent: [Errno 28] No space left on device",
    "since": "2026-01-01T00:00:00Z",
}


def node(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"{name}-0000-1111",
        "name": name,
        "status": "ready",
        "eligibility": "eligible",
        "drain": False,
        "labels": {"zone": "z1"},
        "last_heartbeat": "2026-01-01T00:00:05Z",
        **extra,
    }


class TestNodeList:
    def test_conditions_column_names_each_nodes_conditions(self) -> None:
        """A node with conditions lists their types; one without shows a dash, as does a
        node from a coordinator too old to report any."""
        lines = node_table(
            [node("web-1", conditions=[FULL_DISK]), node("web-2", conditions=[]), node("old")]
        ).splitlines()
        assert lines[0].split() == [
            "ID",
            "NAME",
            "STATUS",
            "CONDITIONS",
            "ELIGIBILITY",
            "DRAIN",
            "LABELS",
            "HEARTBEAT",
        ]
        assert [line.split()[3] for line in lines[1:]] == ["data_dir_unwritable", "-", "-"]
        assert all(line.split()[2] == "ready" for line in lines[1:])


class TestNodeShow:
    def test_each_condition_with_its_start_and_message(self) -> None:
        """``node show`` prints every condition on its own line, or that there is none."""
        assert condition_lines([FULL_DISK]) == [
            "conditions:     1",
            "  data_dir_unwritable since 2026-01-01T00:00:00Z: cannot write "
            "/var/lib/fleetwave-agent: [Errno 28] No space left on device",
        ]
        assert condition_lines([]) == ["conditions:     none"]
