"""`hierfl simulate SHEET`: every node of a tree as a thread of this one process.

The same deploy, node code, scripts and server as `hierfl run`, without a process per node:
one notification connection serves every waiter, so a tree of a thousand clients runs on a
laptop. Node logs go to one file under the run's directory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from hierfl.cli.common import RedisOption, open_redis, out, reports_errors
from hierfl.cli.run import (
    JsonOption,
    NameOption,
    QuietOption,
    RoundProgress,
    RoundsOption,
    RunsDirOption,
    SheetArgument,
    TimeoutOption,
    cancelled_unless_finished,
    conclude,
    deploy_unique,
    follow,
    load_run_sheet,
    make_log_dir,
    node_count,
)
from hierfl.jobtree import ClusterSpec
from hierfl.node.claim import claim_slot
from hierfl.node.pool import CONCURRENCY, POOL_CONNECTIONS, NodePool
from hierfl.node.runtime import Slot
from hierfl.protocol import Role

#: How long the nodes may take to exit once the job has finished (seconds).
EXIT_TIMEOUT = 60.0

ConcurrencyOption = Annotated[
    int, typer.Option(min=1, help="Nodes of this process that run at once (training, "
                                  "aggregating, calling Redis); a node waiting for a "
                                  "notification does not count. Default: one per core.")
]


@reports_errors
def simulate(
    sheet: SheetArgument,
    name: NameOption = None,
    rounds: RoundsOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    timeout: TimeoutOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    redis_url: RedisOption = None,
    concurrency: ConcurrencyOption = CONCURRENCY,
) -> None:
    """Run a whole federated job with every node as a thread of this process."""
    job = load_run_sheet(sheet, rounds, timeout)
    client, url = open_redis(redis_url, pool_size=POOL_CONNECTIONS)
    job, tree = deploy_unique(client, job, name)
    say = (lambda *a: None) if quiet or as_json else out.print
    with cancelled_unless_finished(client, job.name):
        log_file = make_log_dir(runs_dir, job.name) / "nodes.log"
        say(f"job [bold]{job.name}[/bold]: {len(tree)} clusters, {node_count(tree)} nodes as "
            f"threads of this process, {job.rounds} rounds; node log in {log_file}")
        with logging_to(log_file), NodePool(client, url, concurrency=concurrency) as pool:
            for slot in tree_slots(tree):
                pool.start(claim_slot(client, slot.role, cluster=slot.cluster, node=slot.node,
                                      waiters=pool.hub.waiter))
            with RoundProgress(out, job.rounds, enabled=not (quiet or as_json)) as progress:
                status = follow(client, job.name, pool.check, progress, timeout)
            pool.wait(EXIT_TIMEOUT)
    conclude(status, as_json, quiet)


def tree_slots(tree: list[ClusterSpec]) -> list[Slot]:
    """Every node of the tree: workers first, cluster by cluster in pre-order."""
    return [Slot(spec.name, role, node)
            for spec in tree
            for role, ids in ((Role.WORKER, spec.workers), (Role.CLIENT, spec.clients))
            for node in ids]


@contextmanager
def logging_to(path: Path, level: int = logging.INFO) -> Iterator[None]:
    """Send the nodes' log records to `path` instead of the terminal."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()
