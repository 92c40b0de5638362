"""`hierfl cancel NAME` and `hierfl delete NAME`."""

from __future__ import annotations

from typing import Annotated

import typer

from hierfl.cli.common import RedisOption, open_redis, out, reports_errors
from hierfl.lifecycle import cancel_job, delete_job


@reports_errors
def cancel(
    name: Annotated[str, typer.Argument(help="Root job name.")],
    reason: Annotated[str, typer.Option(help="Why; shown by status and events.")] = "",
    redis_url: RedisOption = None,
) -> None:
    """Stop a running job: every node finishes or abandons its step and exits."""
    client, _ = open_redis(redis_url)
    clusters = cancel_job(client, name, reason)
    out.print(f"job {name} cancelled: {clusters} clusters stopped; its nodes are exiting")


@reports_errors
def delete(
    name: Annotated[str, typer.Argument(help="Root job name.")],
    force: Annotated[bool, typer.Option(help="Delete even while nodes are live.")] = False,
    redis_url: RedisOption = None,
) -> None:
    """Remove every key and blob of a job tree (refused while nodes are live)."""
    client, _ = open_redis(redis_url)
    deleted = delete_job(client, name, force)
    out.print(f"job {name} deleted ({deleted} keys)")
