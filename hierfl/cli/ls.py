"""`hierfl ls`: every job registered on the server, as a table or as JSON from the same rows."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import redis
import typer
from rich.table import Table

from hierfl import keys
from hierfl.cli.common import JsonOption, RedisOption, open_redis, out, reports_errors
from hierfl.protocol import Outcome
from hierfl.store.state import JobStatus, list_jobs, read_job

#: The state of a registered job whose tree is gone.
MISSING = "missing"
#: The state of a job whose every node has exited.
EXITED = "exited"


@dataclass(frozen=True)
class JobRow:
    name: str
    outcome: str  # running / completed / failed / cancelled, or "missing"
    state: str  # the root's process stage, "exited" when every node has, or "missing"
    round: int
    rounds: int
    clients: int  # training clients of the whole tree (sub-clusters not counted)
    workers: int
    accuracy: float | None  # after the last evaluated round
    created_ms: int | None  # when the job was registered

    def age_seconds(self, now: float) -> float | None:
        return None if self.created_ms is None else max(0.0, now - self.created_ms / 1000)

    def to_json(self, now: float) -> dict:
        created = (None if self.created_ms is None else datetime.fromtimestamp(
            self.created_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds"))
        age = self.age_seconds(now)
        return {"job": self.name, "outcome": self.outcome, "state": self.state,
                "finished": self.state == EXITED, "round": self.round, "rounds": self.rounds,
                "clients": self.clients, "workers": self.workers, "accuracy": self.accuracy,
                "created_at": created, "age_seconds": None if age is None else round(age, 3)}


def row_of(name: str, job: JobStatus | None, created_ms: int | None) -> JobRow:
    if job is None:
        return JobRow(name, MISSING, MISSING, 0, 0, 0, 0, None, created_ms)
    top = job.top
    clients = sum(len(c.clients) - len(set(c.children) & set(c.clients))
                  for c in job.clusters.values())
    workers = sum(len(c.workers) for c in job.clusters.values())
    accuracy = job.metrics[-1]["accuracy"] if job.metrics else None
    state = EXITED if job.finished else top.process_stage.name.lower()
    return JobRow(name, top.outcome or Outcome.RUNNING.value, state, top.round, top.rounds,
                  clients, workers, accuracy, created_ms)


def read_rows(client: redis.Redis) -> list[JobRow]:
    """One row per registered job, oldest first."""
    names = list_jobs(client)
    if not names:
        return []
    created = client.hmget(keys.JOBS, names)
    return [row_of(name, read_job(client, name), _int(ms))
            for name, ms in zip(names, created, strict=True)]


def _int(value: bytes | str | None) -> int | None:
    text = value.decode() if isinstance(value, bytes) else value
    return int(text) if text and text.isdigit() else None


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def table(rows: list[JobRow], now: float) -> Table:
    t = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("job", "outcome", "state", "round", "clients", "workers", "accuracy"):
        t.add_column(column, justify="right" if column in ("clients", "workers") else "left")
    t.add_column("age", justify="right")
    for row in rows:
        accuracy = "-" if row.accuracy is None else f"{row.accuracy:.4f}"
        t.add_row(row.name, row.outcome, row.state, f"{row.round}/{row.rounds}",
                  str(row.clients), str(row.workers), accuracy,
                  format_age(row.age_seconds(now)))
    return t


@reports_errors
def ls(as_json: JsonOption = False, redis_url: RedisOption = None) -> None:
    """List every job on the server: outcome, state, round, nodes, accuracy and age."""
    client, _ = open_redis(redis_url)
    rows = read_rows(client)
    now = time.time()
    if as_json:
        typer.echo(json.dumps([row.to_json(now) for row in rows], indent=2))
    elif not rows:
        out.print("no jobs on this server")
    else:
        out.print(table(rows, now))
