"""The live view of one job, drawn from a frozen `Snapshot`: a pure function, no Redis, no clock.

    demo  running  round 1/3  elapsed 0:00:12
    · deployed  ○ jobsheet_acked  ◐ dataset_acked  ● busy  ✓ done  × exited
    demo      training     round 1/3  gen 1
      clients busy: #0● #1●   workers dataset_acked: w0◐ w1◐
      demo#0  aggregating  round 1/3  epoch 0/1  gen 1
        clients done: c0✓ c1✓   workers dataset_acked: w0◐ w1◐
      demo#1  training     round 1/3  epoch 0/1  gen 1
        clients dataset_acked: c0◐ c1◐   workers dataset_acked: w0◐ w1◐
    ─────────────────────────────── events ───────────────────────────────
    19:42:06  demo#0  client/c1  submit_params  busy→done
    19:42:06  demo#0  -          aggregation    training→aggregating

One line per cluster, indented by level, then its members: each with a glyph for its status, or
counts per status when there are more than `COLLAPSE` of them or they do not fit the width.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.rule import Rule
from rich.text import Text

from hierfl.cli.events import STAGE_OPS, STATUS_OPS, Entry
from hierfl.protocol import NodeStatus, Outcome, ProcessStage
from hierfl.store.state import ClusterState
from hierfl.tui.snapshot import Snapshot

#: A member's status as a glyph and its style.
GLYPHS: dict[NodeStatus, tuple[str, str]] = {
    NodeStatus.DEPLOYED: ("·", "dim"),
    NodeStatus.JOBSHEET_ACKED: ("○", "cyan"),
    NodeStatus.DATASET_ACKED: ("◐", "blue"),
    NodeStatus.BUSY: ("●", "yellow"),
    NodeStatus.DONE: ("✓", "green"),
    NodeStatus.EXITED: ("×", "dim"),
}
STAGE_STYLES: dict[ProcessStage, str] = {
    ProcessStage.IDLE: "dim",
    ProcessStage.TRAINING: "yellow",
    ProcessStage.AGGREGATING: "magenta",
    ProcessStage.FINISHED: "green",
}
OUTCOME_STYLES: dict[str, str] = {
    Outcome.RUNNING.value: "bold cyan",
    Outcome.COMPLETED.value: "bold green",
    Outcome.FAILED.value: "bold red",
    Outcome.CANCELLED.value: "bold magenta",
}
#: A member list longer than this is shown as counts per status.
COLLAPSE = 8
_STAGE_WIDTH = max(len(s.name) for s in ProcessStage)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_NUMBER = re.compile(r"(\d+)")
_FRACTION = re.compile(r"^-?\d+\.\d+$")
_EVENT_STYLES = ("dim", "bold", "", "cyan")


def render(snapshot: Snapshot, now: float) -> Group:
    """The whole frame for `snapshot` at wall-clock time `now` (seconds since the epoch)."""
    parts: list = [header(snapshot, now)]
    if snapshot.reason:
        parts.append(_line(Text(f"reason: {snapshot.reason}", style="red")))
    parts += [legend(), Clusters(snapshot)]
    if snapshot.events:
        parts += [Rule("events", style="dim", characters="─"), events(snapshot.events)]
    if snapshot.finished:
        parts.append(_line(Text(f"{snapshot.outcome}: every node has exited", style="bold")))
    return Group(*parts)


def _line(text: Text) -> Text:
    """`text` on exactly one line: cut with an ellipsis rather than wrapped."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def status_name(status: int) -> str:
    return NodeStatus(status).name.lower()


def stage_name(stage: int) -> str:
    return ProcessStage(stage).name.lower()


def glyph(status: int) -> Text:
    char, style = GLYPHS[NodeStatus(status)]
    return Text(char, style=style)


def format_elapsed(seconds: float) -> str:
    whole = int(max(0.0, seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def elapsed_seconds(snapshot: Snapshot, now: float) -> float | None:
    """Since deploy; a job that has ended stops its clock at its last event."""
    start = snapshot.created_ms
    if start is None:
        return None
    end_ms = now * 1000
    if snapshot.outcome != Outcome.RUNNING.value and snapshot.last_event_ms is not None:
        end_ms = snapshot.last_event_ms
    return max(0.0, (end_ms - start) / 1000)


def header(snapshot: Snapshot, now: float) -> Text:
    top = snapshot.top
    text = Text()
    text.append(snapshot.root, style="bold")
    text.append("  ")
    text.append(snapshot.outcome, style=OUTCOME_STYLES.get(snapshot.outcome, "bold"))
    text.append(f"  round {top.round}/{top.rounds}")
    elapsed = elapsed_seconds(snapshot, now)
    if elapsed is not None:
        text.append(f"  elapsed {format_elapsed(elapsed)}")
    metric = snapshot.latest_metric
    if metric is not None:
        text.append(f"  accuracy {metric['accuracy']:.4f}  loss {metric['loss']:.4f}")
    return _line(text)


def legend() -> Text:
    text = Text()
    for i, status in enumerate(NodeStatus):
        if i:
            text.append("  ")
        text.append_text(glyph(status))
        text.append(f" {status_name(status)}", style="dim")
    return _line(text)


def _natural(name: str) -> list:
    """Sort key: c2 before c10."""
    return [int(p) if p.isdigit() else p for p in _NUMBER.split(name)]


def _short(cluster: ClusterState, member: str) -> str:
    """A sub-cluster member by its path below the root (`demo#0_1` -> `#0_1`)."""
    return member[member.index("#"):] if member in cluster.children and "#" in member else member


def members_text(label: str, stage: int, members: dict[str, int], cluster: ClusterState,
                 collapse: bool) -> Text:
    """`clients busy: c0● c1✓` or, collapsed, `clients busy: ● 20  ✓ 30  of 50`."""
    text = Text()
    text.append(f"{label} ", style="dim")
    text.append(status_name(stage), style=GLYPHS[NodeStatus(stage)][1])
    text.append(":")
    if collapse:
        counts = Counter(members.values())
        for status in NodeStatus:
            if counts[status]:
                text.append(" ")
                text.append_text(glyph(status))
                text.append(f" {counts[status]} ")
        text.append(f" of {len(members)}", style="dim")
        return text
    for name in sorted(members, key=_natural):
        text.append(f" {_short(cluster, name)}")
        text.append_text(glyph(members[name]))
    return text


def _role_text(label: str, stage: int, members: dict[str, int], cluster: ClusterState,
               room: int) -> Text:
    if len(members) <= COLLAPSE:
        full = members_text(label, stage, members, cluster, collapse=False)
        if full.cell_len <= room:
            return full
    return members_text(label, stage, members, cluster, collapse=True)


class Clusters:
    """One line per cluster and one or two lines of its members, laid out for the width."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.lines(options.max_width)

    def lines(self, width: int) -> Iterable[Text]:
        snap = self.snapshot
        name_width = max(2 * snap.level_of(c) + len(c.name) for c in snap.clusters) + 2
        for cluster in snap.clusters:
            indent = 2 * snap.level_of(cluster)
            yield _line(self.cluster_line(cluster, indent, name_width))
            yield from self.member_lines(cluster, indent + 2, width)

    def cluster_line(self, c: ClusterState, indent: int, name_width: int) -> Text:
        text = Text(" " * indent)
        text.append(c.name, style="bold")
        text.append(" " * (name_width - indent - len(c.name)))
        stage = c.process_stage
        text.append(f"{stage_name(stage):<{_STAGE_WIDTH}}", style=STAGE_STYLES[stage])
        text.append(f"  round {c.round}/{c.rounds}")
        if c.parent:
            text.append(f"  epoch {c.epoch}/{c.cluster_epochs}")
        text.append(f"  gen {c.generation}", style="dim")
        return text

    def member_lines(self, c: ClusterState, indent: int, width: int) -> Iterable[Text]:
        room = max(1, width - indent)
        clients = _role_text("clients", c.client_stage, c.clients, c, room)
        workers = _role_text("workers", c.worker_stage, c.workers, c, room)
        pad = " " * indent
        if clients.cell_len + 3 + workers.cell_len <= room:
            yield _line(Text(pad) + clients + Text("   ") + workers)
        else:
            yield _line(Text(pad) + clients)
            yield _line(Text(pad) + workers)


def _moved(op: str, src: str, dst: str) -> str:
    if not src and not dst:
        return ""
    enum = NodeStatus if op in STATUS_OPS else ProcessStage if op in STAGE_OPS else None
    if enum is not None and src.isdigit() and dst.isdigit():
        return f"{enum(int(src)).name.lower()}→{enum(int(dst)).name.lower()}"
    return f"{src or '-'}→{dst or '-'}"


_BASE = frozenset({"cluster", "node", "op", "from", "to", "gen", "round"})


def _value(text: str) -> str:
    """An extra's value, short: digests cut to 8 characters, fractions to 4 decimals."""
    if _DIGEST.match(text):
        return f"{text[:8]}…"
    if _FRACTION.match(text):
        return f"{float(text):.4f}"
    return text


def _extras(fields: dict[str, str]) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items() if k not in _BASE)


def event_time(entry_id: str) -> str:
    return datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000).strftime("%H:%M:%S")


def events(entries: Iterable[Entry]) -> Group:
    """The last events, oldest first: time, cluster, node, op, from→to (or the op's extras),
    in aligned columns; the last column is cut, never the others."""
    rows = []
    for entry_id, f in entries:
        moved = _moved(f.get("op", ""), f.get("from", ""), f.get("to", ""))
        rows.append((event_time(entry_id), f.get("cluster", ""), f.get("node", ""),
                     f.get("op", ""), moved or _extras(f)))
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
    lines = []
    for row in rows:
        text = Text()
        for value, width, style in zip(row, widths, _EVENT_STYLES, strict=False):
            text.append(f"{value:<{width}}", style=style)
            text.append("  ")
        text.append(row[-1])
        lines.append(_line(text))
    return Group(*lines)
