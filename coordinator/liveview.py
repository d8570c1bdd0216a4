"""The CLI's view of a rollout: a live rich panel on a terminal, progress lines elsewhere.

``follow_rollout`` drives a ``RolloutFollower`` and shows each snapshot: on a terminal in a
``rich.live.Live`` (redrawn in place a few times a second, no flicker), otherwise (CI logs,
pipes) as plain lines printed only when something changed. It returns the exit code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from coordinator.client import ApiClient
from coordinator.follow import (
    EXIT_ROLLOUT_FAILED,
    RolloutFollower,
    Snapshot,
    is_in_progress,
    is_planned,
    outcome,
    progress_line,
    state_of,
)

STATE_STYLES = {
    "running": "bold green",
    "completed": "bold green",
    "deploying": "bold cyan",
    "rollout_paused": "bold yellow",
    "pending": "bold",
    "queued": "bold yellow",
}
RESULT_MARKS = {
    "updated": ("✓", "green"),
    "failed": ("✗", "bold red"),
    "in_progress": ("◐", "cyan"),
    "waiting": ("·", "dim"),
    "skipped": ("-", "yellow"),
}


def rollout_nodes(rollout: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(group label, group state, node) for the canary set and each wave, in order."""
    for node in rollout["canary"]["nodes"]:
        yield "canary", rollout["canary"]["state"], node
    for wave in rollout["waves"]:
        for node in wave["nodes"]:
            yield f"wave {wave['wave']}", wave["state"], node


def _version(node: dict[str, Any]) -> str:
    running, assigned = node["running_version"], node["assigned_version"]
    if running is not None and assigned is not None and running != assigned:
        return f"v{running} → v{assigned}"
    shown = assigned if assigned is not None else running
    return f"v{shown}" if shown is not None else "-"


def _zone(snap: Snapshot, node: dict[str, Any]) -> str:
    return snap.labels.get(node["id"], {}).get(snap.spread_by, "") if snap.spread_by else ""


def _why(node: dict[str, Any]) -> str:
    return str(node["reason"] or node["message"])


def failure_lines(snap: Snapshot) -> list[str]:
    """Why the rollout stopped or paused, then each failed node with its reason."""
    lines = []
    ro = snap.rollout
    if ro is not None and is_planned(snap.status):
        for key in ("paused_reason", "halted_reason", "cause"):
            if ro[key]:
                lines.append(f"{key.split('_')[0]}: {snap.readable(ro[key])}")
        for label, _state, node in rollout_nodes(ro):
            if node["result"] == "failed":
                lines.append(f"{node['name']} ({label}) failed: {_why(node)}")
    return lines


def _header(snap: Snapshot) -> Text:
    status = snap.status
    state = state_of(status) or "-"
    return Text.assemble(
        (f" {state} ", STATE_STYLES.get(state, "bold red") + " reverse"),
        "  ",
        snap.readable(status["state"]["message"]),
    )


def _counters(snap: Snapshot) -> Text:
    status, ro = snap.status, snap.status["rollout"]
    if not ro["type"] or not is_planned(status):
        return Text(f"waiting for the engine to plan version {status['version']}…", style="dim")
    view = snap.rollout or {}
    source = view.get("rolled_back_from") or view.get("from_version", 0)
    target = view.get("target_version", status["version"])
    parts = [
        (f"{ro['type']}", "bold"),
        (f"  v{source} → v{target}" if source else f"  v{target}", ""),
        (f"   updated {ro['updated_nodes']}/{ro['total_nodes']}", "green"),
        (f"   failed {ro['failed_nodes']}", "red" if ro["failed_nodes"] else ""),
        (f"   wave {ro['current_wave']}/{ro['total_waves']}", ""),
    ]
    if ro["canary_nodes"]:
        promoted = "promoted" if ro["canary_promoted"] else "not promoted"
        parts.append((f"   canary {len(ro['canary_nodes'])} ({promoted})", ""))
    return Text.assemble(*parts)


def _table(snap: Snapshot) -> Table:
    # Only REASON may shrink (and is cut with an ellipsis): a narrow terminal must not wrap
    # the short columns into two-line rows.
    table = Table(box=None, pad_edge=False, header_style="bold dim", expand=False)
    columns = ["GROUP", "NODE", *([snap.spread_by.upper()] if snap.spread_by else [])]
    for name in [*columns, "VERSION", "EXECUTION", "RESULT"]:
        table.add_column(name, no_wrap=True)
    table.add_column("REASON", overflow="ellipsis")
    assert snap.rollout is not None
    last_label = ""
    for label, state, node in rollout_nodes(snap.rollout):
        mark, style = RESULT_MARKS.get(node["result"], ("?", ""))
        group = f"{label} ({state})" if label != last_label else ""
        last_label = label
        cells: list[RenderableType] = [Text(group, style="bold"), node["name"]]
        if snap.spread_by:
            cells.append(_zone(snap, node))
        cells += [
            _version(node),
            node["execution"] or "-",
            Text(f"{mark} {node['result']}", style=style),
            Text(
                _why(node),
                style="red" if node["result"] == "failed" else "dim",
                no_wrap=True,
                overflow="ellipsis",
            ),
        ]
        table.add_row(*cells)
    return table


def render(snap: Snapshot) -> RenderableType:
    """The live panel for one snapshot (elapsed time read at render time)."""
    parts: list[RenderableType] = [_header(snap), _counters(snap)]
    if snap.rollout is not None and snap.rollout["type"] and is_planned(snap.status):
        parts += [Text(), _table(snap)]
    failures = failure_lines(snap)
    if failures:
        parts += [Text(), Text("Failures", style="bold red")]
        parts += [Text(f"  {line}", style="red") for line in failures]
    if snap.events:
        parts += [Text(), Text("Recent events", style="bold")]
        for event in snap.events:
            line = f"  {event_line(snap, event)}"
            parts.append(Text(line, style="dim", no_wrap=True, overflow="ellipsis"))
    elapsed = int(time.monotonic() - snap.started)
    source = "live (event stream)" if snap.streaming else "polling every 1s"
    footer = f"{elapsed // 60:02d}:{elapsed % 60:02d}  {source}"
    if snap.error:
        footer += f"  · {snap.error}"
    status = snap.status
    return Panel(
        Group(*parts),
        title=f"[bold]{snap.name}[/] · version {status['version']} · revision {status['revision']}",
        subtitle=footer,
        subtitle_align="right",
        border_style="red" if snap.error else "blue",
    )


def event_line(snap: Snapshot, event: dict[str, Any]) -> str:
    clock = str(event.get("time", ""))[11:19]
    who = f" {snap.node_name(event['node'])}" if event.get("node") else ""
    old, new = event.get("old", ""), event.get("new", "")
    change = f" {old} → {new}" if old and new else f" {old or new}" if old or new else ""
    reason = f": {snap.readable(event['reason'])[:160]}" if event.get("reason") else ""
    return f"{clock} {event.get('kind', '?')}{who}{change}{reason}"


@dataclass
class PlainReporter:
    """Progress lines for a non-terminal: the state line and each node's result, on change."""

    _line: str = ""
    _nodes: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _events: set[int] = field(default_factory=set)
    _error: str = ""

    def lines(self, snap: Snapshot) -> list[str]:
        out = []
        line = snap.readable(progress_line(snap.status))
        if line != self._line:
            out.append(line)
            self._line = line
        ro = snap.rollout
        if ro is not None and ro["type"] and is_planned(snap.status):
            rollout_id = f"{ro['type']}:{ro['for_version']}:{ro['started_at']}"
            for label, _state, node in rollout_nodes(ro):
                key, value = (rollout_id, node["id"]), (node["result"], node["reason"])
                if self._nodes.get(key, ("waiting", "")) != value:
                    zone = _zone(snap, node)
                    where = f"{node['name']} ({zone})" if zone else node["name"]
                    failed = node["result"] == "failed"
                    reason = f": {_why(node)}" if failed or node["reason"] else ""
                    out.append(f"  {label} {where} {_version(node)} {node['result']}{reason}")
                self._nodes[key] = value
        shown_failed = {
            node["id"]
            for _label, _state, node in (rollout_nodes(ro) if ro is not None else ())
            if node["result"] == "failed"
        }
        for event in snap.events:
            if event.get("id") in self._events:
                continue
            self._events.add(int(event.get("id") or 0))
            if _is_news(event, shown_failed):
                out.append(f"  event {event_line(snap, event)}")
        if snap.error != self._error:
            out.append(f"  ({snap.error}; retrying)" if snap.error else "  (reconnected)")
            self._error = snap.error
        return out


def _is_news(event: dict[str, Any], shown_failed: set[str]) -> bool:
    """Job-level events, and node failures the rollout view no longer shows (a halted
    rollout is replaced by its rollback at once); the state line covers ``job_state``."""
    if event.get("node"):
        return event.get("kind") == "node_failed" and event["node"] not in shown_failed
    return event.get("kind") != "job_state"


def summary_lines(snap: Snapshot) -> list[str]:
    """What the rollout ended with: the state, then each detail (failed nodes by name)."""
    status = snap.status
    lines = [f"Result: {state_of(status)}: {snap.readable(status['state']['message'])}"]
    for key, value in sorted(status["state"]["details"].items()):
        if key.startswith("failed."):
            key = f"failed on {snap.node_name(key.removeprefix('failed.'))}"
        lines.append(f"  {key}: {snap.readable(value)}")
    return lines


Stop = Callable[[Snapshot], int | None]


def until_settled(snap: Snapshot) -> int | None:
    """``job run``: stop once the job is no longer rolling out, with its exit code."""
    return outcome(snap.status)


@dataclass
class UntilRolloutEnds:
    """``job status --watch``: stop when a rollout seen in progress has ended."""

    seen_progress: bool = False

    def __call__(self, snap: Snapshot) -> int | None:
        if is_in_progress(snap.status):
            self.seen_progress = True
            return None
        return outcome(snap.status) if self.seen_progress else None


class _LiveView:
    """Re-rendered on each of Live's refreshes, so the elapsed time keeps counting."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def __rich__(self) -> RenderableType:
        return render(self.snap)


def follow_rollout(
    client: ApiClient,
    name: str,
    *,
    stop: Stop = until_settled,
    timeout: float | None = None,
    console: Console | None = None,
    summary: bool = True,
    use_stream: bool = True,
) -> int:
    """Show the job's rollout until ``stop`` gives an exit code (or ``timeout`` passes: 1)."""
    console = console or Console(highlight=False)
    deadline = time.monotonic() + timeout if timeout is not None else None
    with RolloutFollower(client, name, use_stream=use_stream) as follower:
        snapshots = follower.snapshots()
        if console.is_terminal:
            code, last = _follow_live(snapshots, stop, deadline, console)
        else:
            code, last = _follow_plain(snapshots, stop, deadline)
    if code is None:
        click.echo(f"Stopped watching after {timeout:.0f}s; the rollout goes on.", err=True)
        code = EXIT_ROLLOUT_FAILED
    elif summary:
        for line in summary_lines(last):
            click.echo(line)
    return code


def _timed_out(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _follow_live(
    snapshots: Iterator[Snapshot], stop: Stop, deadline: float | None, console: Console
) -> tuple[int | None, Snapshot]:
    snap = next(snapshots)
    view = _LiveView(snap)
    with Live(view, console=console, refresh_per_second=4, redirect_stderr=False) as live:
        while (code := stop(snap)) is None and not _timed_out(deadline):
            snap = view.snap = next(snapshots)
            live.refresh()
    return code, snap


def _follow_plain(
    snapshots: Iterator[Snapshot], stop: Stop, deadline: float | None
) -> tuple[int | None, Snapshot]:
    reporter = PlainReporter()
    for snap in snapshots:
        for line in reporter.lines(snap):
            click.echo(line)
        code = stop(snap)
        if code is not None or _timed_out(deadline):
            return code, snap
    raise AssertionError("snapshots() never ends")
