#!/usr/bin/env python
"""Write docs/debugging.md: an annotated, real `redis-cli` session of a live hierfl job.

Starts its own embedded Redis in a temporary HIERFL_HOME, deploys `demo` (2 sub-clusters of 2
clients, 1 worker per cluster, 2 rounds), starts every node but demo#1/c1 as a real process,
waits (on keyspace notifications) until they have ACKed, and records redis-cli commands with
their real output. Then it starts the missing client while a `SUBSCRIBE` runs and records the
job completing.

    python scripts/capture_debugging.py [--out docs/debugging.md]
"""

from __future__ import annotations

import argparse
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path

from typer.testing import CliRunner

from hierfl import keys
from hierfl.cli.app import app
from hierfl.protocol import FLAG_DOWN, FLAG_UP
from hierfl.protocol import NodeStatus as S
from hierfl.protocol import ProcessStage as P
from hierfl.store.connection import connect, keyspace_channel
from hierfl.store.server import EmbeddedServer, find_redis_server
from hierfl.store.state import JobStatus, read_job
from hierfl.store.waiter import KeyWaiter

ROOT = "demo"
STUCK = (f"{ROOT}#1", "client", "c1")
INIT = ["init-job", ROOT, "--sub", "2", "--clients", "2", "--workers", "1", "--rounds", "2"]
#: Bounds on every wait (seconds): nodes acking, the job finishing, redis-cli answering.
ACK_TIMEOUT, JOB_TIMEOUT, CLI_TIMEOUT = 60.0, 120.0, 15.0
#: Keyspace notifications shown before the rest is summarised.
SHOWN_MESSAGES = 8
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "debugging.md"


class Doc:
    """The markdown being written: prose, and console blocks of commands with their output."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def prose(self, text: str) -> None:
        self.parts.append(text.strip() + "\n")

    def console(self, *entries: tuple[str, str]) -> None:
        body = "".join(f"$ {cmd}\n{out.rstrip()}\n" if out.strip() else f"$ {cmd}\n"
                       for cmd, out in entries)
        self.parts.append(f"```console\n{body}```\n")

    def text(self) -> str:
        return "\n".join(self.parts)


class Session:
    """One embedded server, the node processes, and the recorded commands."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.server = EmbeddedServer(home).start()
        self.cli_bin = str(Path(find_redis_server()).with_name("redis-cli"))
        self.client = connect(self.server.url)
        self.env = {**os.environ, "HIERFL_HOME": str(home), "HIERFL_REDIS_URL": self.server.url,
                    "PYTHONUNBUFFERED": "1", "COLUMNS": "100", "OMP_NUM_THREADS": "1"}
        self.nodes: dict[tuple[str, str, str], subprocess.Popen] = {}

    # -- commands ---------------------------------------------------------------------------

    def redis_argv(self, *args: str) -> list[str]:
        return [self.cli_bin, "--no-raw", "-s", str(self.server.socket_path), *args]

    def redis(self, *args: str) -> tuple[str, str]:
        """Run redis-cli; returns (the command as a reader types it, its output)."""
        done = subprocess.run(self.redis_argv(*args), capture_output=True, text=True,
                              timeout=CLI_TIMEOUT, check=True)
        return shown_redis(*args), done.stdout + done.stderr

    def hierfl(self, *args: str) -> tuple[str, str]:
        """Run a hierfl command (in this process, against the same server)."""
        result = CliRunner().invoke(app, list(args), env=self.env)
        if result.exit_code != 0:
            raise RuntimeError(f"hierfl {shlex.join(args)} failed: {result.output}")
        return "hierfl " + shlex.join(args), result.output

    def start_node(self, cluster: str, role: str, node: str) -> str:
        """Start one node process, logging to a file; returns the command as shown."""
        args = ["node", "--role", role, "--cluster", cluster, "--id", node]
        log_name = f"{cluster}.{role}.{node}.log"
        with (self.home / log_name).open("wb") as log:
            self.nodes[(cluster, role, node)] = subprocess.Popen(
                [sys.executable, "-m", "hierfl", *args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env)
        return f"hierfl {shlex.join(args)} > {shlex.quote(log_name)} 2>&1 &"

    def slots(self) -> list[tuple[str, str, str]]:
        """Every (cluster, role, node) of the deployed tree, workers first in each cluster."""
        job = read_job(self.client, ROOT)
        assert job is not None, "init-job deployed nothing"
        return [(c.name, role, n) for c in job.clusters.values()
                for role, members in (("worker", c.workers), ("client", c.clients))
                for n in sorted(members) if n not in c.children]

    # -- waits ------------------------------------------------------------------------------

    def wait_for_acks(self) -> JobStatus:
        """Until every node but the stuck one ACKed its job sheet (keyspace notifications)."""
        deadline = time.monotonic() + ACK_TIMEOUT
        clusters = {c for c, _, _ in self.nodes}
        # A member's ACK changes its members hash; the cluster hash only when a stage moves.
        watched = [k for c in sorted(clusters) for k in (keys.job(c), keys.stages(c),
                                                          keys.clients(c), keys.workers(c))]
        with KeyWaiter(self.client, watched) as waiter:
            try:
                return waiter.until(lambda: read_job(self.client, ROOT), self.others_acked,
                                    deadline)
            except TimeoutError:
                raise RuntimeError(f"nodes did not ACK within {ACK_TIMEOUT:.0f} s; logs in "
                                   f"{self.home}") from None

    def others_acked(self, job: JobStatus | None) -> bool:
        self.check_nodes()
        if job is None:
            return False
        return all(job.clusters[c].status_of(role, n) >= S.JOBSHEET_ACKED
                   for (c, role, n) in self.nodes)

    def check_nodes(self) -> None:
        failed = [f"{c}/{r}/{n}" for (c, r, n), p in self.nodes.items() if p.poll() not in
                  (None, 0)]
        if failed:
            raise RuntimeError(f"node processes failed: {failed}; logs in {self.home}")

    def wait_for_nodes(self) -> None:
        """Bounded waits for every node process to exit (they do when the job finished)."""
        deadline = time.monotonic() + JOB_TIMEOUT
        for proc in self.nodes.values():
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        self.check_nodes()

    def close(self) -> None:
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        self.client.close()
        self.server.stop()


def shown_redis(*args: str) -> str:
    return 'redis-cli -s "$SOCK" ' + shlex.join(args)


def sorted_scan(session: Session, pattern: str) -> tuple[str, str]:
    cmd, out = session.redis("--scan", "--pattern", pattern)
    return cmd + " | sort", "\n".join(sorted(out.split())) + "\n"


@contextmanager
def subscriber(session: Session, channel: str) -> Iterator[list[str]]:
    """A `redis-cli SUBSCRIBE` in the background; yields the list its output lands in once it
    is stopped with SIGINT (Ctrl-C) at the end of the block."""
    proc = subprocess.Popen(session.redis_argv("SUBSCRIBE", channel), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    try:
        buffer = read_until(proc, b"(integer) 1\n", CLI_TIMEOUT)
        yield lines
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=CLI_TIMEOUT)
        lines.extend((buffer + rest).decode().splitlines())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_until(proc: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    """Read a child's stdout until `marker` has appeared (the subscription is confirmed)."""
    deadline, buffer = time.monotonic() + timeout, b""
    while marker not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise RuntimeError("redis-cli did not confirm the subscription")
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError("redis-cli exited before confirming the subscription")
        buffer += chunk
    return buffer


def trimmed_messages(lines: list[str]) -> str:
    """The subscription's first messages; the rest counted, not shown."""
    confirmed = lines.index("3) (integer) 1") + 1
    head = confirmed + SHOWN_MESSAGES * 3  # each message is three lines
    if len(lines) <= head:
        return "\n".join(lines)
    more = (len(lines) - confirmed) // 3 - SHOWN_MESSAGES
    return "\n".join([*lines[:head], f"... ({more} more messages until the job ended; "
                                     "then Ctrl-C)"])


# -- the session, step by step --------------------------------------------------------------


def legend(enum: type[IntEnum]) -> str:
    return ", ".join(f"{int(v)} {v.name.lower()}" for v in enum)


# Numbers quoted in the prose, from the protocol's enums (never written by hand).
DEPLOYED, ACKED, EXITED = int(S.DEPLOYED), int(S.JOBSHEET_ACKED), int(S.EXITED)
IDLE, FINISHED = int(P.IDLE), int(P.FINISHED)


def intro(doc: Doc) -> None:
    doc.prose(f"""
# Debugging a live job with `redis-cli`

Everything hierfl knows about a job is in Redis, in hashes named so that `redis-cli` reads
them well. This page is a real session, written by `python scripts/capture_debugging.py`
(rerun it to refresh the page): the script starts an embedded Redis in a temporary
`HIERFL_HOME`, deploys a small job and starts every node but one as its own process, then runs
the commands below and pastes their output unedited (only the long stream of notifications is
cut, and says so). Timestamps, process ids, digests and the order of concurrent ACKs differ
from run to run.

`SOCK` is the embedded server's unix socket, `$HIERFL_HOME/redis.sock`
(`hierfl server status` prints it). With your own Redis, use `redis-cli -u URL` instead.
Statuses and stages are numbers in Redis (see [protocol.md](protocol.md), or `hierfl diagram`):

- a member's status (a client, a worker, or a sub-cluster in its parent): {legend(S)};
- a cluster's `process_stage`: {legend(P)}.
""")


def deploy_and_start(session: Session, doc: Doc) -> None:
    doc.prose("""
## A job with one node missing

Deploy a tree `demo` with two sub-clusters (`demo#0`, `demo#1`) of two clients each, one worker
per cluster, two global rounds. `init-job` prints the cluster jobs it created:
""")
    doc.console(session.hierfl(*INIT))
    doc.prose("""
Start every node as its own process, in the background, each with its own log: every node but
client `c1` of `demo#1`, the one we "forgot":
""")
    started = [session.start_node(*slot) for slot in session.slots() if slot != STUCK]
    doc.console(*((cmd, "") for cmd in started))
    session.wait_for_acks()
    doc.prose("""
Every started node has sent its job-sheet ACK, and now the job sits still. Nothing polls:
each node blocks on a keyspace notification for its cluster's hash. Let's find out why.
""")


def look_around(session: Session, doc: Doc) -> None:
    doc.prose(f"""
## What is in Redis

Every key of the job tree carries the hash tag `{{{ROOT}}}`, so one pattern finds them all
(`SCAN` order is random, hence `sort`). `job:*` are the cluster hashes, `stages:*` their
stages, `clients:*` and `workers:*` the members, `blob:*` content-addressed bytes (here the
dataset shares and the test
split), `events` the stream of transitions, `free:*` / `claims` the node slots:
""")
    doc.console(sorted_scan(session, keys.tree_pattern(ROOT)))
    doc.prose(f"""
A cluster hash holds the flags, the process stage and the generation. Here `jobsheet_flag` is
{FLAG_UP} (nodes may fetch the job sheet) but `dataset_flag` is still {FLAG_DOWN}:
""")
    doc.console(session.redis("HGETALL", keys.job(STUCK[0])))
    doc.prose(f"""
Its stages hash says why: `worker_stage` {ACKED} says the worker ACKed, `client_stage`
{DEPLOYED} that at least one client did not. (Stages live apart from the cluster hash, which
every member waits on: they move with almost every member's step, and no member acts on them.)
""")
    doc.console(session.redis("HGETALL", keys.stages(STUCK[0])))
    doc.prose(f"""
The root's members hash: a sub-cluster is one client of its parent, with a status like any
node's. `demo#0` is at {ACKED} (all of its members ACKed), `demo#1` still at {DEPLOYED}:
""")
    doc.console(session.redis("HGETALL", keys.clients(ROOT)))
    doc.prose("""
The event stream has one entry per transition: who (`cluster`, `node`), what (`op`), `from`
and `to` status, and the generation and round it happened in. The first entries:
""")
    doc.console(session.redis("XLEN", keys.events(ROOT)),
                session.redis("XRANGE", keys.events(ROOT), "-", "+", "COUNT", "3"))


def explain_stuck(session: Session, doc: Doc) -> None:
    doc.prose("""
## Why is this job stuck?

`hierfl explain` walks the tree from the root down to the node that holds everything up:
""")
    doc.console(session.hierfl("explain", ROOT))
    doc.prose(f"""
The same answer from Redis alone. The root is idle (`process_stage` {IDLE}) with the dataset
flag down: the flag goes up only when every member of the tree has ACKed the job sheet, and
the root's `client_stage` {DEPLOYED} says one of its members has not:
""")
    root_fields = ("process_stage", "jobsheet_flag", "dataset_flag")
    doc.console(session.redis("HMGET", keys.job(ROOT), *root_fields),
                session.redis("HMGET", keys.stages(ROOT), "client_stage", "worker_stage"))
    doc.prose(f"""
That member is `demo#1` (status {DEPLOYED} in `clients:demo` above). Inside `demo#1`, the
client at status {DEPLOYED} is `c1`:
""")
    doc.console(session.redis("HGETALL", keys.clients(STUCK[0])))
    doc.prose("""
Did `c1` ever run? Every node claims its slot before anything else: `claims` records who
(host:pid) holds each slot, and the free list still holds the slot nobody took. So `c1` was
never started — a node that crashed would have claimed its slot first:
""")
    doc.console(session.redis("HGETALL", keys.claims(ROOT)),
                session.redis("LRANGE", keys.free(ROOT, "client"), "0", "-1"))


def unstick(session: Session, doc: Doc) -> None:
    channel = keyspace_channel(session.client, keys.job(STUCK[0]))
    with subscriber(session, channel) as messages:
        cmd = session.start_node(*STUCK)
        session.wait_for_nodes()
    doc.prose("""
## Watching it move

Nodes wait on keyspace notifications. Subscribe to the one for `demo#1`'s hash in a second
terminal; each message only says that the hash changed (`hset`, `hincrby`), and a node re-reads
the hash when woken. Then start the missing client:
""")
    doc.console((shown_redis("SUBSCRIBE", channel), trimmed_messages(messages)))
    doc.console((cmd, ""))
    doc.prose(f"""
`c1`'s ACK completed `demo#1`, whose status in the root became {ACKED}; the root's stages
reaching {ACKED} raised the dataset flag everywhere, then the first round started, and so on
until every node exited.
""")


def finished(session: Session, doc: Doc) -> None:
    doc.prose("""
## The finished job

`metrics` maps each round to the test accuracy and loss of the global parameters agreed in that
round (round 0: the initial parameters):
""")
    doc.console(session.redis("HGETALL", keys.metrics(ROOT)))
    doc.prose(f"""
The root hash at the end: `outcome` completed, `process_stage` {FINISHED}, both stages
{EXITED} (every member exited), `round` equal to `rounds`, and `global` the final parameters'
digest:
""")
    doc.console(session.redis("HGETALL", keys.job(ROOT)))
    doc.prose(f"""
The newest events first: the root worker's exit and `exited`, written when both of the root's
stages reached {EXITED}. `hierfl events` prints the stream readably (`--follow` tails it until
the job ends), and `hierfl explain` has nothing left to wait for:
""")
    doc.console(session.redis("XREVRANGE", keys.events(ROOT), "+", "-", "COUNT", "2"),
                session.hierfl("events", ROOT, "--count", "6"))
    doc.console(session.hierfl("explain", ROOT))


def capture(out: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="hfl-doc-", dir="/tmp"))
    doc = Doc()
    session = Session(home)
    try:
        intro(doc)
        deploy_and_start(session, doc)
        look_around(session, doc)
        explain_stuck(session, doc)
        unstick(session, doc)
        finished(session, doc)
    finally:
        session.close()
        shutil.rmtree(home, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc.text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write")
    capture(parser.parse_args().out)


if __name__ == "__main__":
    main()
