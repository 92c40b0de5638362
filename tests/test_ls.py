"""`hierfl ls`: every registered job with its outcome, state, round, nodes, accuracy and age."""

from __future__ import annotations

import json
import time

import pytest
from driver import Driver
from typer.testing import CliRunner

from hierfl import keys
from hierfl.cli.app import app
from hierfl.store.state import read_history


@pytest.fixture
def cli(redis_url, monkeypatch):
    monkeypatch.setenv("HIERFL_REDIS_URL", redis_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def deployed(r, root: str, **kwargs) -> Driver:
    d = Driver(r, root, **kwargs)
    d.deploy()
    d.scripts.register_job(root)
    return d


def finished(d: Driver, accuracy: float) -> None:
    d.ack_all_jobsheets()
    d.ack_all_datasets()
    for _ in range(d.rounds):
        d.run_round()
    d.exit_all()
    digest = read_history(d.client, d.root)[d.rounds]
    d.scripts.record_metric(d.root, "w0", d.rounds, digest, accuracy, 0.25)


def test_an_empty_server_has_no_jobs(cli):
    result = cli("ls")
    assert result.exit_code == 0, result.output
    assert "no jobs on this server" in result.output
    assert json.loads(cli("ls", "--json").output) == []


def test_json_lists_every_job_oldest_first(cli, r):
    finished(deployed(r, "alpha", rounds=2), accuracy=0.9)
    time.sleep(0.005)  # registry times are milliseconds: keep the order unambiguous
    deployed(r, "beta", sub=[3], clients=[0, 4], workers=[1, 2], rounds=5)
    before = time.time()
    result = cli("ls", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["job"] for row in rows] == ["alpha", "beta"]
    alpha, beta = rows
    assert {k: alpha[k] for k in ("outcome", "state", "finished", "round", "rounds", "clients",
                                  "workers", "accuracy")} == {
        "outcome": "completed", "state": "exited", "finished": True, "round": 2, "rounds": 2,
        "clients": 4, "workers": 6, "accuracy": 0.9}
    assert {k: beta[k] for k in ("outcome", "state", "finished", "round", "rounds", "clients",
                                 "workers", "accuracy")} == {
        "outcome": "running", "state": "idle", "finished": False, "round": 0, "rounds": 5,
        "clients": 12, "workers": 7, "accuracy": None}
    for row in rows:
        assert 0 <= row["age_seconds"] < 60
        assert row["created_at"].endswith("+00:00")
    created = int(r.hget(keys.JOBS, "beta"))
    assert abs(beta["age_seconds"] - (before - created / 1000)) < 5


def test_table_has_one_row_per_job(cli, r):
    finished(deployed(r, "alpha", rounds=2), accuracy=0.9)
    d = deployed(r, "beta", rounds=3)
    d.ack_all_jobsheets()
    d.ack_all_datasets()
    result = cli("ls")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["job", "outcome", "state", "round", "clients", "workers",
                                "accuracy", "age"]
    alpha = next(line for line in lines if line.startswith("alpha"))
    beta = next(line for line in lines if line.startswith("beta"))
    assert alpha.split()[:7] == ["alpha", "completed", "exited", "2/2", "4", "6", "0.9000"]
    assert beta.split()[:7] == ["beta", "running", "training", "1/3", "4", "6", "-"]
    assert alpha.split()[-1].endswith("s")


def test_a_registered_job_whose_tree_is_gone_is_listed_as_missing(cli, r):
    deployed(r, "alpha")
    r.hset(keys.JOBS, "ghost", int(time.time() * 1000))
    rows = {row["job"]: row for row in json.loads(cli("ls", "--json").output)}
    assert rows["ghost"]["state"] == "missing" and rows["ghost"]["outcome"] == "missing"
    assert rows["alpha"]["state"] == "idle"
    assert "ghost" in cli("ls").output
