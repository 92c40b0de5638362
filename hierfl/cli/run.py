"""`hierfl run SHEET`: everything on this machine — embedded Redis, deploy, one process per
node, progress per round, the final test accuracy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from hierfl import keys
from hierfl.cli.common import RedisOption, open_redis, out, reports_errors
from hierfl.errors import BadInput, HierflError, JobExists
from hierfl.jobtree import ClusterSpec
from hierfl.lifecycle import cancel_job, deploy_job
from hierfl.sheet import JobSheet, load_sheet
from hierfl.store.state import JobStatus, job_exists, read_job
from hierfl.store.waiter import KeyWaiter
from hierfl.wording import counted

#: How often the supervisor looks at its child processes when Redis is quiet (seconds).
SUPERVISE_EVERY = 1.0


# The options `hierfl run` and `hierfl simulate` share.
SheetArgument = Annotated[Path, typer.Argument(help="The TOML job sheet.", exists=True,
                                                dir_okay=False)]
NameOption = Annotated[str | None, typer.Option(help="Job name (default: the sheet's, made "
                                                     "unique).")]
RoundsOption = Annotated[int | None, typer.Option(help="Override the sheet's rounds.", min=1)]
RunsDirOption = Annotated[Path, typer.Option(help="Where node logs go.")]
TimeoutOption = Annotated[float | None, typer.Option(help="Fail after this many seconds.")]
QuietOption = Annotated[bool, typer.Option(help="Print only the result.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the final status as JSON.")]


@reports_errors
def run(
    sheet: SheetArgument,
    name: NameOption = None,
    rounds: RoundsOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    timeout: TimeoutOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    redis_url: RedisOption = None,
) -> None:
    """Run a whole federated job locally and print its final test accuracy."""
    job = load_run_sheet(sheet, rounds, timeout)
    check_process_count(job.tree())
    client, url = open_redis(redis_url)
    job, tree = deploy_unique(client, job, name)
    say = (lambda *a: None) if quiet or as_json else out.print
    with cancelled_unless_finished(client, job.name):
        log_dir = make_log_dir(runs_dir, job.name)
        say(f"job [bold]{job.name}[/bold]: {counted(len(tree), 'clusters')}, "
            f"{counted(node_count(tree), 'nodes')}, {counted(job.rounds, 'rounds')}; "
            f"node logs in {log_dir}/")
        procs = spawn_nodes(tree, url, log_dir)
        try:
            with RoundProgress(out, job.rounds, enabled=not (quiet or as_json)) as progress:
                status = follow(client, job.name, lambda: check_nodes(procs), progress,
                                timeout)
        finally:
            stop_nodes(procs)
    conclude(status, as_json, quiet)


def load_run_sheet(sheet: Path, rounds: int | None, timeout: float | None) -> JobSheet:
    """The sheet with `--rounds` applied, after checking `--timeout`."""
    if timeout is not None and timeout <= 0:
        raise BadInput(f"--timeout must be a positive number of seconds, got {timeout}")
    job = load_sheet(sheet)
    return job.with_overrides(rounds=rounds) if rounds else job


#: `hierfl run` starts one process per node; beyond this, run the nodes elsewhere.
MAX_PROCESSES = 256


def check_process_count(tree: list[ClusterSpec]) -> None:
    count = node_count(tree)
    if count > MAX_PROCESSES:
        raise BadInput(f"this sheet has {count} nodes; hierfl run starts one process per node "
                       f"and stops at {MAX_PROCESSES}: deploy it with hierfl init-job and start "
                       "nodes on several machines with hierfl node")


def deploy_unique(client: redis.Redis, job: JobSheet, name: str | None
                  ) -> tuple[JobSheet, list[ClusterSpec]]:
    """Deploy under `name`, or under the sheet's name made unique (`digits-2`, ...); a name
    taken between the check and the deploy by a concurrent run moves on to the next."""
    if name:
        job = job.with_overrides(name=name)
        return job, deploy_job(client, job)
    for _ in range(100):
        candidate = job.with_overrides(name=unique_name(client, job.name))
        try:
            return candidate, deploy_job(client, candidate)
        except JobExists:
            continue
    raise HierflError(f"could not find a free name for job {job.name}")


def make_log_dir(runs_dir: Path, name: str) -> Path:
    log_dir = runs_dir / name
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create the node log directory {log_dir}: {exc.strerror}") from None
    return log_dir


@contextmanager
def cancelled_unless_finished(client: redis.Redis, root: str) -> Iterator[None]:
    """If the run ends early (timeout, Ctrl-C, SIGTERM, a failed node, an error), cancel the
    job so it does not stay "running" and its nodes exit."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except BaseException as exc:
        reason = "hierfl run was interrupted" if isinstance(exc, KeyboardInterrupt) else (
            f"hierfl run stopped: {exc}")
        with suppress(HierflError, redis.RedisError):
            cancel_job(client, root, reason)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def unique_name(client: redis.Redis, base: str) -> str:
    """`base`, or `base-2`, `base-3`, ... when earlier runs used it."""
    name, n = base, 1
    while job_exists(client, name):
        n += 1
        name = f"{base}-{n}"
    return name


def node_count(tree: list[ClusterSpec]) -> int:
    return sum(len(s.clients) + len(s.workers) for s in tree)


def spawn_nodes(tree: list[ClusterSpec], url: str, log_dir: Path) -> dict[str, subprocess.Popen]:
    env = {**os.environ, "HIERFL_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    procs: dict[str, subprocess.Popen] = {}
    for spec in tree:
        for role, ids in (("worker", spec.workers), ("client", spec.clients)):
            for node_id in ids:
                label = f"{spec.name}/{role}/{node_id}"
                log = (log_dir / f"{spec.name}.{role}.{node_id}.log").open("wb")
                cmd = [sys.executable, "-m", "hierfl", "node", "--role", role,
                       "--cluster", spec.name, "--id", node_id]
                procs[label] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=env)
                log.close()
    return procs


class RoundProgress:
    """A progress bar over the job's rounds with the latest test accuracy, and one printed line
    per evaluated round above it (so the history stays on screen). Disabled, it shows nothing.

    Round 0 is the initial model; the bar counts the rounds whose global model was evaluated.
    """

    def __init__(self, console: Console, rounds: int, enabled: bool = True) -> None:
        self.console = console
        self.rounds = rounds
        self.enabled = enabled
        self.shown: set[int] = set()
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/green]"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds  accuracy [bold]{task.fields[accuracy]}[/bold]"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.progress.add_task("starting", total=rounds, accuracy="–")

    def __enter__(self) -> RoundProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, status: JobStatus, elapsed: float) -> None:
        if not self.enabled:
            return
        new = [m for m in status.metrics if int(m["round"]) not in self.shown]
        self.shown.update(int(m["round"]) for m in new)
        done = max(self.shown, default=0)
        latest = status.metrics[-1]["accuracy"] if status.metrics else None
        top = status.top
        if status.finished:
            what = f"{status.root} {top.outcome or 'finished'}"
        elif top.round:
            what = f"{status.root} training round {top.round}"
        else:
            what = f"{status.root} setting up"
        self.progress.update(self.task, completed=min(done, self.rounds), description=what,
                             accuracy=f"{latest:.4f}" if latest is not None else "–")
        # Printed after the update, so the bar redrawn below each line is already current.
        for metric in new:
            self.console.print(f"round {int(metric['round']):>3}/{self.rounds}  accuracy "
                               f"{metric['accuracy']:.4f}  loss {metric['loss']:.4f}  "
                               f"[dim]{elapsed:6.1f} s[/dim]")


def follow(client: redis.Redis, root: str, check: Callable[[], None],
           progress: RoundProgress, timeout: float | None) -> JobStatus:
    """Show each round's metrics as they land; return when every node has exited.

    `check()` raises when the nodes can no longer finish the job (one of them failed).
    """
    started = time.monotonic()
    watched = [keys.job(root), keys.stages(root), keys.metrics(root)]
    with KeyWaiter(client, watched, safety_timeout=SUPERVISE_EVERY) as waiter:
        while True:
            status = read_job(client, root)
            progress.update(status, time.monotonic() - started)
            if status.finished:
                return status
            check()
            if timeout is not None and time.monotonic() - started > timeout:
                raise HierflError(f"job {root} did not finish within {timeout:.0f} s "
                                  f"(hierfl status {root} shows where it stands)")
            waiter.wait()


def check_nodes(procs: dict[str, subprocess.Popen]) -> None:
    failed = {label: p.returncode for label, p in procs.items()
              if p.poll() is not None and p.returncode != 0}
    if failed:
        names = ", ".join(f"{label} (exit {code})" for label, code in sorted(failed.items()))
        raise HierflError(f"node processes failed: {names}; see their logs")


def stop_nodes(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def conclude(status: JobStatus, as_json: bool, quiet: bool) -> None:
    """Print the result; exit 1 unless the job completed."""
    report(status, as_json, quiet)
    if status.to_json()["outcome"] != "completed":
        raise typer.Exit(1)


def report(status: JobStatus, as_json: bool, quiet: bool) -> None:
    data = status.to_json()
    if as_json:
        out.print_json(json.dumps(data))
        return
    final = data["metrics"][-1] if data["metrics"] else None
    if data["outcome"] != "completed":
        out.print(f"[red]job {status.root} {data['outcome']}[/red]: {data['reason'] or ''}")
    elif final:
        out.print(f"job {status.root} completed: final test accuracy "
                  f"[bold]{final['accuracy']:.4f}[/bold] (loss {final['loss']:.4f}) after "
                  f"{data['rounds']} rounds")
