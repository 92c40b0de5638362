"""`hierfl diagram`: the state machines drawn from the protocol table, as mermaid and dot."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from hierfl.cli.app import app
from hierfl.diagram import SEPARATOR, DiagramFormat, Which, render, transition_label
from hierfl.node.machine import machine_transitions
from hierfl.protocol import (
    CASCADE,
    PROCESS_STAGE_TRANSITIONS,
    TRANSITIONS,
    NodeStatus,
    ProcessStage,
    Role,
)

MERMAID_EDGE = re.compile(r"^(?P<src>[A-Za-z_]\w*) --> (?P<dst>[A-Za-z_]\w*): (?P<label>\S.*)$")
MERMAID_START = re.compile(r"^\[\*\] --> [A-Za-z_]\w*$")
DOT_EDGE = re.compile(
    r'^"(?P<src>[^"]+)" -> "(?P<dst>[^"]+)" \[label="(?P<label>(?:[^"\\]|\\.)*)"\];$'
)
DOT_NODE = re.compile(r'^"(?P<id>[^"]+)" \[label="(?P<label>[^"]*)"(?:, style="[^"]*")?\];$')
DOT_ATTR = re.compile(r'^(?:rankdir=\w+|label="(?:[^"\\]|\\.)*"|node \[[^\]]*\]);$')


def name(value) -> str:
    return value.name.lower()


def expected_edges(which: Which) -> dict[tuple[str, str], list[str]]:
    """(source, dest) -> labels that must appear on that edge, straight from the table."""
    edges: dict[tuple[str, str], list[str]] = {}

    def add(machine: str, src, dst, label: str) -> None:
        prefix = f"{machine}{SEPARATOR}" if which == Which.ALL else ""
        edges.setdefault((prefix + name(src), prefix + name(dst)), []).append(label)

    if which in (Which.NODE, Which.ALL):
        for t in TRANSITIONS:
            for s in t.source:
                add("node", s, t.dest, transition_label(t))
        for c in CASCADE:
            for s in c.source:
                add("node", s, c.dest, f"sub-cluster: {c.when}")
    if which in (Which.CLUSTER, Which.ALL):
        for p in PROCESS_STAGE_TRANSITIONS:
            for s in p.source:
                add("cluster", s, p.dest, p.when)
    return edges


def expected_states(which: Which) -> set[str]:
    states = set()
    if which in (Which.NODE, Which.ALL):
        states |= {name(s) for s in NodeStatus}
    if which in (Which.CLUSTER, Which.ALL):
        states |= {name(s) for s in ProcessStage}
    return states


def parse_mermaid(text: str) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """Edges and declared states (id -> label); fails on any line it does not understand."""
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    edges, states, depth = {}, {}, 0
    for line in lines[1:]:
        if m := MERMAID_EDGE.match(line):
            assert (m["src"], m["dst"]) not in edges, f"edge listed twice: {line}"
            edges[(m["src"], m["dst"])] = m["label"]
        elif m := re.match(r'^state "([^"]+)" as (\w+)$', line):
            states[m[2]] = m[1]
        elif m := re.match(r"^state (\w+) \{$", line):
            depth += 1
        elif line == "}":
            depth -= 1
        else:
            assert line in ("", "direction LR") or MERMAID_START.match(line), line
    assert depth == 0
    return edges, states


def parse_dot(text: str) -> tuple[str, dict[tuple[str, str], str], dict[str, str]]:
    """A digraph's name, edges and nodes; fails on any statement it does not understand."""
    lines = [line.strip() for line in text.strip().splitlines()]
    head = re.match(r"^digraph (\w+) \{$", lines[0])
    assert head and lines[-1] == "}"
    edges, nodes, depth = {}, {}, 1
    for line in lines[1:-1]:
        if m := DOT_EDGE.match(line):
            edges[(m["src"], m["dst"])] = m["label"]
        elif m := DOT_NODE.match(line):
            nodes[m["id"]] = m["label"]
        elif re.match(r'^subgraph "cluster_\w+" \{$', line):
            depth += 1
        elif line == "}":
            depth -= 1
        else:
            assert DOT_ATTR.match(line), line
        assert depth >= 1
    assert depth == 1
    return head[1], edges, nodes


@pytest.mark.parametrize("which", list(Which))
def test_mermaid_has_every_state_and_transition_of_the_table(which):
    text = render(DiagramFormat.MERMAID, which)
    assert text.startswith("stateDiagram-v2\n")
    edges, states = parse_mermaid(text)
    assert set(states.values()) >= expected_states(which)
    assert {s for edge in edges for s in edge} <= set(states)
    wanted = expected_edges(which)
    assert set(edges) == set(wanted)
    for edge, labels in wanted.items():
        assert edges[edge].split(" | ") == labels


@pytest.mark.parametrize("which", list(Which))
def test_dot_is_a_digraph_with_the_same_edges(which):
    name_, edges, nodes = parse_dot(render(DiagramFormat.DOT, which))
    assert name_ == "hierfl"
    mermaid_edges, mermaid_states = parse_mermaid(render(DiagramFormat.MERMAID, which))
    assert set(edges) == set(mermaid_edges)
    assert nodes == {k: v for k, v in mermaid_states.items() if k in nodes}
    assert set(nodes.values()) == expected_states(which)
    for edge, labels in expected_edges(which).items():
        assert edges[edge].split("\\n") == labels


def test_the_node_diagram_covers_the_nodes_own_machine():
    edges, _ = parse_mermaid(render(DiagramFormat.MERMAID, Which.NODE))
    for role in Role:
        for t in machine_transitions(role):
            for src in t["source"]:
                assert t["trigger"] in edges[(src, t["dest"])]


def test_every_stage_is_reached_and_finished_is_final():
    dests = {p.dest for p in PROCESS_STAGE_TRANSITIONS}
    sources = {s for p in PROCESS_STAGE_TRANSITIONS for s in p.source}
    assert dests | sources == set(ProcessStage)
    assert ProcessStage.FINISHED not in sources
    assert ProcessStage.FINISHED in dests


def test_no_number_in_the_diagrams_but_the_tables():
    """Stage and status numbers live in the table only: the diagrams show names."""
    texts = [c.when for c in CASCADE] + [p.when for p in PROCESS_STAGE_TRANSITIONS]
    for fmt in DiagramFormat:
        text = render(fmt, Which.ALL).replace("stateDiagram-v2", "")
        for known in texts:
            text = text.replace(known, "")
        assert not re.search(r"\d", text), text


def test_cli_diagram():
    runner = CliRunner()
    result = runner.invoke(app, ["diagram", "--format", "dot", "--machine", "cluster"])
    assert result.exit_code == 0, result.output
    assert result.output == render(DiagramFormat.DOT, Which.CLUSTER)
    result = runner.invoke(app, ["diagram"])
    assert result.exit_code == 0 and result.output.startswith("stateDiagram-v2\n")
    assert runner.invoke(app, ["diagram", "--format", "png"]).exit_code == 2
