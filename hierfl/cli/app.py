"""The `hierfl` command line: one module per command under `hierfl/cli/`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from hierfl.store.connection import CLUSTER_ENV

app = typer.Typer(
    name="hierfl",
    help="Hierarchical federated learning coordinated by Lua scripts inside Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    cluster_mode: Annotated[bool, typer.Option(
        "--cluster-mode",
        help="The Redis URL names a Redis Cluster node (default: ask the server; also "
             f"${CLUSTER_ENV}=1).",
    )] = False,
) -> None:
    """Hierarchical federated learning coordinated by Lua scripts inside Redis."""
    if cluster_mode:
        # Through the environment, so that the node processes a command starts say so too.
        os.environ[CLUSTER_ENV] = "1"


def _register() -> None:
    from hierfl.cli import init_job, lifecycle, node, run, server, status

    app.command("init-job")(init_job.init_job)
    app.command("node")(node.node)
    app.command("run")(run.run)
    app.command("status")(status.status)
    app.command("cancel")(lifecycle.cancel)
    app.command("delete")(lifecycle.delete)
    app.add_typer(server.app, name="server")

    from hierfl.cli import diagram, events, explain

    app.command("diagram")(diagram.diagram)
    app.command("explain")(explain.explain)
    app.command("events")(events.events)

    from hierfl.cli import report

    app.command("report")(report.report)

    from hierfl.cli import ls, watch

    app.command("watch")(watch.watch)
    app.command("ls")(ls.ls)

    from hierfl.cli import simulate

    app.command("simulate")(simulate.simulate)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
