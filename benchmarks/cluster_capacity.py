"""Jobs per second per shard of a Redis Cluster: many small no-op jobs spread over the masters.

Starts a throwaway 3-master cluster from the redis-server binary (`hierfl.store.local_cluster`;
`--redis URL` uses an existing cluster instead), deploys N small digits jobs with
`local_epochs = 0` (clients submit the global unchanged, so the run is coordination, not
training) whose names spread them evenly over the masters, and runs every node of every job as
a thread of this process (as `hierfl simulate` does: one notification connection per shard).

Prints one row per shard: its jobs, the script calls and all the commands it served (those the
scripts ran included), the CPU its redis-server spent from the first deploy to the last exit,
completed jobs per second of wall time, and the shard's capacity, jobs per second of its own
CPU: what one shard could coordinate if its nodes ran elsewhere and kept it busy. On a machine
with few cores the nodes' Python, not Redis, bounds the wall-clock rate.

    python benchmarks/cluster_capacity.py [--jobs 60] [--rounds 2] [--quick] [--redis URL]
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import parser, table
from redis.cluster import RedisCluster

from hierfl import keys
from hierfl.lifecycle import delete_job, deploy_job
from hierfl.node.pool import POOL_CONNECTIONS, NodePool, logging_to, tree_slots
from hierfl.sheet import parse_sheet
from hierfl.store.connection import connect
from hierfl.store.local_cluster import LocalCluster
from hierfl.store.shards import node_clients, owner_node
from hierfl.store.state import read_job

SHEET = """
[job]
name = "cap"
rounds = 2
seed = 0

[topology]
sub = [1]
clients = [0, 2]
workers = [1, 1]

[model]
name = "mlp"
hidden = [32]

[training]
local_epochs = 0
"""


@dataclass
class Shard:
    name: str
    jobs: list[str]
    calls: int = 0  # EVALSHA calls served during the run
    commands: int = 0  # every command served, those the scripts ran included
    cpu: float = 0.0  # redis-server CPU seconds during the run


def spread_names(client: RedisCluster, jobs: int) -> dict[str, list[str]]:
    """`jobs` names, dealt to the masters in turn by the slot their tree lands in."""
    shards = {node.name: [] for node in client.get_primaries()}
    per_shard = -(-jobs // len(shards))
    for i in range(100 * jobs):
        name = f"cap{os.getpid()}-{i}"
        owner = shards[owner_node(client, keys.job(name)).name]
        if len(owner) < per_shard and sum(map(len, shards.values())) < jobs:
            owner.append(name)
    return shards


def primary_stats(client: RedisCluster) -> dict[str, tuple[int, int, float]]:
    """Per master: (EVALSHA calls, all commands, CPU seconds) so far."""
    stats = {}
    for node, node_client in node_clients(client):
        if node.server_type == "primary":
            commands = node_client.info("commandstats")
            cpu = node_client.info("cpu")
            stats[node.name] = (
                int(commands.get("cmdstat_evalsha", {}).get("calls", 0)),
                sum(int(c.get("calls", 0)) for c in commands.values()),
                float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]))
    return stats


def run(url: str, jobs: int, rounds: int) -> tuple[list[Shard], float, float]:
    """Deploy and run the jobs; the shards (with what each served from the first deploy to
    the last completion), the deploy time and the run's wall time."""
    client = connect(url, pool_size=POOL_CONNECTIONS)
    if not isinstance(client, RedisCluster):
        sys.exit(f"{url} is not a Redis Cluster")
    base = parse_sheet(SHEET, source="cluster_capacity.py").with_overrides(rounds=rounds)
    shards = [Shard(name, names) for name, names in spread_names(client, jobs).items()]
    before = primary_stats(client)
    started = time.monotonic()
    trees = {name: deploy_job(client, base.with_overrides(name=name))
             for shard in shards for name in shard.jobs}
    deployed = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="hfl-cap-") as tmp, \
            logging_to(Path(tmp) / "nodes.log", logging.WARNING), NodePool(client, url) as pool:
        started = time.monotonic()
        for tree in trees.values():
            pool.start_slots(tree_slots(tree))
        failed = pool.wait(600)
        took = time.monotonic() - started
    after = primary_stats(client)
    _check_completed(client, trees, failed)
    for shard in shards:
        shard.calls, shard.commands, shard.cpu = (
            a - b for a, b in zip(after[shard.name], before[shard.name], strict=True))
    for name in trees:
        delete_job(client, name)
    return shards, deployed, took


def _check_completed(client: RedisCluster, trees: dict[str, list], failed: int) -> None:
    outcomes = {name: read_job(client, name).to_json()["outcome"] for name in trees}
    bad = {name: o for name, o in outcomes.items() if o != "completed"}
    if failed or bad:
        sys.exit(f"jobs did not complete: {bad or 'node failures'}")


def report(shards: list[Shard], deployed: float, took: float, rounds: int) -> None:
    total = sum(len(s.jobs) for s in shards)
    wall = deployed + took
    rows = [[s.name, len(s.jobs), s.calls, s.commands, round(s.cpu, 2), len(s.jobs) / wall,
             len(s.jobs) / s.cpu if s.cpu else None] for s in shards]
    print(table(["shard", "jobs", "script calls", "commands", "redis CPU s", "jobs/s (wall)",
                 "jobs per shard CPU s"], rows))
    calls = sum(s.calls for s in shards)
    commands = sum(s.commands for s in shards)
    cpu = sum(s.cpu for s in shards)
    print(f"{total} jobs of {rounds} rounds ({_SHAPE}) on {len(shards)} masters: deployed in "
          f"{deployed:.1f} s, ran in {took:.1f} s; {total / wall:.2f} jobs/s in all, "
          f"{total / wall / len(shards):.2f} jobs/s per shard (wall clock, every node a thread "
          f"of this process on {os.cpu_count()} cores)")
    print(f"per job, on its shard: {calls / total:.0f} script calls, {commands / total:.0f} "
          f"commands in all (those the scripts ran included) and {1000 * cpu / total:.1f} ms of "
          f"redis-server CPU, so one busy shard coordinates about {total / cpu:.0f} jobs/s")


_SHAPE = "1 sub-cluster, 2 clients, 2 workers, local_epochs = 0"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--jobs", type=int, default=60, help="jobs in all (default 60)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per job (default 2)")
    p.add_argument("--masters", type=int, default=3, help="masters of the throwaway cluster")
    args = p.parse_args()
    jobs = 24 if args.quick else args.jobs
    if args.redis:
        shards, deployed, took = run(args.redis, jobs, args.rounds)
    else:
        with tempfile.TemporaryDirectory(prefix="hfl-cluster-") as tmp, \
                LocalCluster(Path(tmp), masters=args.masters) as cluster:
            shards, deployed, took = run(cluster.url, jobs, args.rounds)
    report(shards, deployed, took, args.rounds)


if __name__ == "__main__":
    main()
