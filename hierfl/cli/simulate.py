"""`hierfl simulate SHEET`: every node of a tree as a thread of this one process (or of a few:
`--processes`).

The same deploy, node code, scripts and server as `hierfl run`, without a process per node:
one notification connection serves every waiter, so a tree of a thousand clients runs on a
laptop. Node logs go to one file under the run's directory (one per process).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import redis
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
    check_nodes,
    conclude,
    deploy_unique,
    follow,
    load_run_sheet,
    make_log_dir,
    node_count,
    stop_nodes,
)
from hierfl.store.blobs import BlobCache
from hierfl.store.state import JobStatus
from hierfl.wording import counted

if TYPE_CHECKING:
    from hierfl.node.runtime import Slot

#: How long the nodes may take to exit once the job has finished (seconds).
EXIT_TIMEOUT = 60.0

ConcurrencyOption = Annotated[
    int | None, typer.Option(min=1, help="Nodes of a process that run at once (training, "
                                         "aggregating, calling Redis); a node waiting for a "
                                         "notification does not count. Default: one per core.")
]
ProcessesOption = Annotated[
    int, typer.Option(min=1, help="Spread the nodes over this many child processes to use "
                                  "more than one core; a cluster's clients and workers stay "
                                  "together (1: every node a thread of this process).")
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
    concurrency: ConcurrencyOption = None,
    processes: ProcessesOption = 1,
) -> None:
    """Run a whole federated job with every node as a thread of this process (or of
    --processes child processes)."""
    # The nodes' code (and torch) is imported only here: every other command starts faster.
    from hierfl.node import part
    from hierfl.node.pool import CONCURRENCY, POOL_CONNECTIONS, NodePool, logging_to, tree_slots

    concurrency = concurrency or CONCURRENCY
    job = load_run_sheet(sheet, rounds, timeout)
    BlobCache.from_env()  # a bad $HIERFL_BLOB_CACHE_MB is refused before anything is deployed
    client, url = open_redis(redis_url, pool_size=POOL_CONNECTIONS)
    job, tree = deploy_unique(client, job, name)
    say = (lambda *a: None) if quiet or as_json else out.print
    progress = RoundProgress(out, job.rounds, enabled=not (quiet or as_json))
    with cancelled_unless_finished(client, job.name):
        log_dir = make_log_dir(runs_dir, job.name)
        shares = part.split(tree, processes) if processes > 1 else []
        if shares:
            say(f"job [bold]{job.name}[/bold]: {counted(len(tree), 'clusters')}, "
                f"{counted(node_count(tree), 'nodes')} as threads of "
                f"{counted(len(shares), 'processes')}, {counted(job.rounds, 'rounds')}; "
                f"node logs in {log_dir}/nodes-*.log")
            status = _in_processes(client, url, job.name, shares, concurrency, log_dir,
                                   progress, timeout)
        else:
            log_file = log_dir / "nodes.log"
            say(f"job [bold]{job.name}[/bold]: {counted(len(tree), 'clusters')}, "
                f"{counted(node_count(tree), 'nodes')} as threads of this process, "
                f"{counted(job.rounds, 'rounds')}; node log in {log_file}")
            with logging_to(log_file), NodePool(client, url, concurrency=concurrency) as pool:
                pool.start_slots(tree_slots(tree))
                with progress:
                    status = follow(client, job.name, pool.check, progress, timeout)
                pool.wait(EXIT_TIMEOUT)
    conclude(status, as_json, quiet)


def _in_processes(client: redis.Redis, url: str, root: str, shares: list[list[Slot]],
                  concurrency: int, log_dir: Path, progress: RoundProgress,
                  timeout: float | None) -> JobStatus:
    """Follow the job while child processes run its nodes; they are stopped if it fails."""
    from hierfl.node import part

    procs = part.start(url, shares, concurrency, log_dir)
    try:
        with progress:
            status = follow(client, root, lambda: check_nodes(procs), progress, timeout)
        part.wait(procs, EXIT_TIMEOUT)
        check_nodes(procs)
        return status
    finally:
        stop_nodes(procs)
