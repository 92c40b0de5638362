"""Transition script calls per second against the same number of raw HSETs on the same server.

Every status change in hierfl is one Lua script that checks the transition, updates the member,
recomputes the stages and cascades; a raw HSET is the least a status change could cost (one
field, one round trip, no check). This drives one cluster of `--clients` clients and one
worker through its real transitions (ack_jobsheet, ack_dataset, then per round every client's
start_training and submit_params and the worker's start_aggregation and upload_aggregate, as
a no-op job's nodes do: the clients submit the global, the worker uploads it) through
`hierfl.store.scripts.Scripts`, one call after another on one connection, and then makes
exactly as many HSETs on the same connection. Target: scripts reach at least 0.5 of the HSET
rate. Also prints what the server itself spent per call (INFO commandstats).

    python benchmarks/scripts_vs_raw.py [--clients 10] [--rounds 200] [--repeat 3] [--quick]
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import benchlib
import redis

from hierfl import keys
from hierfl.jobtree import build_tree
from hierfl.lifecycle import delete_job
from hierfl.store.blobs import BlobStore
from hierfl.store.connection import connect
from hierfl.store.scripts import Scripts
from hierfl.store.state import read_cluster

TARGET = 0.5


@dataclass
class Pass:
    """One timed pass: how many calls, how long, and the server's own time for them."""

    calls: int
    seconds: float
    server_usec: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


class Stopwatch:
    """Client-side seconds and calls per script name (to show which transitions cost most)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __call__(self, script: Callable[..., object], *args: object) -> None:
        started = time.perf_counter()
        script(*args)
        self.seconds[script.__name__] += time.perf_counter() - started
        self.calls[script.__name__] += 1


def transitions(scripts: Scripts, watch: Stopwatch, root: str, clients: list[str],
                rounds: int, global_digest: str, generation: int) -> int:
    """Every call of `rounds` no-op rounds of a one-cluster job; returns the calls made."""
    calls = 0
    for gen in range(generation, generation + rounds):
        for c in clients:
            watch(scripts.start_training, root, "client", c, gen)
            watch(scripts.submit_params, root, "client", c, gen, global_digest, 10)
        watch(scripts.start_aggregation, root, "worker", "w0", gen)
        watch(scripts.upload_aggregate, root, "worker", "w0", gen, global_digest)
        calls += 2 * len(clients) + 2
    return calls


def setup_calls(scripts: Scripts, watch: Stopwatch, root: str, clients: list[str],
                candidate: str) -> int:
    """The job sheet and dataset ACKs of every member; returns the calls made."""
    for c in clients:
        watch(scripts.ack_jobsheet, root, "client", c)
    watch(scripts.ack_jobsheet, root, "worker", "w0")
    for c in clients:
        watch(scripts.ack_dataset, root, "client", c)
    watch(scripts.ack_dataset, root, "worker", "w0", candidate)
    return 2 * len(clients) + 2


def timed(client: redis.Redis, command: str, work: Callable[[], int]) -> Pass:
    """Run `work` (which returns its call count) and measure it, on the client and server."""
    before = benchlib.commandstats(client).get(command, {}).get("usec", 0)
    started = time.perf_counter()
    calls = work()
    seconds = time.perf_counter() - started
    after = benchlib.commandstats(client).get(command, {}).get("usec", 0)
    return Pass(calls, seconds, float(after) - float(before))


def script_pass(client: redis.Redis, root: str, n_clients: int, rounds: int,
                watch: Stopwatch) -> Pass:
    """Deploy a fresh one-cluster job and time every transition of its whole life."""
    scripts, blobs = Scripts(client), BlobStore(client, root)
    tree = build_tree(root, sub=[], clients=[n_clients], workers=[1], cluster_epochs=[1])
    clients = list(tree[0].clients)
    scripts.deploy(root, tree, "{}", rounds, {}, blobs.put(b"test split"))
    candidate = blobs.put(b"initial parameters")

    def work() -> int:
        calls = setup_calls(scripts, watch, root, clients, candidate)
        state = read_cluster(client, root)  # one read: the first generation and its global
        return calls + transitions(scripts, watch, root, clients, rounds,
                                   state.global_digest, state.generation)

    try:
        return timed(client, "evalsha", work)
    finally:
        delete_job(client, root, force=True)


def raw_pass(client: redis.Redis, root: str, calls: int, members: int) -> Pass:
    """`calls` HSETs of one member field each, one round trip apiece, on one hash."""
    key = keys.clients(root)

    def work() -> int:
        for i in range(calls):
            client.hset(key, f"c{i % members}", i & 7)
        return calls

    try:
        return timed(client, "hset", work)
    finally:
        client.delete(key)


def floor_pass(client: redis.Redis, calls: int) -> Pass:
    """EVALSHA of `return 1`: what any script call costs before it does anything."""
    empty = client.register_script("return 1")
    empty()

    def work() -> int:
        for _ in range(calls):
            empty()
        return calls

    return timed(client, "evalsha", work)


def measure(url: str, n_clients: int, rounds: int, repeat: int
            ) -> tuple[dict[str, Pass], Stopwatch, str]:
    """The best of `repeat` passes of each kind, the last scripts pass's stopwatch, the
    server's version."""
    client = connect(url)
    runs: dict[str, list[Pass]] = defaultdict(list)
    watch = Stopwatch()
    try:
        for k in range(repeat):
            watch = Stopwatch()
            scripts = script_pass(client, f"bench-s2r-{k}", n_clients, rounds, watch)
            runs["transition scripts (EVALSHA)"].append(scripts)
            runs["raw HSET"].append(raw_pass(client, f"bench-s2r-{k}", scripts.calls,
                                             n_clients + 1))
            runs["EVALSHA of `return 1`"].append(floor_pass(client, scripts.calls))
        version = benchlib.server_version(client)
    finally:
        client.close()
    return {name: max(passes, key=lambda r: r.rate) for name, passes in runs.items()}, \
        watch, version


def main() -> None:
    p = benchlib.parser(__doc__)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rounds, repeat = (40, 2) if args.quick else (args.rounds, args.repeat)
    with benchlib.redis_url(args.redis) as url:
        best, watch, version = measure(url, args.clients, rounds, repeat)
    print(f"one cluster of {args.clients} clients and 1 worker, {rounds} rounds per pass, "
          f"best of {repeat} passes; redis-server {version}")
    rows = [(name, run.calls, run.rate, 1e6 / run.rate, run.server_usec / run.calls)
            for name, run in best.items()]
    rows += [(f"  of which {name}", watch.calls[name], watch.calls[name] / seconds,
              1e6 * seconds / watch.calls[name], None)
             for name, seconds in sorted(watch.seconds.items(), key=lambda kv: -kv[1])]
    print(benchlib.table(["calls", "count", "calls/s", "µs/call (client)",
                          "µs/call (server)"], rows))
    scripts, raw = best["transition scripts (EVALSHA)"], best["raw HSET"]
    benchlib.verdict("script calls/s / HSET calls/s", scripts.rate / raw.rate, TARGET)


if __name__ == "__main__":
    main()
