"""`hierfl events`: the job's stream as lines or JSON, the last N, and --follow to the end."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from driver import Driver
from typer.testing import CliRunner

from hierfl import keys
from hierfl.cli.app import app

LINE_TIMEOUT = 30.0


@pytest.fixture
def cli(redis_url, monkeypatch):
    monkeypatch.setenv("HIERFL_REDIS_URL", redis_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


@pytest.fixture
def driver(r) -> Driver:
    return Driver(r)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def finish(d: Driver) -> None:
    for _ in range(d.rounds):
        d.run_round()
    d.exit_all()


def test_json_lines_carry_every_event_in_order(cli, driver, r):
    driver.deploy()
    driver.ack_all_jobsheets()
    result = cli("events", "demo", "--json")
    assert result.exit_code == 0, result.output
    events = json_lines(result.output)
    ids = [e["id"] for e in events]
    assert ids == [i.decode() for i, _ in r.xrange(keys.events("demo"))]
    assert events[0]["op"] == "deploy" and events[0]["extra"] == {"clusters": "3"}
    first_ack = next(e for e in events if e["op"] == "ack_jobsheet")
    assert (first_ack["from"], first_ack["to"], first_ack["gen"], first_ack["round"]) == \
        (0, 1, 0, 0)
    cascades = [e for e in events if e["op"] == "cascade"]
    assert {(e["cluster"], e["node"]) for e in cascades} == {("demo", "cluster/demo#0"),
                                                              ("demo", "cluster/demo#1")}
    assert events[-1]["op"] == "dataset_flag"


def test_lines_are_human_readable(cli, driver):
    driver.setup()
    driver.train_cluster("demo#0")
    lines = cli("events", "demo").output.splitlines()
    ack = next(line for line in lines if "ack_jobsheet" in line)
    assert "deployed→jobsheet_acked" in ack and "gen 0" in ack and "round 0" in ack
    submit = next(line for line in lines if "submit_params" in line)
    assert "demo#0" in submit and "client/c0" in submit and "busy→done" in submit
    assert "gen 1" in submit and "round 1" in submit and "samples=10" in submit
    assert "digest=" in submit and "…" in submit  # digests are shortened for reading
    assert any("aggregation" in line and "training→aggregating" in line for line in lines)


def test_count_shows_the_last_events(cli, driver, r):
    driver.setup()
    events = json_lines(cli("events", "demo", "--json", "--count", "3").output)
    last = list(reversed(r.xrevrange(keys.events("demo"), count=3)))
    assert [e["id"] for e in events] == [i.decode() for i, _ in last]


def test_follow_of_a_finished_job_prints_everything_and_ends(cli, driver):
    driver.setup()
    finish(driver)
    result = cli("events", "demo", "--follow", "--json")
    assert result.exit_code == 0, result.output
    assert json_lines(result.output)[-1]["op"] == "exited"


def test_unknown_job(cli):
    result = cli("events", "ghost")
    assert result.exit_code == 1 and "job=ghost: no such job" in result.output


class Lines:
    """Reads a child's stdout line by line with a deadline (no blocking forever)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.buffer = proc, b""

    def next(self, timeout: float = LINE_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"no line within {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError("the follower exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def rest(self) -> list[str]:
        out, _ = self.proc.communicate(timeout=LINE_TIMEOUT)
        return (self.buffer + out).decode().splitlines()


def follower(env: dict[str, str]) -> tuple[subprocess.Popen, Lines]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hierfl", "events", "demo", "--follow", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
    )
    return proc, Lines(proc)


def test_follow_blocks_on_xread_and_ends_when_the_job_finishes(driver, hierfl_env):
    driver.deploy()
    proc, lines = follower(hierfl_env)
    try:
        assert json.loads(lines.next())["op"] == "deploy"
        driver.ack_all_jobsheets()  # the follower wakes on XREAD for these
        assert json.loads(lines.next())["op"] == "ack_jobsheet"
        driver.ack_all_datasets()
        finish(driver)
        rest = [json.loads(line) for line in lines.rest()]
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        assert rest[-1]["op"] == "exited"
        assert "completed" in {e["op"] for e in rest}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_follow_ends_cleanly_on_ctrl_c(driver, hierfl_env):
    driver.deploy()
    proc, lines = follower(hierfl_env)
    try:
        assert json.loads(lines.next())["op"] == "deploy"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=LINE_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
