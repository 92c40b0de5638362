"""`hierfl init-job NAME`: deploy a job tree (from a sheet, or a uniform one from options)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hierfl.cli.common import JsonOption, RedisOption, open_redis, out, reports_errors
from hierfl.lifecycle import deploy_job
from hierfl.jobtree import check_root_name
from hierfl.sheet import default_sheet, load_sheet


@reports_errors
def init_job(
    name: Annotated[str, typer.Argument(help="Root job name; sub-clusters become NAME#0, ...")],
    sub: Annotated[int, typer.Option(help="Sub-clusters per inner cluster.", min=0)] = 2,
    depth: Annotated[int, typer.Option(help="Levels below the root.", min=0)] = 1,
    clients: Annotated[int, typer.Option(help="Clients per leaf cluster.", min=1)] = 3,
    workers: Annotated[int, typer.Option(help="Workers per cluster.", min=1)] = 3,
    rounds: Annotated[int, typer.Option(help="Global rounds.", min=1)] = 5,
    sheet: Annotated[
        Path | None, typer.Option(help="A TOML job sheet; NAME and --rounds override it.")
    ] = None,
    redis_url: RedisOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy a job tree and print its cluster job names."""
    check_root_name(name)
    if sheet is not None:
        job = load_sheet(sheet).with_overrides(name=name, rounds=rounds)
    else:
        job = default_sheet(name, sub=sub, depth=depth if sub else 0, clients=clients,
                            workers=workers, rounds=rounds)
    client, _ = open_redis(redis_url)
    tree = deploy_job(client, job)
    if as_json:
        out.print_json(json.dumps({"job": name, "clusters": [s.to_json() for s in tree]}))
        return
    for spec in tree:
        members = f"{len(spec.clients)} clients" if spec.clients else ""
        subs = f"{len(spec.children)} sub-clusters" if spec.children else ""
        detail = ", ".join(x for x in (subs, members, f"{len(spec.workers)} workers") if x)
        out.print(f"{'  ' * spec.level}{spec.name}  [dim]({detail})[/dim]")
