"""`hierfl init-job NAME`: deploy a job tree (from a sheet, or a uniform one from options)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hierfl.cli.common import JsonOption, RedisOption, open_redis, out, reports_errors
from hierfl.jobtree import check_root_name
from hierfl.lifecycle import deploy_job
from hierfl.sheet import default_sheet, load_sheet
from hierfl.wording import counted


@reports_errors
def init_job(
    name: Annotated[str, typer.Argument(help="Root job name; sub-clusters become NAME#0, ...")],
    sub: Annotated[int | None, typer.Option(help="Sub-clusters per inner cluster [2].",
                                            min=0)] = None,
    depth: Annotated[int | None, typer.Option(help="Levels below the root [1].", min=0)] = None,
    clients: Annotated[int | None, typer.Option(help="Clients per leaf cluster [3].",
                                                min=1)] = None,
    workers: Annotated[int | None, typer.Option(help="Workers per cluster [3].", min=1)] = None,
    rounds: Annotated[int | None, typer.Option(help="Global rounds [5].", min=1)] = None,
    sheet: Annotated[
        Path | None,
        typer.Option(help="A TOML job sheet; NAME and any option given override it."),
    ] = None,
    redis_url: RedisOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy a job tree and print its cluster job names."""
    check_root_name(name)
    if sheet is not None:
        job = load_sheet(sheet).with_overrides(name=name, **_given(
            rounds=rounds, workers=workers, clients=clients,
            sub=None if sub is None else [sub] * (1 if depth is None else depth)))
    else:
        depth = 1 if depth is None else depth
        sub = 2 if sub is None else sub
        job = default_sheet(name, sub=sub, depth=depth if sub else 0,
                            clients=3 if clients is None else clients,
                            workers=3 if workers is None else workers,
                            rounds=5 if rounds is None else rounds)
    client, _ = open_redis(redis_url)
    tree = deploy_job(client, job)
    if as_json:
        out.print_json(json.dumps({"job": name, "clusters": [s.to_json() for s in tree]}))
        return
    for spec in tree:
        members = counted(len(spec.clients), "clients") if spec.clients else ""
        subs = counted(len(spec.children), "sub-clusters") if spec.children else ""
        detail = ", ".join(x for x in (subs, members, counted(len(spec.workers), "workers")) if x)
        out.print(f"{'  ' * spec.level}{spec.name}  [dim]({detail})[/dim]")


def _given(**options: object) -> dict[str, object]:
    """Only the options the user gave: the rest stay as the sheet says."""
    return {k: v for k, v in options.items() if v is not None}
