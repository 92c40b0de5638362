"""`hierfl report`: per-round timings from the event stream, and the report files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from driver import Driver

from hierfl.report import RoundTiming, round_timings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ev(ms: int, cluster: str, op: str, node: str = "-", gen: int = 1, round_: int = 1,
       seq: int = 0) -> tuple[str, dict[str, str]]:
    return (f"{ms}-{seq}", {"cluster": cluster, "node": node, "op": op, "from": "", "to": "",
                            "gen": str(gen), "round": str(round_)})


def busy(cluster: str, node: str, start: int, end: int, role: str = "client", gen: int = 1,
         round_: int = 1) -> list[tuple[str, dict[str, str]]]:
    ops = ("start_training", "submit_params") if role == "client" else (
        "start_aggregation", "upload_aggregate")
    return [ev(start, cluster, ops[0], f"{role}/{node}", gen, round_),
            ev(end, cluster, ops[1], f"{role}/{node}", gen, round_)]


def synthetic() -> list[tuple[str, dict[str, str]]]:
    """Two global rounds of demo (demo#0, demo#1), then a third that fails."""
    events = [
        ev(0, "demo", "deploy", gen=0, round_=0),
        ev(500, "demo", "dataset_flag", gen=0, round_=0),
        # round 1: spans 1000 -> 2000
        ev(1000, "demo#0", "generation", seq=0),
        ev(1000, "demo#1", "generation", seq=1),
        ev(1000, "demo", "generation", seq=2),
        *busy("demo#0", "c0", 1010, 1510),
        *busy("demo#0", "c1", 1020, 1400),
        *busy("demo#1", "c0", 1050, 1800),
        *busy("demo#0", "w0", 1520, 1600, role="worker"),  # overlaps demo#1's training
        *busy("demo#1", "w0", 1810, 1900, role="worker"),
        *busy("demo", "w0", 1920, 1950, role="worker"),
        *busy("demo", "w1", 1925, 1960, role="worker"),
        ev(2000, "demo", "consensus"),
        # round 2: spans 2000 -> 3000; demo#0 runs two cluster epochs (generations 2 and 3)
        ev(2000, "demo", "generation", gen=2, round_=2, seq=1),
        *busy("demo#0", "c0", 2100, 2300, gen=2, round_=2),
        *busy("demo#0", "w0", 2300, 2400, role="worker", gen=2, round_=2),
        ev(2400, "demo#0", "generation", gen=3, round_=2, seq=1),
        *busy("demo#0", "c0", 2450, 2650, gen=3, round_=2),
        *busy("demo#1", "c0", 2100, 2200, gen=2, round_=2),
        ev(2101, "demo#1", "start_training", "client/c0", gen=2, round_=2),  # a repeat: no-op
        *busy("demo#0", "w0", 2700, 2800, role="worker", gen=3, round_=2),
        *busy("demo", "w0", 2850, 2900, role="worker", gen=2, round_=2),
        ev(3000, "demo", "consensus", gen=2, round_=2),
        # round 3: clients train, then the job fails (no majority) at 3600
        ev(3000, "demo", "generation", gen=3, round_=3, seq=1),
        *busy("demo#0", "c0", 3100, 3400, gen=4, round_=3),
        ev(3500, "demo#0", "start_aggregation", "worker/w0", gen=4, round_=3),
        ev(3600, "demo", "failed", gen=3, round_=3),
        ev(3700, "demo", "exited", gen=3, round_=3),
    ]
    return events


def test_round_timings_on_a_synthetic_stream():
    timings = round_timings(reversed(synthetic()))  # order of the input does not matter
    assert timings == [
        # training: union of [1010,1510] [1020,1400] [1050,1800] = [1010,1800] = 790 ms;
        # workers: [1520,1600] lies inside training; [1810,1900] + [1920,1960] = 130 ms;
        # overhead: 1000 - 790 - 130 = 80 ms.
        RoundTiming(round=1, start_ms=1000, end_ms=2000, span_s=1.0, training_s=0.79,
                    aggregation_s=0.13, overhead_s=0.08, aggregation_busy_s=0.21,
                    slowest_client_s=0.75, complete=True),
        # training: [2100,2300] [2450,2650] [2100,2200] = 400 ms (the repeated start adds
        # nothing); workers [2300,2400] [2700,2800] [2850,2900] = 250 ms, none overlapping;
        # overhead: 1000 - 650 = 350 ms.
        RoundTiming(round=2, start_ms=2000, end_ms=3000, span_s=1.0, training_s=0.4,
                    aggregation_s=0.25, overhead_s=0.35, aggregation_busy_s=0.25,
                    slowest_client_s=0.2, complete=True),
        # ended by the failure at 3600; the unfinished aggregation adds no time.
        RoundTiming(round=3, start_ms=3000, end_ms=3600, span_s=0.6, training_s=0.3,
                    aggregation_s=0.0, overhead_s=0.3, aggregation_busy_s=0.0,
                    slowest_client_s=0.3, complete=False),
    ]
    for t in timings:
        assert t.training_s + t.aggregation_s + t.overhead_s == pytest.approx(t.span_s)


def test_round_timings_of_a_running_job_end_at_the_last_event():
    events = [e for e in synthetic() if int(e[0].split("-")[0]) < 2500]
    last = round_timings(events)[-1]
    assert (last.round, last.start_ms, last.end_ms, last.complete) == (2, 2000, 2450, False)
    assert last.training_s == pytest.approx(0.2)  # [2100,2300] ∪ [2100,2200]
    assert last.aggregation_s == pytest.approx(0.1)  # [2300,2400]
    assert round_timings([]) == []


def test_rounds_trimmed_from_the_capped_stream_are_left_out():
    events = [e for e in synthetic() if int(e[0].split("-")[0]) >= 2000]
    assert [t.round for t in round_timings(events)] == [2, 3]


# --- the command, end to end on a driven job ----------------------------------------------


def driven_job(r, name: str = "rep", rounds: int = 3) -> Driver:
    """A finished two-level job moved by hand, with a metric per round like a root worker."""
    d = Driver(r, name, rounds=rounds)
    d.setup()
    worker = d.specs[name].workers[0]
    for round_ in range(rounds + 1):
        if round_:
            d.run_round()
        digest = r.hget(f"hierfl:{{{name}}}:history", round_).decode()
        d.scripts.record_metric(name, worker, round_, digest, 0.3 + 0.2 * round_,
                                2.0 / (round_ + 1))
    d.exit_all()
    return d


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_writes_plots_tree_and_summary(r, hierfl_env, tmp_path):
    driven_job(r)
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "hierfl", "report", "rep", "--out", str(out)],
                          env=hierfl_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rep completed: 3/3 rounds, final test accuracy 0.9000" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.png", "summary.json", "timings.png", "tree.svg"]
    for name in ("accuracy.png", "timings.png"):
        width, height = png_size(out / name)
        assert 600 <= width <= 2000 and 400 <= height <= 1500, (name, width, height)
        assert (out / name).stat().st_size > 10_000
    svg = (out / "tree.svg").read_text()
    assert svg.startswith("<svg")
    for cluster in ("rep", "rep#0", "rep#1"):
        assert f"{cluster}" in svg
    assert "exited" in svg and "finished" in svg

    summary = json.loads((out / "summary.json").read_text())
    assert summary["job"] == "rep" and summary["outcome"] == "completed"
    assert summary["reason"] is None and summary["rounds"] == summary["rounds_done"] == 3
    assert summary["nodes"] == {"clusters": 3, "clients": 4, "workers": 6, "nodes": 10}
    assert summary["stream_complete"] is True
    assert summary["wall_time_s"] >= 0 and summary["final_accuracy"] == pytest.approx(0.9)
    rows = summary["per_round"]
    assert [row["round"] for row in rows] == [0, 1, 2, 3]
    assert [row["accuracy"] for row in rows] == pytest.approx([0.3, 0.5, 0.7, 0.9])
    assert rows[0]["span_s"] is None and rows[0]["loss"] == pytest.approx(2.0)
    for row in rows[1:]:
        parts = row["training_s"] + row["aggregation_s"] + row["overhead_s"]
        assert min(row["training_s"], row["aggregation_s"], row["overhead_s"]) >= 0
        assert parts == pytest.approx(row["span_s"], abs=0.002)
        assert row["complete"] is True


def test_report_of_an_unknown_job_says_so(hierfl_env, redis_url, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hierfl", "report", "nope", "--out",
                           str(tmp_path / "x")], env=hierfl_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert "UNKNOWN_JOB" in proc.stderr and "nope" in proc.stderr


def test_report_without_matplotlib_names_the_extra(hierfl_env, tmp_path):
    # A path entry that shadows matplotlib with a module that fails to import.
    shadow = tmp_path / "shadow"
    (shadow / "matplotlib").mkdir(parents=True)
    (shadow / "matplotlib" / "__init__.py").write_text("raise ImportError('not here')\n")
    env = {**hierfl_env, "PYTHONPATH": f"{shadow}:{hierfl_env['PYTHONPATH']}"}
    proc = subprocess.run([sys.executable, "-m", "hierfl", "report", "any", "--out",
                           str(tmp_path / "x")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "pip install 'hierfl[report]'" in proc.stderr
    assert not (tmp_path / "x").exists()
