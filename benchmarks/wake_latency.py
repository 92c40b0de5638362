"""Time from a script call to the reaction of the nodes it wakes: p50 and p99.

hierfl's nodes never poll: each blocks on the keyspace notification of its cluster's hash and
re-reads the state when woken. This deploys a one-cluster job (one client, one worker) and
starts N waiter threads on that cluster's hash, each doing what a node does when woken: it
re-reads the cluster (`read_cluster`, one round trip) and, if the state changed, has reacted.
The main thread then makes the cluster's real transitions one at a time (start_training,
submit_params, start_aggregation, upload_aggregate, ... each of which writes the cluster hash)
and, for each call, measures from just before the call to each waiter's reaction, waiting for
all N before the next call.

The waiters share one `NotificationHub` (as `hierfl simulate` and `hierfl node --count` nodes
do: one pub/sub connection for the process) for 1, 100 and 1,000 waiters, and for 1 and 100
also each hold a `KeyWaiter` of their own (as separate `hierfl node` processes do). "all
woken" is the time until the last of the N reacted. The issue sets no target here; this one is
ours: p99 under 10 ms for a single waiter, so that the few wake-ups in sequence of a round fit
its 20 ms budget.

    python benchmarks/wake_latency.py [--calls 400] [--quick]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import benchlib
import redis

from hierfl import keys
from hierfl.jobtree import build_tree
from hierfl.lifecycle import delete_job
from hierfl.node.pool import POOL_CONNECTIONS
from hierfl.store.blobs import BlobStore
from hierfl.store.connection import connect
from hierfl.store.hub import NotificationHub
from hierfl.store.scripts import Scripts
from hierfl.store.state import read_cluster
from hierfl.store.waiter import KeyWaiter, Waiter

TARGET_MS = 10.0
#: How long a waiter blocks before looking whether the benchmark is over (a bound on shutdown).
IDLE = 1.0
REACT_TIMEOUT = 30.0


@dataclass
class Call:
    """The transition in flight: its number and when it was made."""

    index: int
    started: float


@dataclass
class Reactions:
    """What the waiters report: per call, each waiter's latency in seconds."""

    expected: int
    latencies: dict[int, list[float]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, index: int, seconds: float) -> None:
        with self.cond:
            self.latencies.setdefault(index, []).append(seconds)
            if len(self.latencies[index]) == self.expected:
                self.cond.notify_all()

    def wait_all(self, index: int) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.latencies.get(index, ())) >=
                                      self.expected, REACT_TIMEOUT):
                got = len(self.latencies.get(index, ()))
                raise TimeoutError(f"call {index}: {got} of {self.expected} waiters reacted")


class Bench:
    """N waiter threads on one cluster hash and the driver that makes the transitions."""

    def __init__(self, client: redis.Redis, root: str, waiters: Callable[[], Waiter],
                 count: int) -> None:
        self.client = client
        self.root = root
        self.make_waiter = waiters
        self.reactions = Reactions(count)
        self.current: Call | None = None
        self.stop = threading.Event()
        self.ready = threading.Barrier(count + 1)
        self.threads = [threading.Thread(target=self._wait_loop, daemon=True)
                        for _ in range(count)]

    def _wait_loop(self) -> None:
        with self.make_waiter() as waiter:
            seen = read_cluster(self.client, self.root).fields
            self.ready.wait()
            while not self.stop.is_set():
                # Re-read after a timeout too, as a node does (`Waiter.until`): a notification
                # that lands just as the wait times out is cleared with it.
                waiter.wait(IDLE)
                fields = read_cluster(self.client, self.root).fields
                # Which call changed it is looked up after the read: the driver moves on only
                # once every waiter has reacted, so the state read is the latest call's.
                call = self.current
                if call is None or fields == seen:
                    continue  # a notification already reacted to: nothing new to see
                seen = fields
                self.reactions.add(call.index, time.perf_counter() - call.started)

    @contextmanager
    def running(self) -> Iterator[None]:
        for thread in self.threads:
            thread.start()
        self.ready.wait()
        try:
            yield
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(timeout=IDLE + 5)

    def drive(self, scripts: Scripts, calls: int) -> None:
        """`calls` transitions of the one client and one worker, each awaited by all."""
        state = read_cluster(self.client, self.root)
        gen, digest = state.generation, state.global_digest
        steps = [
            lambda g: scripts.start_training(self.root, "client", "c0", g),
            lambda g: scripts.submit_params(self.root, "client", "c0", g, digest, 10),
            lambda g: scripts.start_aggregation(self.root, "worker", "w0", g),
            lambda g: scripts.upload_aggregate(self.root, "worker", "w0", g, digest),
        ]
        for index in range(calls):
            self.current = Call(index, time.perf_counter())
            steps[index % 4](gen)
            self.reactions.wait_all(index)
            if index % 4 == 3:
                gen += 1


def deploy(client: redis.Redis, root: str, calls: int) -> Scripts:
    """A one-cluster job with one client and one worker, ready for its first generation."""
    scripts, blobs = Scripts(client), BlobStore(client, root)
    tree = build_tree(root, sub=[], clients=[1], workers=[1], cluster_epochs=[1])
    scripts.deploy(root, tree, "{}", calls // 4 + 2, {}, blobs.put(b"test split"))
    for role, node in (("client", "c0"), ("worker", "w0")):
        scripts.ack_jobsheet(root, role, node)
    scripts.ack_dataset(root, "client", "c0")
    scripts.ack_dataset(root, "worker", "w0", blobs.put(b"initial parameters"))
    return scripts


def measure(url: str, mode: str, count: int, calls: int) -> dict[int, list[float]]:
    """Latencies per call for `count` waiters of kind `mode` ("hub" or "KeyWaiter")."""
    root = f"bench-wake-{mode.lower()}-{count}"
    if mode == "hub":
        client = connect(url, pool_size=POOL_CONNECTIONS)
        hub = NotificationHub(client).start()
        make = lambda: hub.waiter([keys.job(root)], IDLE)  # noqa: E731
    else:
        # A subscription (connection) per waiter, and as many again for their reads.
        client, hub = connect(url, pool_size=count + POOL_CONNECTIONS), None
        make = lambda: KeyWaiter(client, [keys.job(root)], IDLE)  # noqa: E731
    try:
        scripts = deploy(client, root, calls)
        bench = Bench(client, root, make, count)
        with bench.running():
            bench.drive(scripts, calls)
        return bench.reactions.latencies
    finally:
        delete_job(client, root, force=True)
        if hub is not None:
            hub.close()
        client.close()


def summary(mode: str, count: int, latencies: dict[int, list[float]]) -> tuple:
    every = [s * 1e3 for per_call in latencies.values() for s in per_call]
    last = [max(per_call) * 1e3 for per_call in latencies.values()]
    return (mode, count, len(latencies), benchlib.median(every),
            benchlib.percentile(every, 0.99), benchlib.median(last),
            benchlib.percentile(last, 0.99))


def main() -> None:
    p = benchlib.parser(__doc__)
    p.add_argument("--calls", type=int, default=400, help="transitions for 1 waiter; fewer "
                   "for more waiters (100 waiters: a quarter, 1,000: a tenth)")
    args = p.parse_args()
    calls = 100 if args.quick else args.calls
    plan = [("hub", 1, calls), ("KeyWaiter", 1, calls), ("hub", 100, calls // 4),
            ("KeyWaiter", 100, calls // 4), ("hub", 1000, max(8, calls // 10))]
    rows = []
    with benchlib.redis_url(args.redis) as url:
        version = benchlib.server_version(connect(url))
        for mode, count, n in plan:
            rows.append(summary(mode, count, measure(url, mode, count, n)))
    print(f"latency from before the script call to each waiter's reaction (woken + one "
          f"re-read); redis-server {version}")
    print(benchlib.table(["waiters", "count", "calls", "p50 ms", "p99 ms", "all woken p50 ms",
                          "all woken p99 ms"], rows))
    single = next(r for r in rows if r[0] == "hub" and r[1] == 1)
    benchlib.verdict(f"p99 ms for one waiter (hub) / {TARGET_MS:g} ms", single[4] / TARGET_MS,
                     1.0, at_least=False)


if __name__ == "__main__":
    main()
