"""`hierfl report`: what a job did, as files a person can read or attach to a write-up.

`write_report` reads one job tree from Redis and writes into a directory:

- ``accuracy.png``: test accuracy and loss of the global model per round (round 0 = the
  initial model), from the job's metrics;
- ``timings.png``: per-round training, aggregation and coordination overhead in seconds, as
  stacked bars, computed by `round_timings` from the job's event stream alone;
- ``tree.svg``: the job tree as ``hierfl status`` renders it (clusters, stages, members);
- ``summary.json``: outcome, per-round accuracy and timings, wall time and node counts.

The timings need nothing but the event stream, whose ids are the Redis server's millisecond
clock, so they are available for any job whose stream still holds its rounds (the stream is
capped at `EVENTS_MAXLEN` entries: the oldest rounds of a very long job may have been trimmed,
and they are then left out rather than guessed). `round_timings` is a pure function of the
events. matplotlib (the ``report`` extra) is imported only to draw the PNGs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from hierfl import keys
from hierfl.errors import HierflError, UnknownJob
from hierfl.protocol import ErrorCode, Outcome
from hierfl.store.state import JobStatus, read_job

#: One stream entry: its id ("<ms>-<seq>") and its fields (see lua/lib/event.lua).
Event = tuple[str, Mapping[str, str]]
Interval = tuple[int, int]

#: The events that end a job without a final consensus.
_ABORTS = frozenset({Outcome.FAILED.value, Outcome.CANCELLED.value})
INSTALL_HINT = "pip install 'hierfl[report]'"


class MissingExtra(HierflError):
    """An optional dependency is not installed."""


@dataclass(frozen=True)
class RoundTiming:
    """Where the wall-clock time of one global round went (seconds).

    ``training_s + aggregation_s + overhead_s == span_s`` (up to float rounding).
    """

    round: int
    start_ms: int  # the root's `generation` event that began the round
    end_ms: int  # the root's `consensus` that closed it (or the failed/cancelled event)
    span_s: float
    training_s: float  # some client was training
    aggregation_s: float  # some worker was aggregating and no client was training
    overhead_s: float  # nobody was training or aggregating: coordination
    aggregation_busy_s: float  # some worker was aggregating (may overlap training)
    slowest_client_s: float  # the longest single start_training -> submit_params
    complete: bool  # False when the round ended without a root consensus


def _ms(event_id: str) -> int:
    return int(event_id.split("-", 1)[0])


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same instants."""
    merged: list[list[int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def _length(intervals: Iterable[Interval]) -> int:
    return sum(e - s for s, e in _merge(intervals))


def _clip(intervals: Iterable[Interval], lo: int, hi: int) -> list[Interval]:
    return [(max(s, lo), min(e, hi)) for s, e in intervals if min(e, hi) > max(s, lo)]


def _busy(events: list[Event], start_op: str, end_op: str) -> dict[int, list[Interval]]:
    """Per round: each node's [start_op, end_op] intervals, one per (cluster, node, gen).

    The first start and the first end after it count; a repeated or unmatched call adds no
    time. Sub-cluster members (``cluster/…``) never appear here: only real clients train and
    only real workers aggregate.
    """
    opened: dict[tuple[str, str, str], tuple[int, int]] = {}
    closed: set[tuple[str, str, str]] = set()
    out: dict[int, list[Interval]] = {}
    for event_id, f in events:
        op = f.get("op")
        if op not in (start_op, end_op):
            continue
        key = (f.get("cluster", ""), f.get("node", ""), f.get("gen", ""))
        if op == start_op:
            if key not in opened:
                opened[key] = (_ms(event_id), int(f.get("round") or 0))
        elif key in opened and key not in closed:
            closed.add(key)
            begun, round_ = opened[key]
            out.setdefault(round_, []).append((begun, _ms(event_id)))
    return out


def round_timings(events: Iterable[Event]) -> list[RoundTiming]:
    """Per global round, how its wall-clock time splits into training, aggregation and overhead.

    Definitions (all times from stream ids, i.e. the Redis server's clock, so nodes on other
    machines need no synchronised clocks):

    - **span** of global round r: from the root's ``generation`` event that began round r to
      the root's ``consensus`` event of round r (the instant the round's global model is
      agreed). A round that ended in a ``failed`` or ``cancelled`` event ends there instead
      (``complete`` False); one still running ends at the last event given.
    - **client busy interval**: one client's ``start_training`` → ``submit_params`` in one
      generation (download the global, train, store the parameters). A sub-cluster with
      several cluster epochs contributes one interval per client per epoch. Events carry the
      global round, so every interval belongs to exactly one round.
    - **worker busy interval**: one worker's ``start_aggregation`` → ``upload_aggregate``
      (download the submissions, aggregate, store the aggregate), in any cluster of the tree.
    - **training_s** = the wall-clock length of the union of all client busy intervals of the
      round, clipped to the span: the time during which at least one client was training.
      Clients run in parallel, so this is neither a sum (which would count parallel work
      twice) nor one client's time: it is how long the round was waiting on training.
    - **aggregation_s** = the length of the union of worker busy intervals *minus* the
      instants already counted as training. A sub-cluster that finishes early aggregates
      while another still trains; that time is attributed to training, since the round
      could not have moved on sooner. The full union is ``aggregation_busy_s``.
    - **overhead_s** = span − length(training ∪ aggregation): instants when no client trained
      and no worker aggregated. That is coordination: script calls, keyspace notifications
      waking nodes, reading state, and the gap between a stage change and the first node
      acting on it.

    So ``training_s + aggregation_s + overhead_s == span_s`` and the stacked bars of a round
    are exactly as tall as the round took. ``slowest_client_s`` is the longest single client
    busy interval of the round (the straggler). Rounds whose ``generation`` event is no longer
    in the (capped) stream are left out.
    """
    events = sorted(events, key=lambda e: tuple(int(p) for p in e[0].split("-", 1)))
    if not events:
        return []
    starts: dict[int, int] = {}
    ends: dict[int, tuple[int, bool]] = {}
    abort_ms: int | None = None
    for event_id, f in events:
        cluster, op = f.get("cluster", ""), f.get("op", "")
        if cluster != keys.root_of(cluster):
            continue
        round_ = int(f.get("round") or 0)
        if op == "generation":
            starts.setdefault(round_, _ms(event_id))
        elif op == "consensus":
            ends.setdefault(round_, (_ms(event_id), True))
        elif op in _ABORTS and abort_ms is None:
            abort_ms = _ms(event_id)
    last_ms = _ms(events[-1][0])
    training = _busy(events, "start_training", "submit_params")
    aggregating = _busy(events, "start_aggregation", "upload_aggregate")
    timings = []
    for round_, start in sorted(starts.items()):
        if round_ in ends:
            end, complete = ends[round_]
        else:
            end = abort_ms if abort_ms is not None and abort_ms >= start else last_ms
            complete = False
        clients = _clip(training.get(round_, []), start, end)
        workers = _clip(aggregating.get(round_, []), start, end)
        t = _length(clients)
        both = _length(clients + workers)
        longest = max((e - s for s, e in training.get(round_, [])), default=0)
        timings.append(RoundTiming(
            round=round_, start_ms=start, end_ms=end, span_s=(end - start) / 1000,
            training_s=t / 1000, aggregation_s=(both - t) / 1000,
            overhead_s=(end - start - both) / 1000,
            aggregation_busy_s=_length(workers) / 1000, slowest_client_s=longest / 1000,
            complete=complete,
        ))
    return timings


# --- reading a job ------------------------------------------------------------------------


@dataclass
class JobReport:
    """Everything the report is made of, read once."""

    job: JobStatus
    events: list[Event]
    timings: list[RoundTiming]

    @property
    def name(self) -> str:
        return self.job.root

    def summary(self) -> dict:
        data = self.job.to_json()
        by_round = {t.round: t for t in self.timings}
        metrics = {int(m["round"]): m for m in self.job.metrics}
        rows = []
        for round_ in sorted(set(metrics) | set(by_round)):
            m, t = metrics.get(round_, {}), by_round.get(round_)
            rows.append({
                "round": round_,
                "accuracy": m.get("accuracy"),
                "loss": m.get("loss"),
                "training_s": _r(t.training_s) if t else None,
                "aggregation_s": _r(t.aggregation_s) if t else None,
                "overhead_s": _r(t.overhead_s) if t else None,
                "span_s": _r(t.span_s) if t else None,
                "aggregation_busy_s": _r(t.aggregation_busy_s) if t else None,
                "slowest_client_s": _r(t.slowest_client_s) if t else None,
                "complete": t.complete if t else None,
            })
        first = _ms(self.events[0][0]) if self.events else None
        last = _ms(self.events[-1][0]) if self.events else None
        setup = (self.timings[0].start_ms - first) / 1000 if self.timings and first else None
        final = self.job.metrics[-1] if self.job.metrics else None
        return {
            "job": self.name,
            "outcome": data["outcome"],
            "reason": data["reason"],
            "finished": data["finished"],
            "rounds": data["rounds"],
            "rounds_done": sum(1 for t in self.timings if t.complete),
            "final_accuracy": final["accuracy"] if final else None,
            "final_loss": final["loss"] if final else None,
            "wall_time_s": _r((last - first) / 1000) if self.events else None,
            "setup_s": _r(setup) if setup is not None else None,
            # False when the capped stream no longer starts at the deploy event.
            "stream_complete": bool(self.events) and self.events[0][1].get("op") == "deploy",
            "nodes": node_counts(self.job),
            "per_round": rows,
            "timing_definitions": {
                "span_s": "root generation event that began the round -> root consensus",
                "training_s": "wall-clock union of client start_training->submit_params",
                "aggregation_s": "wall-clock union of worker start_aggregation->"
                                 "upload_aggregate, minus instants counted as training",
                "overhead_s": "span minus (training union aggregation): coordination",
                "aggregation_busy_s": "union of worker intervals, overlap with training "
                                      "included",
            },
        }


def _r(seconds: float) -> float:
    return round(seconds, 3)


def node_counts(job: JobStatus) -> dict[str, int]:
    """Clusters, clients (sub-clusters not counted) and workers of the tree."""
    clients = sum(len(set(c.clients) - set(c.children)) for c in job.clusters.values())
    workers = sum(len(c.workers) for c in job.clusters.values())
    return {"clusters": len(job.clusters), "clients": clients, "workers": workers,
            "nodes": clients + workers}


def read_report(client: redis.Redis, name: str) -> JobReport:
    """The job tree, its metrics and its whole event stream."""
    from hierfl.cli.events import read_all  # the stream reader `hierfl events` uses

    job = read_job(client, name)
    if job is None:
        raise UnknownJob(ErrorCode.UNKNOWN_JOB, f"job={name}: no such job")
    events: list[Event] = list(read_all(client, keys.events(name)))
    return JobReport(job=job, events=events, timings=round_timings(events))


# --- drawing ------------------------------------------------------------------------------


def require_matplotlib() -> None:
    """Refuse early, naming the extra to install, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(
            f"hierfl report draws its plots with matplotlib, which is not installed: "
            f"{INSTALL_HINT}"
        ) from exc


def _figure(width: float, height: float, rows: int = 1,
            ratios: list[float] | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": ratios} if ratios else None)[:, 0]
    return fig, list(axes)


def _integer_rounds(ax, rounds: list[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(max(len(rounds), 2), 13)))
    if rounds:
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)


def plot_accuracy(report: JobReport, path: Path) -> Path:
    """Two panels sharing the round axis: test accuracy (%) above, test loss below."""
    metrics = report.job.metrics
    rounds = [int(m["round"]) for m in metrics]
    acc = [100 * float(m["accuracy"]) for m in metrics]
    loss = [float(m["loss"]) for m in metrics]
    fig, (top, bottom) = _figure(8, 6.5, rows=2)
    data = report.job.to_json()
    fig.suptitle(f"{report.name}: test accuracy and loss of the global model per round",
                 fontsize=13, fontweight="bold")
    done = sum(1 for t in report.timings if t.complete)
    top.set_title(f"outcome {data['outcome']}, {done} of {data['rounds']} "
                  f"rounds, round 0 = the initial model", fontsize=9, color="0.35")
    top.plot(rounds, acc, marker="o", color="tab:blue", linewidth=2, markersize=5)
    top.set_ylabel("test accuracy (%)")
    top.grid(True, alpha=0.35)
    bottom.plot(rounds, loss, marker="s", color="tab:red", linewidth=2, markersize=5)
    bottom.set_ylabel("test loss (mean cross-entropy)")
    bottom.set_xlabel("global round")
    bottom.grid(True, alpha=0.35)
    if rounds:
        top.set_ylim(max(0.0, min(acc) - 5), min(100.0, max(acc) + 6))
        top.annotate(f"{acc[-1]:.1f}% at round {rounds[-1]}", xy=(rounds[-1], acc[-1]),
                     xytext=(-10, -28), textcoords="offset points", ha="right",
                     fontsize=10, fontweight="bold", color="tab:blue",
                     arrowprops={"arrowstyle": "->", "color": "tab:blue"})
        bottom.annotate(f"{loss[-1]:.3f}", xy=(rounds[-1], loss[-1]), xytext=(-10, 22),
                        textcoords="offset points", ha="right", fontsize=10,
                        fontweight="bold", color="tab:red",
                        arrowprops={"arrowstyle": "->", "color": "tab:red"})
        bottom.set_ylim(bottom=0)
    else:
        top.text(0.5, 0.5, "no metrics recorded", transform=top.transAxes, ha="center")
    _integer_rounds(bottom, rounds)
    fig.savefig(path, format="png")
    return path


#: The stacked parts: field, legend label, colour (matplotlib's tab palette, grey last).
_PARTS = (("training_s", "training (some client trains)", "tab:blue"),
          ("aggregation_s", "aggregation (some worker aggregates, no client trains)",
           "tab:orange"),
          ("overhead_s", "coordination overhead (nobody trains or aggregates)", "0.6"))
#: A round longer than this many times the median round is cut off in the seconds panel (its
#: total is printed on it) so that one slow round does not flatten all the others.
_OUTLIER = 3.0


def _seconds_cap(spans: list[float]) -> float | None:
    """The y limit of the seconds panel, or None when no round is an outlier."""
    if len(spans) < 3:
        return None
    median = sorted(spans)[len(spans) // 2]
    usual = [s for s in spans if s <= _OUTLIER * median]
    if median <= 0 or len(usual) == len(spans):
        return None
    return 1.35 * max(usual)


def _percent(part: float, whole: float) -> str:
    share = 100 * part / whole
    return f"{share:.0f}%" if share >= 10 or share == 0 else f"{share:.1f}%"


def _stack(ax, rounds: list[int], parts: list[list[float]]) -> None:
    bottom = [0.0] * len(rounds)
    for (_, label, colour), values in zip(_PARTS, parts, strict=True):
        ax.bar(rounds, values, bottom=bottom, label=label, color=colour, width=0.72,
               edgecolor="white", linewidth=0.5)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]


def plot_timings(report: JobReport, path: Path) -> Path:
    """Per round, stacked: training, aggregation, overhead. Above in seconds (each bar is as
    tall as the round took), below as shares of the round, so the split stays visible when
    one round (often the first, while the nodes warm up) is much longer than the others."""
    timings = report.timings
    rounds = [t.round for t in timings]
    spans = [t.span_s for t in timings]
    fig, (ax, share) = _figure(9, 6.5, rows=2, ratios=[3, 2])
    fig.suptitle(f"{report.name}: where each round's wall-clock time went",
                 fontsize=13, fontweight="bold")
    total = sum(spans)
    setup = report.summary()["setup_s"]
    line1 = f"from the event stream (Redis server clock): {len(timings)} rounds in {total:.1f} s"
    if setup is not None:
        line1 += f", after {setup:.1f} s of setup (deploy to round 1)"
    line2 = ""
    if total:
        line2 = ", ".join(
            f"{label.split(' ')[0]} {_percent(sum(getattr(t, attr) for t in timings), total)}"
            for attr, label, _ in _PARTS) + " of all round time"
    cap = _seconds_cap(spans)
    if cap is not None:
        line2 += "; ▲ = bar cut off, its total printed in it"
    ax.set_title(f"{line1}\n{line2}", fontsize=9, color="0.35")
    if not timings:
        ax.text(0.5, 0.5, "no rounds in the event stream", transform=ax.transAxes,
                ha="center")
        fig.savefig(path, format="png")
        return path
    _stack(ax, rounds, [[getattr(t, attr) for t in timings] for attr, _, _ in _PARTS])
    top = cap if cap is not None else max(spans) * 1.2 or 1.0
    ax.set_ylim(0, top)
    for t in timings:
        label = f"{t.span_s:.2f}s" + ("" if t.complete else "\n(ended)")
        if t.span_s > top:
            ax.annotate(f"▲ {label}", xy=(t.round, top), xytext=(0, -4),
                        textcoords="offset points", ha="center", va="top", fontsize=8,
                        fontweight="bold", color="white")
        else:
            ax.annotate(label, xy=(t.round, t.span_s), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=8)
    ax.set_ylabel("seconds")
    ax.grid(True, axis="y", alpha=0.35)
    ax.set_axisbelow(True)
    _stack(share, rounds, [[100 * getattr(t, attr) / t.span_s if t.span_s else 0.0
                            for t in timings] for attr, _, _ in _PARTS])
    share.set_ylim(0, 100)
    share.set_ylabel("share of the round (%)")
    share.set_xlabel("global round")
    share.grid(True, axis="y", alpha=0.35)
    share.set_axisbelow(True)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3,
               fontsize=8, frameon=False)
    _integer_rounds(share, rounds)
    fig.savefig(path, format="png")
    return path


def tree_svg(job: JobStatus, path: Path) -> Path:
    """The job tree as `hierfl status` shows it, recorded by rich and exported as SVG."""
    from rich.console import Console

    from hierfl.cli.status import render

    tree = render(job)
    console = Console(record=True, width=240, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", highlight=False)
    # As wide as the widest line (the member lists), so the SVG is not mostly empty.
    console.width = min(240, max(60, console.measure(tree).maximum))
    console.print(tree)
    path.write_text(console.export_svg(title=f"hierfl status {job.root}"), encoding="utf-8")
    return path


def write_report(client: redis.Redis, name: str, out_dir: Path) -> tuple[JobReport, list[Path]]:
    """Read job `name` and write the four report files into `out_dir`."""
    require_matplotlib()
    report = read_report(client, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        plot_accuracy(report, out_dir / "accuracy.png"),
        plot_timings(report, out_dir / "timings.png"),
        tree_svg(report.job, out_dir / "tree.svg"),
    ]
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps(report.summary(), indent=2) + "\n", encoding="utf-8")
    written.append(summary)
    return report, written


__all__ = ["JobReport", "MissingExtra", "RoundTiming", "read_report", "round_timings",
           "write_report"]
