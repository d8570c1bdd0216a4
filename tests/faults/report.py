"""The fault suite's figures as Markdown tables, from ``.fault-report.json``.

``python -m tests.faults.report [FILE]`` prints them (the tables in docs/reliability.md
come from here); the suite prints the same at the end of a run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPORT = Path(__file__).resolve().parents[2] / ".fault-report.json"


def _spread(value: Mapping[str, float] | None) -> str:
    if not value:
        return "-"
    return f"{value['median']:.3f} / {value['max']:.3f}"


def faults_of(name: str, found: Mapping[str, Any]) -> str:
    """What was done to the fleet in one scenario, in a few words."""
    parts = []
    if found.get("kills"):
        parts.append(f"{found['kills']} coordinator kills")
    if found.get("crashes"):
        parts.append(f"{found['crashes']} coordinator kills")
    if found.get("agent_kills"):
        parts.append(f"{found['agent_kills']} agent kills")
    for pause in found.get("pauses", []):
        parts.append(f"SIGSTOP {pause['what']} {pause['seconds']}s")
    if found.get("clock_steps"):
        parts.append("clock " + ", ".join(found["clock_steps"]))
    if "put_answers_while_full" in found:
        parts.append(f"disk full, PUT answers {found['put_answers_while_full']}")
    if "node_status_while_full" in found:
        parts.append(f"agent disk full, node status {found['node_status_while_full']}")
    if found.get("proxy"):
        proxy = found["proxy"]
        lost = sum(proxy.get(k, 0) for k in ("lost_request", "lost_answer", "late_answer"))
        parts.append(f"{proxy.get('requests', 0)} proxied requests, {lost} lost")
    return "; ".join(parts) or "-"


def scenario_table(report: Mapping[str, Any]) -> list[str]:
    rows = [
        "| scenario | result | s | seed | faults | rollouts | violations |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, found in sorted(report.get("scenarios", {}).items()):
        violations = found.get("violations") or {}
        bad = ", ".join(f"{k} {v}" for k, v in sorted(violations.items()) if v) or "0"
        result = found.get("outcome", "?")
        if found.get("failure"):
            result += f": {found['failure']}".replace("|", "/")
        rows.append(
            f"| `{name}` | {result} | {found.get('seconds', '-')}"
            f" | {found.get('seed')} | {faults_of(name, found)} | {found.get('rollouts', '-')}"
            f" | {bad if violations else '-'} |"
        )
    return rows


def totals_table(report: Mapping[str, Any]) -> list[str]:
    scenarios = report.get("scenarios", {}).values()

    def total(key: str) -> int:
        return sum(int(found.get(key) or 0) for found in scenarios)

    def violations(*names: str) -> int:
        return sum(int((f.get("violations") or {}).get(n, 0)) for f in scenarios for n in names)

    kill = report.get("scenarios", {}).get(
        "test_kill_9_of_the_coordinator_never_breaks_a_rollout", {}
    )
    answers: dict[str, int] = {}
    for found in scenarios:
        for status, count in (found.get("put_answers_while_full") or {}).items():
            answers[str(status)] = answers.get(str(status), 0) + count
    rows = [
        "| figure | value |",
        "|---|---|",
        f"| coordinator kills (kill -9) | {total('kills') + total('crashes')} |",
        f"| agent kills (kill -9) | {total('agent_kills')} |",
        f"| pauses (SIGSTOP) | {sum(len(f.get('pauses', [])) for f in scenarios)} |",
        f"| clock steps | {sum(len(f.get('clock_steps', [])) for f in scenarios)} |",
        f"| rollouts | {total('rollouts')} |",
        f"| coordinator ready after a kill, median / max (s) | "
        f"{_spread(kill.get('ready_after_kill_s'))} |",
        f"| first engine evaluation after ready, median / max (s) | "
        f"{_spread(kill.get('resume_after_ready_s'))} |",
        f"| first job event after ready, median / max (s) | "
        f"{_spread(kill.get('first_event_after_ready_s'))} |",
        f"| PUT answers on a full disk | {answers or '-'} |",
        f"| gate bypasses (canary_gate + wave_order) | {violations('canary_gate', 'wave_order')} |",
        f"| completed with a node not passed (completion) | {violations('completion')} |",
        f"| healthy nodes failed | {violations('healthy_never_failed')} |",
        f"| live nodes marked down | {violations('live_never_down')} |",
        f"| duplicate starts | {violations('no_duplicate_starts')} |",
        f"| acknowledged writes / lost | {total('acknowledged_writes')} / "
        f"{violations('acknowledged_writes')} |",
        f"| acknowledged reports replayed after a crash / accepted again | "
        f"{total('replays_after_crash')} / {total('replays_accepted')} |",
    ]
    return rows


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else REPORT
    report = json.loads(path.read_text())
    print("\n".join([*totals_table(report), "", *scenario_table(report)]))


if __name__ == "__main__":
    main()
