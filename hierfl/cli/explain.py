"""`hierfl explain NAME`: what each cluster waits for, down to the members that block it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hierfl.cli.common import JsonOption, RedisOption, open_redis, reports_errors
from hierfl.errors import UnknownJob
from hierfl.explain import explain as explain_job
from hierfl.explain import render_text
from hierfl.protocol import ErrorCode
from hierfl.store.state import read_job


@reports_errors
def explain(
    name: Annotated[str, typer.Argument(help="Root job name.")],
    as_json: JsonOption = False,
    redis_url: RedisOption = None,
) -> None:
    """Say why a job is not moving: the stage each cluster is in and who holds it up."""
    client, _ = open_redis(redis_url)
    job = read_job(client, name)
    if job is None:
        raise UnknownJob(ErrorCode.UNKNOWN_JOB, f"job={name}: no such job")
    findings = explain_job(job)
    if as_json:
        data = {"job": name, "finished": job.finished, "findings": [f.to_json() for f in findings]}
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(render_text(findings))
