"""The live view's pure render, as text at fixed widths (rich's capture console, colour off)."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
from driver import Driver
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from hierfl import keys
from hierfl.cli.app import app
from hierfl.protocol import Field, Outcome
from hierfl.store.state import read_history
from hierfl.tui.render import render
from hierfl.tui.snapshot import Snapshot, read_snapshot, watched_keys

CLUSTER_LINE = re.compile(r"^ *(demo\S*) +(idle|training|aggregating|finished) ")
LEGEND = "· deployed  ○ jobsheet_acked  ◐ dataset_acked  ● busy  ✓ done  × exited"


def text_of(snapshot: Snapshot, now: float, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(render(snapshot, now))
    return [line.rstrip() for line in console.export_text().splitlines()]


def snap(r, root: str = "demo") -> Snapshot:
    found = read_snapshot(r, root)
    assert found is not None
    return found


def with_root_fields(s: Snapshot, **fields: str) -> Snapshot:
    top = s.top
    top = dataclasses.replace(top, fields={**top.fields, **fields})
    return dataclasses.replace(s, clusters=(top, *s.clusters[1:]))


@pytest.fixture
def mid_round(r) -> Driver:
    """Round 1 of 3: demo#0's clients have all submitted (it aggregates), demo#1 trains."""
    d = Driver(r, rounds=3)
    d.setup()
    d.train_cluster("demo#0")
    return d


def test_a_two_level_job_mid_round_shows_every_cluster_with_stage_words(r, mid_round):
    s = snap(r)
    lines = text_of(s, now=s.created_ms / 1000 + 12)
    assert lines[0] == "demo  running  round 1/3  elapsed 0:00:12"
    assert lines[1] == LEGEND
    assert lines[2:8] == [
        "demo      training     round 1/3  gen 1",
        "  clients busy: #0● #1●   workers dataset_acked: w0◐ w1◐",
        "  demo#0  aggregating  round 1/3  epoch 0/1  gen 1",
        "    clients done: c0✓ c1✓   workers dataset_acked: w0◐ w1◐",
        "  demo#1  training     round 1/3  epoch 0/1  gen 1",
        "    clients dataset_acked: c0◐ c1◐   workers dataset_acked: w0◐ w1◐",
    ]
    assert lines[8].strip("─ ") == "events"
    footer = lines[9:]
    assert len(footer) == 6
    assert footer[-1].split()[1:] == ["demo#0", "-", "aggregation", "training→aggregating"]
    assert footer[-2].split()[1:] == ["demo#0", "client/c1", "submit_params", "busy→done"]


def test_before_the_first_round_members_show_their_setup_statuses(r):
    d = Driver(r, rounds=3)
    d.deploy()
    d.scripts.ack_jobsheet("demo#1", "client", "c1")
    lines = text_of(snap(r), now=0)
    assert "demo      idle         round 0/3  gen 0" in lines
    assert "    clients deployed: c0· c1○   workers deployed: w0· w1·" in lines
    assert lines[-1].split()[1:] == ["demo#1", "client/c1", "ack_jobsheet",
                                     "deployed→jobsheet_acked"]


def test_header_shows_the_latest_metric_and_the_elapsed_time(r, mid_round):
    s = dataclasses.replace(snap(r), metrics=({"round": 1, "accuracy": 0.9512, "loss": 0.1234},))
    header = text_of(s, now=s.created_ms / 1000 + 3725)[0]
    assert header == "demo  running  round 1/3  elapsed 1:02:05  accuracy 0.9512  loss 0.1234"


def test_a_finished_job_stops_its_clock_at_its_last_event(r):
    d = Driver(r, rounds=2)
    d.setup()
    for _ in range(2):
        d.run_round()
    d.exit_all()
    digest = read_history(r, "demo")[2]
    d.scripts.record_metric("demo", "w0", 2, digest, 0.875, 0.5)
    s = snap(r)
    assert s.finished
    lines = text_of(s, now=s.created_ms / 1000 + 86_400)
    assert lines[0] == ("demo  completed  round 2/2  elapsed 0:00:00  accuracy 0.8750  "
                        "loss 0.5000")
    assert lines[-1] == "completed: every node has exited"
    assert lines[-2].split()[1:] == ["demo", "worker/w0", "metric", "accuracy=0.8750",
                                     "loss=0.5000"]
    assert "  demo#1  finished     round 2/2  epoch 1/1  gen 2" in lines
    assert "    clients exited: c0× c1×   workers exited: w0× w1×" in lines


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.CANCELLED])
def test_a_failed_or_cancelled_job_says_so_and_why(r, mid_round, outcome):
    s = with_root_fields(snap(r), **{Field.OUTCOME.value: outcome.value,
                                     Field.REASON.value: "no majority among 3 aggregates"})
    lines = text_of(s, now=0)
    assert lines[0].startswith(f"demo  {outcome.value}  round 1/3")
    assert lines[1] == "reason: no majority among 3 aggregates"


def test_long_event_extras_are_cut_not_the_columns_before_them(r, mid_round):
    s = snap(r)
    entry_id, fields = s.events[-1]
    long = dict(fields, op="consensus", **{"from": "", "to": ""}, digest="ab" * 32, votes="2",
                note="x" * 200)
    lines = text_of(dataclasses.replace(s, events=(*s.events[:-1], (entry_id, long))), now=0)
    last = lines[-1]
    assert cell_len(last) == 80 and last.endswith("…")
    assert last.split()[1:5] == ["demo#0", "-", "consensus", "digest=abababab…"]
    assert "votes=2" in last


def test_a_narrow_terminal_gets_members_on_two_lines_not_wrapped(r, mid_round):
    lines = text_of(snap(r), now=0, width=50)
    assert all(cell_len(line) <= 50 for line in lines)
    assert "    clients dataset_acked: c0◐ c1◐" in lines
    assert "    workers dataset_acked: w0◐ w1◐" in lines


def test_more_than_eight_members_collapse_into_counts(r):
    d = Driver(r, clients=[0, 9], rounds=2)
    d.setup()
    gen = d.cluster("demo#0").generation
    for c in ("c0", "c1", "c2"):
        d.scripts.start_training("demo#0", "client", c, gen)
    lines = text_of(snap(r), now=0)
    assert "    clients dataset_acked: ◐ 6  ● 3  of 9   workers dataset_acked: w0◐ w1◐" in lines


@pytest.fixture
def three_levels(r) -> Driver:
    """300 clients: 2 sub-clusters of 3 sub-clusters of 50 clients, 3 workers everywhere."""
    d = Driver(r, sub=[2, 3], clients=[0, 0, 50], workers=[3, 3, 3], rounds=3)
    d.setup()
    d.train_cluster("demo#0_1")
    return d


def test_three_levels_with_300_clients_fit_80_by_40(r, three_levels):
    s = snap(r)
    lines = text_of(s, now=0)
    assert len(lines) <= 40
    assert all(cell_len(line) <= 80 for line in lines)
    names = [m[1] for line in lines if (m := CLUSTER_LINE.match(line))]
    assert names == ["demo", "demo#0", "demo#0_0", "demo#0_1", "demo#0_2", "demo#1", "demo#1_0",
                     "demo#1_1", "demo#1_2"]
    assert "      clients done: ✓ 50  of 50   workers dataset_acked: w0◐ w1◐ w2◐" in lines
    assert "    demo#0_1  aggregating  round 1/3  epoch 0/1  gen 1" in lines
    assert "    clients busy: #0_0● #0_1● #0_2●   workers dataset_acked: w0◐ w1◐ w2◐" in lines


def test_watch_once_prints_one_frame_that_fits(r, three_levels, redis_url, monkeypatch):
    monkeypatch.setenv("HIERFL_REDIS_URL", redis_url)
    result = CliRunner().invoke(app, ["watch", "demo", "--once", "--width", "80"])
    assert result.exit_code == 0, result.output
    lines = result.output.rstrip("\n").splitlines()
    assert lines[0].startswith("demo  running  round 1/3  elapsed ")
    assert 20 <= len(lines) <= 40
    assert all(cell_len(line) <= 80 for line in lines)
    assert sum("round 1/3" in line for line in lines) == 10  # the header and 9 clusters


def test_watch_of_an_unknown_job_exits_1_saying_so(redis_url, monkeypatch):
    monkeypatch.setenv("HIERFL_REDIS_URL", redis_url)
    for args in (["watch", "ghost", "--once"], ["watch", "ghost"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1
        assert "job=ghost: no such job" in result.output


def test_the_view_watches_every_hash_of_the_tree(r, mid_round):
    watched = watched_keys(snap(r))
    for cluster in ("demo", "demo#0", "demo#1"):
        assert {keys.job(cluster), keys.clients(cluster), keys.workers(cluster)} <= set(watched)
    assert keys.metrics("demo") in watched and keys.events("demo") in watched
