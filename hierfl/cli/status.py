"""`hierfl status NAME`: where a job stands, as a tree or as JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from hierfl.cli.common import JsonOption, RedisOption, open_redis, out, reports_errors
from hierfl.errors import UnknownJob
from hierfl.protocol import ErrorCode, NodeStatus, ProcessStage
from hierfl.store.state import ClusterState, JobStatus, read_job


@reports_errors
def status(
    name: Annotated[str, typer.Argument(help="Root job name.")],
    as_json: JsonOption = False,
    redis_url: RedisOption = None,
) -> None:
    """Show a job's stages, members, rounds and metrics."""
    client, _ = open_redis(redis_url)
    job = read_job(client, name)
    if job is None:
        raise UnknownJob(ErrorCode.UNKNOWN_JOB, f"job={name}: no such job")
    if as_json:
        out.print_json(json.dumps(job.to_json()))
    else:
        out.print(render(job))


def _members(members: dict[str, int]) -> str:
    return " ".join(f"{k}:{NodeStatus(v).name.lower()}" for k, v in sorted(members.items()))


def _stage(stage: int) -> str:
    """A stage by its status name: a bare number would read like a count of members."""
    return NodeStatus(stage).name.lower()


def _line(c: ClusterState) -> str:
    stage = ProcessStage(c.process_stage).name.lower()
    epochs = f" epoch {c.epoch}/{c.cluster_epochs}" if c.parent else ""
    line = (f"[bold]{c.name}[/bold] {stage} gen {c.generation}{epochs}  "
            f"clients {_stage(c.client_stage)} [dim]({_members(c.clients)})[/dim]  "
            f"workers {_stage(c.worker_stage)} [dim]({_members(c.workers)})[/dim]")
    if (due := c.deadline_in()) is not None:
        line += f"  deadline in {due:.1f} s" if due > 0 else f"  deadline passed {-due:.1f} s ago"
    if c.dropped:
        line += f"  [yellow]dropped {', '.join(c.dropped)}[/yellow]"
    if c.failure:
        line += f"  [red]failed: {escape(c.failure)}[/red]"
    return line


def render(job: JobStatus) -> Tree:
    data = job.to_json()
    last = data["metrics"][-1] if data["metrics"] else None
    metric = f"  accuracy {last['accuracy']:.4f} loss {last['loss']:.4f}" if last else ""
    head = (f"job [bold]{job.root}[/bold] {data['outcome']}"
            f"{' (finished)' if data['finished'] else ''}  round {data['round']}/"
            f"{data['rounds']}{metric}")
    tree = Tree(head)
    branches = {}
    for name, cluster in job.clusters.items():
        parent = branches.get(cluster.parent, tree)
        branches[name] = parent.add(_line(cluster))
    return tree
