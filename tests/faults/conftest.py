"""Fault tests: a small job run by real node processes against a real redis-server, disturbed
on purpose, and compared with an undisturbed run of the same sheet.

Runs are reproducible (deterministic initial model, training seeds and aggregation), so the
same sheet under another job name ends with the same global digest: a fault the job truly
survives leaves that digest unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from hierfl import keys
from hierfl.jobtree import ClusterSpec
from hierfl.lifecycle import deploy_job
from hierfl.sheet import JobSheet, parse_sheet
from hierfl.store.connection import connect
from hierfl.store.server import EmbeddedServer
from hierfl.store.state import ClusterState, read_cluster, read_job, read_metrics
from hierfl.store.waiter import KeyWaiter

ROOT = Path(__file__).resolve().parents[2]
ADVERSARY = Path(__file__).with_name("adversary.py")

#: digits, 2 sub-clusters of 2 clients, one worker per cluster: 7 node processes.
SHEET = """
[job]
name = "faults"
rounds = 5
seed = 0

[topology]
sub = [2]
clients = [0, 2]
workers = [1, 1]

[training]
lr = 0.1
local_epochs = 5

[data]
dataset = "digits"
partition = "dirichlet"
alpha = 0.5
"""
#: Bounds on one job and on reaching a point in it: generous, because a busy machine slows the
#: node processes' start (importing torch) by a factor of several.
JOB_TIMEOUT = 240.0
POINT_TIMEOUT = 180.0


def sheet(name: str, source: str = SHEET) -> JobSheet:
    return parse_sheet(source).with_overrides(name=name)


@dataclass
class Outcome:
    """How a job ended, as the fault tests compare it."""

    name: str
    outcome: str
    digest: str  # the root's final global parameters
    accuracy: float  # test accuracy of the last round
    rounds: list[int]  # rounds with a metric
    seconds: float  # from the first node's start to the last node's exit


@dataclass
class Job:
    """One deployed job and its node processes (one per slot, restartable)."""

    name: str
    url: str
    env: dict[str, str]
    log_dir: Path
    source: str = SHEET  # the job sheet (its name is replaced by the job's)
    #: Slots played by a misbehaving node (tests/faults/adversary.py): slot -> its modes.
    adversaries: dict[tuple[str, str, str], str] = field(default_factory=dict)
    tree: list[ClusterSpec] = field(default_factory=list)
    procs: dict[tuple[str, str, str], subprocess.Popen] = field(default_factory=dict)
    started: float = 0.0

    def deploy(self) -> Job:
        client = connect(self.url)
        try:
            self.tree = deploy_job(client, sheet(self.name, self.source))
        finally:
            client.close()
        return self

    def slots(self) -> list[tuple[str, str, str]]:
        return [(spec.name, role, node) for spec in self.tree
                for role, ids in (("worker", spec.workers), ("client", spec.clients))
                for node in ids]

    def start_all(self, hooks: dict[tuple[str, str, str], dict[str, str]] | None = None) -> Job:
        self.started = time.monotonic()
        for slot in self.slots():
            self.start(slot, (hooks or {}).get(slot))
        return self

    def start(self, slot: tuple[str, str, str], extra_env: dict[str, str] | None = None,
              ) -> subprocess.Popen:
        cluster, role, node = slot
        env = {**self.env, "HIERFL_REDIS_URL": self.url, **(extra_env or {})}
        argv = ([sys.executable, str(ADVERSARY), role, cluster, node, self.adversaries[slot]]
                if slot in self.adversaries else
                [sys.executable, "-m", "hierfl", "node", "--role", role, "--cluster", cluster,
                 "--id", node])
        log = (self.log_dir / f"{cluster}.{role}.{node}.log").open("ab")
        try:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self.procs[slot] = proc
        return proc

    def kill(self, slot: tuple[str, str, str]) -> None:
        proc = self.procs[slot]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def log(self, slot: tuple[str, str, str]) -> str:
        cluster, role, node = slot
        return (self.log_dir / f"{cluster}.{role}.{node}.log").read_text(errors="replace")

    def wait_log(self, slot: tuple[str, str, str], text: str, timeout: float = 30.0) -> None:
        """Until the node has logged `text` (it logs just after the state change a test
        waits for; re-reading a log file is the test's business, no node's)."""
        deadline = time.monotonic() + timeout
        while text not in self.log(slot):
            assert time.monotonic() < deadline, f"{slot} never logged {text!r}"
            time.sleep(0.05)

    def logs_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {slot}\n" + "\n".join(self.log(slot).splitlines()[-lines:])
                         for slot in self.procs)

    def wait_all(self, timeout: float = JOB_TIMEOUT) -> Outcome:
        """Every node process exits 0; then the job's outcome."""
        deadline = time.monotonic() + timeout
        for slot, proc in self.procs.items():
            try:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{slot} still running after {timeout:.0f} s\n{self.logs_tail()}")
            assert code == 0, f"{slot} exited {code}\n{self.logs_tail()}"
        seconds = time.monotonic() - self.started
        client = connect(self.url)
        try:
            status = read_job(client, self.name)
            metrics = read_metrics(client, self.name)
        finally:
            client.close()
        return Outcome(self.name, status.to_json()["outcome"], status.top.global_digest,
                       metrics[-1]["accuracy"], [m["round"] for m in metrics], seconds)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def node_env(hierfl_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HIERFL_HOME"] = str(hierfl_home)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(ROOT), env.get("PYTHONPATH", "")) if part)
    for hook in ("HIERFL_TEST_PAUSE_AFTER", "HIERFL_TEST_PAUSE_SECONDS"):
        env.pop(hook, None)
    return env


def wait_for(client: redis.Redis, cluster: str, ready: Callable[[ClusterState], bool],
             timeout: float = POINT_TIMEOUT) -> ClusterState:
    """Block (on notifications of the cluster hash and its member hashes) until `ready`."""
    watched = [keys.job(cluster), keys.clients(cluster), keys.workers(cluster)]
    with KeyWaiter(client, watched, safety_timeout=1.0) as waiter:
        return waiter.until(lambda: read_cluster(client, cluster), ready,
                            deadline=time.monotonic() + timeout)


@pytest.fixture
def new_job(redis_url: str, hierfl_home: Path, tmp_path: Path) -> Iterator[Callable[..., Job]]:
    """Make jobs of the fault sheet (on the session server unless given a URL); every node
    process still running at the end is killed."""
    made: list[Job] = []

    def make(name: str, url: str | None = None, source: str = SHEET,
             adversaries: dict[tuple[str, str, str], str] | None = None) -> Job:
        log_dir = tmp_path / "logs" / name
        log_dir.mkdir(parents=True)
        job = Job(name, url or redis_url, node_env(hierfl_home), log_dir, source,
                  adversaries or {}).deploy()
        made.append(job)
        return job

    try:
        yield make
    finally:
        for job in made:
            job.stop()


@pytest.fixture(scope="session")
def undisturbed(redis_server: EmbeddedServer, hierfl_home: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The fault sheet run once without any fault: what every disturbed run is compared with."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    log_dir = tmp_path_factory.mktemp("undisturbed")
    job = Job("calm", redis_server.url, node_env(hierfl_home), log_dir).deploy()
    try:
        outcome = job.start_all().wait_all()
    finally:
        job.stop()
    assert outcome.outcome == "completed" and outcome.rounds == [0, 1, 2, 3, 4, 5]
    print(f"\nundisturbed: {outcome}")
    return outcome
