"""`hierfl node --role client|worker`: run one node until its job finishes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from hierfl.cli.common import RedisOption, open_redis, out, reports_errors
from hierfl.errors import BadInput
from hierfl.node.logs import node_handler
from hierfl.protocol import Role
from hierfl.store.connection import RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY, RECONNECT_TIMEOUT


@reports_errors
def node(
    role: Annotated[Role, typer.Option(help="What this node does.", case_sensitive=False)],
    job: Annotated[str | None, typer.Option(help="Join this job (default: any job).")] = None,
    cluster: Annotated[
        str | None, typer.Option(help="Join this cluster job, e.g. demo#0.")
    ] = None,
    node_id: Annotated[
        str | None, typer.Option("--id", help="Take this node id (with --cluster).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Train on this local .npz/.csv instead of a share.")
    ] = None,
    wait: Annotated[
        float | None, typer.Option(help="Give up after this many seconds without a free slot.")
    ] = None,
    reconnect_timeout: Annotated[
        float,
        typer.Option(
            envvar="HIERFL_RECONNECT_TIMEOUT",
            min=0,
            help="After losing Redis, keep trying to reconnect (backing off from "
            f"{RECONNECT_FIRST_DELAY:g} s to {RECONNECT_MAX_DELAY:g} s between attempts) for "
            "this many seconds before giving up.",
        ),
    ] = RECONNECT_TIMEOUT,
    count: Annotated[
        int, typer.Option(min=1, help="Run this many nodes of the role as threads of this "
                                      "process, sharing one notification connection.")
    ] = 1,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="With --count: nodes that run at once (a node "
                                             "waiting for a notification does not count). "
                                             "Default: one per core.")
    ] = None,
    redis_url: RedisOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    """Claim a slot (or take the one named) and take part in the job until it ends.

    SIGTERM or Ctrl-C stops the node cleanly (exit 0); restarted with the same --cluster and
    --id, it resumes from what Redis holds.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        handlers=[node_handler(logging.StreamHandler())])
    if data is not None:
        # Checked before a slot is claimed: a node that failed on it after joining would leave
        # its slot claimed and the job waiting for it.
        if role != Role.CLIENT:
            raise BadInput("--data is a client's own training data; a worker takes none")
        if not data.is_file():
            raise BadInput(f"--data {data}: no such file")
    if count > 1:
        if node_id:
            raise BadInput("--id names one node; with --count the nodes claim free slots")
        raise typer.Exit(run_many(role, count, job, cluster, data, wait, redis_url,
                                  concurrency))
    if concurrency is not None:
        raise BadInput("--concurrency limits the nodes of one process that run at once: it "
                       "goes with --count")
    # Reach Redis before importing the node, which brings in torch (seconds on a busy
    # machine): an unreachable server is reported at once.
    # A Redis user confined to one job tree (docs/security.md) checks the server there.
    client, url = open_redis(redis_url, job=job or (cluster or "").split("#")[0] or None)

    from hierfl.node.claim import claim_slot
    from hierfl.node.runtime import NodeStopped, stop_on_signals

    log = logging.getLogger("hierfl.node")
    slot = None
    with stop_on_signals():
        try:
            slot = claim_slot(client, role, job=job, cluster=cluster, node=node_id,
                              timeout=wait)
            out.print(f"{role.value} {slot.node} joined {slot.cluster}")
            options = {"url": url, "reconnect_timeout": reconnect_timeout}
            if role == Role.CLIENT:
                from hierfl.node.client import ClientNode  # torch, to train

                runtime = ClientNode(client, slot, data=data, **options)
            else:  # a sub-cluster's worker never loads torch (root workers do, to score)
                from hierfl.node.worker import WorkerNode

                runtime = WorkerNode(client, slot, **options)
            code = runtime.run()  # handles a stop itself once it runs
        except NodeStopped as stop:
            if slot is None:
                log.warning("%s: stopped before joining a job", stop.signal_name)
            else:
                log.warning("%s: stopped; restart with --cluster %s --id %s to resume",
                            stop.signal_name, slot.cluster, slot.node)
            code = 0
    raise typer.Exit(code)


def run_many(role: Role, count: int, job: str | None, cluster: str | None, data: Path | None,
             wait: float | None, redis_url: str | None, concurrency: int | None = None) -> int:
    """`--count N`: claim N slots one after another and run them as threads; 0 when every
    node exited 0. Ctrl-C or SIGTERM abandons them (their steps done so far are in Redis)."""
    from hierfl.node.claim import claim_slot
    from hierfl.node.pool import CONCURRENCY, POOL_CONNECTIONS, NodePool
    from hierfl.node.runtime import NodeStopped, stop_on_signals

    root = job or (cluster or "").split("#")[0] or None
    client, url = open_redis(redis_url, job=root, pool_size=POOL_CONNECTIONS)
    with stop_on_signals(), NodePool(client, url, concurrency=concurrency or CONCURRENCY) as pool:
        try:
            for _ in range(count):
                slot = claim_slot(client, role, job=job, cluster=cluster, timeout=wait,
                                  waiters=pool.hub.waiter)
                out.print(f"{role.value} {slot.node} joined {slot.cluster}")
                pool.start(slot, data)
            code = pool.wait()
        except NodeStopped as stop:
            logging.getLogger("hierfl.node").warning(
                "%s: stopped %d nodes; restart each with --cluster and --id to resume",
                stop.signal_name, pool.running)
            return 0
    for slot, why in sorted(pool.failures().items(), key=lambda item: str(item[0])):
        out.print(f"[red]{slot} failed[/red]: {why}")
    return code
