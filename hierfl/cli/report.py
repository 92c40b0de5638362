"""`hierfl report NAME --out DIR`: plots, a tree snapshot and a JSON summary of a job.

The work is in `hierfl.report`; matplotlib comes from the ``report`` extra and its absence is
reported (with the install command) before anything is read or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hierfl.cli.common import RedisOption, open_redis, out, reports_errors
from hierfl.report import require_matplotlib, write_report


@reports_errors
def report(
    name: Annotated[str, typer.Argument(help="Root job name.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                          help="Directory to write the report into "
                                               "(created if missing).")],
    redis_url: RedisOption = None,
) -> None:
    """Write accuracy.png, timings.png, tree.svg and summary.json for a job into --out."""
    require_matplotlib()
    client, _ = open_redis(redis_url)
    job_report, written = write_report(client, name, out_dir)
    summary = job_report.summary()
    if not summary["finished"]:
        out.print(f"[yellow]job {name} has not finished[/yellow]: the report covers what "
                  "has happened so far")
    final = summary["final_accuracy"]
    wall = summary["wall_time_s"]
    out.print(f"job [bold]{name}[/bold] {summary['outcome']}: {summary['rounds_done']}/"
              f"{summary['rounds']} rounds"
              + (f", final test accuracy {final:.4f}" if final is not None else "")
              + (f", {wall:.1f} s wall time" if wall is not None else ""))
    for path in written:
        out.print(f"  wrote {path}")
