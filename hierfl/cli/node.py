"""`hierfl node --role client|worker`: run one node until its job finishes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from hierfl.cli.common import RedisOption, open_redis, out, reports_errors
from hierfl.protocol import Role


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
    redis_url: RedisOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    """Claim a slot (or take the one named) and take part in the job until it ends."""
    from hierfl.node.claim import claim_slot
    from hierfl.node.client import ClientNode
    from hierfl.node.worker import WorkerNode

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    client, _ = open_redis(redis_url)
    slot = claim_slot(client, role, job=job, cluster=cluster, node=node_id, timeout=wait)
    out.print(f"{role.value} {slot.node} joined {slot.cluster}")
    runtime = (
        ClientNode(client, slot, data=data) if role == Role.CLIENT else WorkerNode(client, slot)
    )
    raise typer.Exit(runtime.run())
