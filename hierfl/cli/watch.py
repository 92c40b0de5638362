"""`hierfl watch NAME`: a live view of a job's tree, redrawn when Redis notifies a change."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from hierfl.cli.common import RedisOption, open_redis, reports_errors
from hierfl.tui.render import render
from hierfl.tui.watch import read_or_fail
from hierfl.tui.watch import watch as watch_live


@reports_errors
def watch(
    name: Annotated[str, typer.Argument(help="Root job name.")],
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    width: Annotated[int | None, typer.Option("--width", min=20, show_default=False,
                                              help="Columns to draw in. Default: the "
                                                   "terminal's.")] = None,
    redis_url: RedisOption = None,
) -> None:
    """Watch a job live: every cluster's stage, round and members, and the latest events.

    Ends (exit 0) once every node of the job has exited; Ctrl-C leaves earlier.
    """
    client, _ = open_redis(redis_url)
    console = Console(highlight=False, width=width)
    if once:
        console.print(render(read_or_fail(client, name), time.time()))
        return
    try:
        watch_live(client, name, console)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
