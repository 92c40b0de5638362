"""End to end: real node processes, a real redis-server, real training on the digits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def hierfl(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hierfl", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{proc.args} did not finish:\n{out}")
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{out}"
    return out


def status(name: str, env: dict[str, str]) -> dict:
    return json.loads(finish(hierfl("status", name, "--json", env=env)))


def assert_all_done(data: dict) -> None:
    assert data["finished"] and data["outcome"] == "completed"
    for name, cluster in data["clusters"].items():
        assert cluster["process_stage"] == 3, name
        assert set(cluster["clients"].values()) == {5}, name
        assert set(cluster["workers"].values()) == {5}, name


def test_run_two_level_sheet_with_node_processes(hierfl_env, tmp_path):
    sheet = tmp_path / "two.toml"
    sheet.write_text(
        '[job]\nname = "two"\nrounds = 4\n'
        "[topology]\nsub = [2]\nclients = [0, 2]\nworkers = [2, 1]\n"
        "[training]\nlr = 0.1\nlocal_epochs = 5\n"
    )
    out = finish(hierfl("run", str(sheet), "--runs-dir", str(tmp_path / "runs"), "--json",
                        env=hierfl_env))
    data = json.loads(out[out.index("{"):])
    assert_all_done(data)
    assert [m["round"] for m in data["metrics"]] == [0, 1, 2, 3, 4]
    assert data["metrics"][-1]["accuracy"] >= 0.85
    logs = sorted(p.name for p in (tmp_path / "runs" / "two").iterdir())
    assert len(logs) == 8 and "two#0.client.c0.log" in logs
    # The same sheet again, with every node a thread of one process: a new name, the same
    # node code, and bit-for-bit the same models and metrics (deterministic init, training
    # seeds and aggregation); one node running at a time, the others asleep until it waits
    # for a notification.
    out = finish(hierfl("simulate", str(sheet), "--runs-dir", str(tmp_path / "runs"),
                        "--json", "--concurrency", "1", env=hierfl_env))
    threads = json.loads(out[out.index("{"):])
    assert_all_done(threads)
    assert threads["job"] == "two-2"
    assert threads["clusters"]["two-2"]["global"] == data["clusters"]["two"]["global"]
    strip = [{k: v for k, v in m.items() if k != "at"} for m in data["metrics"]]
    assert [{k: v for k, v in m.items() if k != "at"} for m in threads["metrics"]] == strip
    assert (tmp_path / "runs" / "two-2" / "nodes.log").stat().st_size > 0
    # Spread over two processes, whole clusters in each: still the same bytes. Scoring every
    # second round only (and the last) changes no model either.
    sparse = tmp_path / "sparse.toml"
    sparse.write_text(sheet.read_text().replace("rounds = 4\n", "rounds = 4\nevaluate_every = 2\n"))
    out = finish(hierfl("simulate", str(sparse), "--runs-dir", str(tmp_path / "runs"),
                        "--json", "--processes", "2", env=hierfl_env))
    spread = json.loads(out[out.index("{"):])
    assert_all_done(spread)
    assert spread["clusters"]["two-3"]["global"] == data["clusters"]["two"]["global"]
    assert [m["round"] for m in spread["metrics"]] == [0, 2, 4]
    assert spread["metrics"][-1]["accuracy"] == data["metrics"][-1]["accuracy"]
    for i in (0, 1):
        assert "ready: job sheet and dataset acknowledged" in (
            tmp_path / "runs" / "two-3" / f"nodes-{i}.log").read_text()


def test_init_job_then_nodes_that_claim_their_own_slots(hierfl_env):
    # Clients start first and wait for a job to appear; workers join after the deploy.
    clients = [hierfl("node", "--role", "client", env=hierfl_env) for _ in range(2)]
    finish(hierfl("init-job", "demo", "--sub", "2", "--clients", "1", "--workers", "1",
                  "--rounds", "2", env=hierfl_env))
    workers = [hierfl("node", "--role", "worker", env=hierfl_env) for _ in range(3)]
    outputs = [finish(p) for p in clients + workers]
    assert sum("joined demo#" in o for o in outputs) == 4  # 2 clients + 2 sub-cluster workers
    data = status("demo", hierfl_env)
    assert_all_done(data)
    assert len(data["metrics"]) == 3  # the initial model and two rounds


def test_digits_example_reaches_the_accuracy_target(hierfl_env, tmp_path):
    out = finish(hierfl("run", str(ROOT / "examples" / "digits.toml"), "--runs-dir",
                        str(tmp_path / "runs"), "--json", env=hierfl_env), timeout=420)
    data = json.loads(out[out.index("{"):])
    assert_all_done(data)
    assert len(data["clusters"]) == 3
    assert data["metrics"][-1]["round"] == data["rounds"]
    assert data["metrics"][-1]["accuracy"] >= 0.93
