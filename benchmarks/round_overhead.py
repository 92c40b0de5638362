"""What coordination costs per round: a no-op job of 10, 100 and 1,000 clients at 1, 2, 3 levels.

The job trains nothing (`local_epochs = 0`: a client submits the global model unchanged), so a
round is nothing but coordination: every client's start_training and submit_params, every
worker's start_aggregation, download, check, FedAvg and upload_aggregate, consensus at each
level, the root's next generation, and each node woken by keyspace notifications. Nor does it
score each round's model on the test split (`evaluate_every = 0`: only the final one, after the
measured rounds; `--evaluate-every 1` adds that work). The model is an MLP of about 100,000
float32 parameters on the digits data (`--hidden`, or `--model package.module:factory`). Every
node is a thread, exactly as `hierfl simulate --processes N` runs them: N processes (default
one per core; `--processes 1`: threads of this process), each a `NodePool` with one
`NotificationHub`, the same node code, scripts and server; node logs go to files as
simulate's do.

Per configuration it reports, over the rounds after the first (round 1 is a warm-up: first
downloads, first aggregation; setup before it is excluded too):

- seconds per round, from the start of a round to the start of the next (on the Redis server's
  clock, read with the root's hash on its notifications), mean and p50;
- script calls per round (EVALSHA calls in `INFO commandstats`) and those refused;
- Redis CPU per round (`INFO cpu`, used_cpu_sys + used_cpu_user);
- Redis `used_memory` at the end of the measured rounds, and its growth per round.

A watcher in this process (which runs no nodes unless `--processes 1`) snapshots INFO when the
root starts round 2 and when it starts the last round, so the INFO figures cover whole rounds (a
few calls at either end land in the window or out of it alike). Targets: under 20 ms per round
for 10 clients at two levels, and under 1 s for 1,000 clients at two levels.

    python benchmarks/round_overhead.py [--clients 10,100,1000] [--levels 1,2,3] [--quick]
        [--processes N] [--evaluate-every K] [--keep-logs]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import benchlib
import redis

from hierfl import keys
from hierfl.cli.run import check_nodes, deploy_unique, stop_nodes
from hierfl.cli.simulate import EXIT_TIMEOUT
from hierfl.errors import HierflError
from hierfl.jobtree import ClusterSpec
from hierfl.lifecycle import cancel_job, delete_job
from hierfl.node import part
from hierfl.node.pool import CONCURRENCY, POOL_CONNECTIONS, NodePool, logging_to, tree_slots
from hierfl.protocol import ProcessStage
from hierfl.sheet import JobSheet, parse_sheet
from hierfl.store.connection import connect
from hierfl.store.state import read_cluster
from hierfl.store.waiter import KeyWaiter

#: (sub-clusters per level, clients per leaf cluster) for each (clients, levels).
SHAPES: dict[tuple[int, int], tuple[list[int], int]] = {
    (10, 1): ([], 10), (10, 2): ([2], 5), (10, 3): ([2, 5], 1),
    (100, 1): ([], 100), (100, 2): ([10], 10), (100, 3): ([5, 4], 5),
    (1000, 1): ([], 1000), (1000, 2): ([10], 100), (1000, 3): ([10, 10], 10),
}
#: Rounds measured (after the warm-up round) per client count.
MEASURED = {10: 20, 100: 8, 1000: 2}
QUICK_MEASURED = {10: 8, 100: 3, 1000: 1}
#: (clients, levels) -> seconds per round the issue asks for.
TARGETS = {(10, 2): 0.020, (1000, 2): 1.0}
JOB_TIMEOUT = 900.0
#: Node processes by default: one per core (Python runs one thread at a time per process).
PROCESSES = CONCURRENCY


def sheet_for(clients: int, levels: int, workers: int, rounds: int, model: str,
              hidden: list[int], evaluate_every: int = 0) -> JobSheet:
    """A no-op job sheet of that shape, parsed and checked like a user's. By default only the
    final model is scored on the test split, after the measured rounds (Flower's side of
    versus_flower.py evaluates nothing either)."""
    sub, leaf = SHAPES[(clients, levels)]
    client_list = [0] * len(sub) + [leaf]
    model_lines = (f'name = "{model}"' if model != "mlp"
                   else f'name = "mlp"\nhidden = {hidden}')
    return parse_sheet(f"""
[job]
name = "ro-{clients}-{levels}"
rounds = {rounds}
seed = 0
evaluate_every = {evaluate_every}
[topology]
sub = {sub}
clients = {client_list}
workers = {workers}
[model]
{model_lines}
[training]
local_epochs = 0
[data]
dataset = "digits"
partition = "iid"
""", source=f"<round_overhead {clients}x{levels}>")


@dataclass
class Snapshot:
    """What INFO says at one instant."""

    calls: int
    refused: int
    cpu: float
    memory: int

    @classmethod
    def take(cls, client: redis.Redis) -> Snapshot:
        stats = benchlib.commandstats(client).get("evalsha", {})
        return cls(int(stats.get("calls", 0)), int(stats.get("failed_calls", 0)),
                   benchlib.redis_cpu(client), benchlib.used_memory(client))


@dataclass
class Result:
    """One configuration's measurements; `row` is its line of the table."""

    clients: int
    levels: int
    clusters: int
    workers: int
    measured: int
    setup_s: float
    spans: list[float]
    first: Snapshot
    last: Snapshot

    def row(self) -> tuple:
        per = self.measured
        return (self.clients, self.levels, self.clusters, self.workers, per,
                self.setup_s, sum(self.spans) / len(self.spans) * 1e3,
                benchlib.median(self.spans) * 1e3, (self.last.calls - self.first.calls) / per,
                (self.last.refused - self.first.refused) / per,
                (self.last.cpu - self.first.cpu) / per * 1e3, self.last.memory / 1e6,
                (self.last.memory - self.first.memory) / per / 1e3)


class RoundWatcher:
    """Follows the root's hash: when each round starts and when the job finished (the server's
    clock at the read that first saw it), and INFO snapshots at the starts of two rounds.

    It reads only the root's hash, on its notifications: reading the event stream while the job
    runs (thousands of entries a round at 1,000 clients) would take the GIL from the nodes it
    measures.
    """

    def __init__(self, client: redis.Redis, root: str, first: int, last: int) -> None:
        self.client = client
        self.root = root
        self.wanted = (first, last)
        self.snaps: dict[int, Snapshot] = {}
        self.started_ms: dict[int, int] = {}  # round -> server ms when first seen running
        self.deployed_ms = 0
        self.finished_ms = 0

    def follow(self, check: Callable[[], None]) -> None:
        """Until the job is finished; raises if a node failed (`check`) or it took too long."""
        deadline = time.monotonic() + JOB_TIMEOUT
        watched = [keys.job(self.root), keys.stages(self.root)]  # stages: every node exited
        with KeyWaiter(self.client, watched, safety_timeout=1.0) as waiter:
            while True:
                state = read_cluster(self.client, self.root)
                self.deployed_ms = self.deployed_ms or state.server_ms
                if state.round in self.wanted and state.round not in self.snaps:
                    self.snaps[state.round] = Snapshot.take(self.client)
                if state.round and state.process_stage != ProcessStage.FINISHED:
                    self.started_ms.setdefault(state.round, state.server_ms)
                elif state.process_stage == ProcessStage.FINISHED and not self.finished_ms:
                    self.finished_ms = state.server_ms
                if state.exited:
                    return
                check()
                if time.monotonic() > deadline:
                    raise HierflError(f"job {self.root} did not finish within "
                                      f"{JOB_TIMEOUT:.0f} s")
                waiter.wait()

    def spans_and_setup(self, rounds: int) -> tuple[list[float], float]:
        """Seconds of rounds 2 .. rounds-1 (the INFO window: each from its start to the next
        round's) and of the setup from deployment to round 1."""
        starts = {**self.started_ms, rounds + 1: self.finished_ms}
        missing = [r for r in range(1, rounds + 1) if not starts.get(r)]
        if missing:
            raise HierflError(f"the start of rounds {missing} was not seen")
        return ([(starts[r + 1] - starts[r]) / 1000 for r in range(2, rounds)],
                (starts[1] - self.deployed_ms) / 1000)


def run_job(url: str, sheet: JobSheet, log_dir: Path, concurrency: int = CONCURRENCY,
            processes: int = 1) -> tuple[list[ClusterSpec], RoundWatcher]:
    """Deploy and run `sheet` with every node a thread, of this process or of `processes`
    child processes (as `hierfl simulate --processes`); its tree and what was watched."""
    client = connect(url, pool_size=POOL_CONNECTIONS)
    job, tree = deploy_unique(client, sheet, None)
    watcher = RoundWatcher(client, job.name, 2, job.rounds)
    exit_timeout = EXIT_TIMEOUT * max(1, len(tree) // 10)
    try:
        if processes > 1:
            shares_dir = log_dir / job.name
            shares_dir.mkdir()
            procs = part.start(url, part.split(tree, processes), concurrency, shares_dir)
            try:
                watcher.follow(lambda: check_nodes(procs))
                part.wait(procs, exit_timeout)
                check_nodes(procs)
            finally:
                stop_nodes(procs)
            return tree, watcher
        with (logging_to(log_dir / f"{job.name}.log"),
              NodePool(client, url, concurrency=concurrency) as pool):
            pool.start_slots(tree_slots(tree))
            watcher.follow(pool.check)
            pool.wait(exit_timeout)
        return tree, watcher
    except BaseException:
        with suppress(HierflError, redis.RedisError):  # it may have ended already
            cancel_job(client, job.name, "round_overhead benchmark stopped")
        raise
    finally:
        delete_job(client, job.name, force=True)
        client.close()


def measure(url: str, clients: int, levels: int, workers: int, measured: int, model: str,
            hidden: list[int], log_dir: Path, concurrency: int = CONCURRENCY,
            processes: int = 1, evaluate_every: int = 0) -> Result:
    sheet = sheet_for(clients, levels, workers, measured + 2, model, hidden, evaluate_every)
    tree, watcher = run_job(url, sheet, log_dir, concurrency, processes)
    spans, setup = watcher.spans_and_setup(sheet.rounds)
    return Result(clients, levels, len(tree), sum(len(s.workers) for s in tree), measured,
                  setup, spans, watcher.snaps[2], watcher.snaps[sheet.rounds])


def parameter_count(model: str, hidden: list[int]) -> int:
    from hierfl.learning.models import build_model
    from hierfl.sheet import ModelConfig

    config = ModelConfig(name=model, hidden=tuple(hidden))
    return sum(p.numel() for p in build_model(config, 64, 10, 0).parameters())


def verdicts(results: list[Result]) -> None:
    for (clients, levels), target in TARGETS.items():
        found = [r for r in results if (r.clients, r.levels) == (clients, levels)]
        if not found:
            print(f"{clients} clients at {levels} levels: not measured in this run")
            continue
        mean = sum(found[0].spans) / len(found[0].spans)
        benchlib.verdict(f"{clients} clients at {levels} levels, s/round / {target:g} s",
                         mean / target, 1.0, at_least=False)


def main() -> None:
    p = benchlib.parser(__doc__)
    p.add_argument("--clients", default="10,100,1000")
    p.add_argument("--levels", default="1,2,3")
    p.add_argument("--workers", type=int, default=3, help="workers per cluster")
    p.add_argument("--hidden", default="1333", help="MLP hidden widths (1333: 99,985 floats)")
    p.add_argument("--model", default="mlp", help='"mlp" or "package.module:factory"')
    p.add_argument("--concurrency", type=int, default=CONCURRENCY,
                   help=f"nodes running at once (default: one per core, {CONCURRENCY} here)")
    p.add_argument("--processes", type=int, default=PROCESSES,
                   help="spread the nodes over this many processes, a cluster's clients together "
                        f"(as hierfl simulate --processes; default {PROCESSES}; 1: all threads "
                        "of this one)")
    p.add_argument("--evaluate-every", type=int, default=0,
                   help="root workers score every k-th round's model on the test split "
                        "(default 0: only the final one, after the measured rounds)")
    p.add_argument("--rounds", type=int, default=0,
                   help="rounds measured per configuration (0: 20, 8, 2 by client count)")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the node logs (kept anyway, and named, when a run fails)")
    args = p.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]
    plan = [(c, lv) for c in map(int, args.clients.split(","))
            for lv in map(int, args.levels.split(","))]
    if args.quick:
        plan = [(10, 1), (10, 2), (10, 3), (100, 2)]
    rounds = QUICK_MEASURED if args.quick else MEASURED
    results = []
    log_dir = Path(tempfile.mkdtemp(prefix="hfl-bench-logs-"))
    try:
        with benchlib.redis_url(args.redis) as url:
            version = benchlib.server_version(connect(url))
            for clients, levels in plan:
                results.append(measure(url, clients, levels, args.workers,
                                       args.rounds or rounds[clients], args.model, hidden,
                                       log_dir, args.concurrency, args.processes,
                                       args.evaluate_every))
                print(f"measured {clients} clients at {levels} levels: "
                      f"{results[-1].row()[6]:.1f} ms/round", flush=True)
    except BaseException:
        print(f"node logs in {log_dir}", file=sys.stderr)  # kept to see what went wrong
        raise
    kept = args.keep_logs and f"; node logs in {log_dir}"
    if not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    print(f"\nno-op rounds, {parameter_count(args.model, hidden):,}-parameter model, "
          f"{args.workers} workers per cluster, every node a thread of "
          f"{_processes(args.processes)} ({args.concurrency} running at once in each), "
          f"{_scoring(args.evaluate_every)}; redis-server {version}{kept or ''}")
    print(benchlib.table(HEADERS, [r.row() for r in results]))
    verdicts(results)


def _scoring(every: int) -> str:
    return ("only the final model scored" if every == 0
            else f"every {every}. round's model scored" if every > 1
            else "every round's model scored")


def _processes(n: int) -> str:
    return "this process" if n == 1 else f"{n} processes"


HEADERS = ["clients", "levels", "clusters", "workers", "rounds", "setup s", "ms/round",
           "p50 ms/round", "script calls/round", "refused/round", "Redis CPU ms/round",
           "used_memory MB", "memory growth kB/round"]


if __name__ == "__main__":
    main()
