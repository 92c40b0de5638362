"""What every command shares: the --redis option, consoles, and turning errors into messages."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, TypeVar

import redis
import typer
from rich.console import Console
from rich.markup import escape

from hierfl.errors import HierflError
from hierfl.store.connection import connect, resolve_url

#: Line width when output goes to a file or pipe: rich would wrap at 80 columns, cutting
#: messages and tree lines in two for grep and log scrapers; a terminal wraps for the eye.
UNWRAPPED = 10_000


def console(stderr: bool = False) -> Console:
    """A console that wraps to the terminal, and not at all when piped or redirected."""
    made = Console(stderr=stderr, highlight=False)
    if not made.is_terminal:
        made.width = UNWRAPPED
    return made


out = console()
err = console(stderr=True)
F = TypeVar("F", bound=Callable)

RedisOption = Annotated[
    str | None,
    typer.Option(
        "--redis",
        envvar="HIERFL_REDIS_URL",
        help="Redis URL (redis://, rediss://, unix://). Default: the embedded server.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def reports_errors(command: F) -> F:
    """hierfl's own errors end the command with their message and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except HierflError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from exc
        except redis.ConnectionError as exc:
            err.print(f"[red]error:[/red] lost the connection to Redis: {escape(str(exc))}")
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def open_redis(url: str | None, job: str | None = None,
               pool_size: int | None = None) -> tuple[redis.Redis, str]:
    """A checked client and the URL it uses (to hand on to node processes).

    `job`: the job tree the command works on, if it is one; a Redis user confined to that
    tree by ACL needs it (see `connect`). `pool_size`: a client shared by many threads.
    """
    resolved = resolve_url(url)
    return connect(resolved, job=job, pool_size=pool_size), resolved
