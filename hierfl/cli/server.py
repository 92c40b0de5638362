"""`hierfl server start|stop|status|acl`: manage the embedded Redis server by hand.

Other commands start the server on demand; these exist to stop it, to see where it lives, to
start it ahead of nodes launched elsewhere on this machine (or, with --listen, on other
machines), and to print the ACL rule that confines a node's Redis user to one job.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import redis
import typer
from rich.table import Table
from rich.text import Text

from hierfl.cli.common import console
from hierfl.errors import HierflError
from hierfl.store import acl
from hierfl.store.connection import RECONNECT_TIMEOUT
from hierfl.store.server import EmbeddedServer
from hierfl.store.state import list_jobs, read_cluster
from hierfl.wording import counted

app = typer.Typer(help="Manage the embedded Redis server.", no_args_is_help=True)

_out = console()
_err = console(stderr=True)
T = TypeVar("T")


def _or_exit(action: Callable[[], T]) -> T:
    """Run `action`; turn hierfl's own errors into a message and exit status 1."""
    try:
        return action()
    except HierflError as exc:
        _err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from exc


@app.command()
def start(
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Also listen on this TCP address, with a generated password kept in a 0600 "
            "file in the state directory. Default: only a unix socket in a private directory.",
        ),
    ] = None,
) -> None:
    """Start the embedded Redis server (or report the one already running)."""
    server = _or_exit(lambda: EmbeddedServer().start(listen=listen))
    pid = server.status()["pid"]
    verb = "already running" if server.reused else "started"
    _out.print(f"Redis {verb}: {server.url} (pid {pid}, dir {server.home})", highlight=False,
               soft_wrap=True)
    if tcp_url := server.tcp_url():
        _out.print(
            f"listening on {tcp_url} (the password is in {server.password_path}, "
            "readable only by you; plain TCP without TLS: use it on a trusted network)",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def stop() -> None:
    """Stop the embedded Redis server; its data stays in the state directory."""
    server = _or_exit(EmbeddedServer)
    if running := _running_jobs(server):
        _err.print(f"[yellow]note:[/yellow] {counted(len(running), 'jobs')} still running "
                   f"({', '.join(running)}): their nodes try to reconnect for up to "
                   f"{RECONNECT_TIMEOUT:g} s (hierfl node --reconnect-timeout) and resume if "
                   "`hierfl server start` brings Redis back within that time", markup=True,
                   highlight=False)
    if _or_exit(server.stop):
        _out.print(f"Redis stopped (dir {server.home})", highlight=False)
    else:
        _out.print(f"No embedded Redis is running (dir {server.home})", highlight=False)


def _running_jobs(server: EmbeddedServer) -> list[str]:
    """The jobs on `server` that have not finished ([] when it is not running)."""
    try:
        client = redis.Redis.from_url(server.url, password=server.password, socket_timeout=1.0)
        with client:
            return [name for name in list_jobs(client)
                    if (top := read_cluster(client, name)) and not top.finished]
    except redis.RedisError:
        return []  # not running (or not answering): nothing to say before stopping it


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show whether the embedded Redis server runs, where, and how big it is."""
    info = _or_exit(lambda: EmbeddedServer().status())
    if as_json:
        typer.echo(json.dumps(info))
    else:
        _out.print(_table(info))


def _table(info: dict[str, Any]) -> Table:
    table = Table(title="embedded Redis", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in info.items():
        shown = Text("-" if value is None else str(value))  # Text: paths are not markup
        if field == "running":
            shown = Text("yes", style="green") if value else Text("no", style="red")
        table.add_row(field, shown)
    return table


@app.command("acl")
def acl_rule(
    job: Annotated[str, typer.Argument(help="The job (root name) the node user is confined to.")],
    user: Annotated[
        str | None, typer.Option(help="The Redis user name (default: node-JOB).")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(help="Its password (default: a new random one).", show_default=False),
    ] = None,
    db: Annotated[int, typer.Option(help="The database number the job lives in.")] = 0,
    aclfile: Annotated[
        bool, typer.Option("--aclfile", help="Print a line for an ACL file / redis.conf.")
    ] = False,
) -> None:
    """Print the ACL rule that confines a node's Redis user to one job tree (docs/security.md).

    Type the printed ACL SETUSER line into redis-cli as an administrator; the node then runs
    `hierfl node --job JOB --redis redis://USER:PASSWORD@HOST:PORT/DB` (or rediss://).
    """
    name = user or f"node-{job}"
    secret = password or secrets.token_urlsafe(24)
    render = acl.node_aclfile_line if aclfile else acl.node_rule
    typer.echo(_or_exit(lambda: render(job, name, secret, db)))
