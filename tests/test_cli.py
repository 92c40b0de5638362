"""The command line against a real server: what users type and what they get back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hierfl.cli.app import app


@pytest.fixture
def cli(redis_url, monkeypatch):
    monkeypatch.setenv("HIERFL_REDIS_URL", redis_url)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def test_init_job_prints_the_job_names(cli):
    result = cli("init-job", "demo", "--sub", "2", "--depth", "2", "--clients", "1")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()]
    assert names == ["demo", "demo#0", "demo#0_0", "demo#0_1", "demo#1", "demo#1_0",
                     "demo#1_1"]


def test_second_init_job_with_the_same_name_is_refused(cli):
    assert cli("init-job", "demo").exit_code == 0
    before = json.loads(cli("status", "demo", "--json").output)
    result = cli("init-job", "demo", "--sub", "3")
    assert result.exit_code == 1
    assert "job=demo: a job of this name exists already" in result.output
    assert json.loads(cli("status", "demo", "--json").output) == before


def test_status_json_has_the_documented_shape(cli):
    cli("init-job", "demo", "--sub", "2", "--clients", "2", "--workers", "1", "--rounds", "4")
    data = json.loads(cli("status", "demo", "--json").output)
    assert data["job"] == "demo" and data["finished"] is False
    assert data["round"] == 0 and data["rounds"] == 4 and data["metrics"] == []
    sub = data["clusters"]["demo#1"]
    assert sub["process_stage"] == 0 and sub["client_stage"] == 0 and sub["worker_stage"] == 0
    assert sub["generation"] == 0
    assert sub["clients"] == {"c0": 0, "c1": 0} and sub["workers"] == {"w0": 0}
    assert data["clusters"]["demo"]["clients"] == {"demo#0": 0, "demo#1": 0}


def test_status_text_names_stages_by_status(cli):
    cli("init-job", "demo", "--sub", "2", "--clients", "2", "--workers", "1", "--rounds", "4")
    text = " ".join(cli("status", "demo").output.split())
    assert "demo#1 idle gen 0 epoch 0/1 clients deployed (c0:deployed c1:deployed)" in text
    assert "workers deployed (w0:deployed)" in text


def test_status_of_an_unknown_job_says_so(cli):
    result = cli("status", "ghost")
    assert result.exit_code == 1 and "job=ghost: no such job" in result.output


def test_malformed_sheet_names_the_field_and_deploys_nothing(cli, tmp_path):
    sheet = tmp_path / "bad.toml"
    sheet.write_text('[job]\nname = "bad"\nrounds = 2\n[training]\nlr = -1\n')
    result = cli("init-job", "bad", "--sheet", str(sheet))
    assert result.exit_code == 1
    assert "[training].lr" in result.output
    assert cli("status", "bad").exit_code == 1


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_bad_blob_cache_bound_is_refused_before_anything_is_deployed(cli, tmp_path,
                                                                        monkeypatch, processes):
    sheet = tmp_path / "cache.toml"
    sheet.write_text('[job]\nname = "cache"\nrounds = 1\n')
    monkeypatch.setenv("HIERFL_BLOB_CACHE_MB", "lots")
    result = cli("simulate", str(sheet), "--processes", processes, "--runs-dir",
                 str(tmp_path / "runs"))
    assert result.exit_code == 1
    assert "$HIERFL_BLOB_CACHE_MB must be a number of megabytes >= 0, got 'lots'" in result.output
    assert cli("status", "cache").exit_code == 1


def test_unknown_role_is_refused(cli):
    result = cli("node", "--role", "boss")
    assert result.exit_code == 2
    assert "boss" in result.output and "client" in result.output


def test_unknown_cluster_is_refused(cli):
    cli("init-job", "demo")
    result = cli("node", "--role", "client", "--cluster", "demo#9")
    assert result.exit_code == 1
    assert "cluster=demo#9: no such cluster job" in result.output


def test_unreachable_redis_fails_fast_naming_the_url(monkeypatch):
    monkeypatch.delenv("HIERFL_REDIS_URL", raising=False)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["status", "demo", "--redis", "redis://127.0.0.1:1/0"])
    assert time.monotonic() - started < 5.0
    assert result.exit_code == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.output


def test_init_job_from_a_sheet_keeps_its_rounds_unless_told(cli):
    sheet = str(Path(__file__).resolve().parents[1] / "examples" / "digits.toml")
    assert cli("init-job", "a", "--sheet", sheet).exit_code == 0
    assert json.loads(cli("status", "a", "--json").output)["rounds"] == 12
    assert cli("init-job", "b", "--sheet", sheet, "--rounds", "3").exit_code == 0
    assert json.loads(cli("status", "b", "--json").output)["rounds"] == 3


def test_a_node_given_missing_data_stops_before_it_claims_a_slot(cli, tmp_path):
    assert cli("init-job", "wc", "--clients", "1", "--workers", "1").exit_code == 0
    before = json.loads(cli("status", "wc", "--json").output)
    missing = tmp_path / "nowhere.npz"
    result = cli("node", "--role", "client", "--job", "wc", "--data", str(missing))
    assert result.exit_code == 1
    assert f"--data {missing}: no such file" in result.output
    result = cli("node", "--role", "worker", "--job", "wc", "--data", str(missing))
    assert result.exit_code == 1
    assert "--data is a client's own training data; a worker takes none" in result.output
    assert json.loads(cli("status", "wc", "--json").output) == before  # no slot claimed


def test_counts_of_one_read_in_the_singular(cli):
    from hierfl.wording import counted

    assert [counted(1, "processes"), counted(1, "rounds"), counted(0, "workers")] == [
        "1 process", "1 round", "0 workers"]
    result = cli("init-job", "one", "--sub", "2", "--clients", "1", "--workers", "1")
    assert "one#0  (1 client, 1 worker)" in result.output, result.output


def test_commands_other_than_the_nodes_start_without_torch(redis_url):
    # Importing torch takes 2-3 s on a small machine: `hierfl status` and the rest are for
    # people at a terminal (and for scripts that call them often), so only node code loads it.
    probe = ("import sys\n"
             "from typer.testing import CliRunner\n"
             "from hierfl.cli.app import app\n"
             f"result = CliRunner().invoke(app, ['status', 'nosuch', '--redis', '{redis_url}'])\n"
             "print(result.exit_code, 'torch' in sys.modules)\n"
             # A sub-cluster's worker only aggregates arrays: its process need not load it
             # either (models are built, and rounds scored, by root workers and clients).
             "import hierfl.node.worker, hierfl.node.claim\n"
             "print('torch' in sys.modules)\n")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           timeout=60)
    assert shown.stdout.split() == ["1", "False", "False"], shown.stderr
