"""`hierfl diagram`: the protocol's state machines as mermaid or dot text."""

from __future__ import annotations

from typing import Annotated

import typer

from hierfl.diagram import DiagramFormat, Which, render


def diagram(
    fmt: Annotated[
        DiagramFormat, typer.Option("--format", help="mermaid (stateDiagram-v2) or dot.",
                                    case_sensitive=False)
    ] = DiagramFormat.MERMAID,
    machine: Annotated[
        Which, typer.Option(help="node: member statuses; cluster: process stages; all: both.",
                            case_sensitive=False)
    ] = Which.ALL,
) -> None:
    """Print the protocol's state machines, built from the table in hierfl/protocol.py."""
    typer.echo(render(fmt, machine), nl=False)
