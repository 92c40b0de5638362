"""State diagrams of the protocol, built from the tables in `hierfl.protocol`.

Two machines: a member's status (`TRANSITIONS` for clients and workers, `CASCADE` for a
sub-cluster in its parent) and a cluster's process stage (`PROCESS_STAGE_TRANSITIONS`). Mermaid
text comes from `transitions`' mermaid engine; dot text from a small renderer over the same
charts, so neither needs graphviz.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import SimpleNamespace

from transitions.extensions.diagrams import GraphMachine, HierarchicalGraphMachine
from transitions.extensions.nesting import NestedState

from hierfl.protocol import (
    CASCADE,
    PROCESS_STAGE_TRANSITIONS,
    TRANSITIONS,
    NodeStatus,
    ProcessStage,
    Transition,
)

#: Joins a machine's name and a state's name when several machines share one diagram.
SEPARATOR = "__"


class DiagramFormat(str, Enum):
    MERMAID = "mermaid"
    DOT = "dot"


class Which(str, Enum):
    NODE = "node"
    CLUSTER = "cluster"
    ALL = "all"


@dataclass(frozen=True)
class Edge:
    source: str
    dest: str
    label: str
    trigger: str


@dataclass(frozen=True)
class Chart:
    """One state machine: states in order, the initial one, and labelled edges."""

    name: str
    title: str
    states: tuple[str, ...]
    initial: str
    edges: tuple[Edge, ...]

    def merged(self) -> dict[tuple[str, str], list[str]]:
        """Edge labels grouped by (source, dest), in table order."""
        out: dict[tuple[str, str], list[str]] = {}
        for e in self.edges:
            out.setdefault((e.source, e.dest), []).append(e.label)
        return out


def name_of(value: Enum) -> str:
    """A status's or stage's state name: its enum name in lower case."""
    return value.name.lower()


def transition_label(t: Transition) -> str:
    """`ack_jobsheet (client/worker, jobsheet_flag up)`: the script and its preconditions."""
    parts = ["/".join(r.value for r in t.roles)]
    if t.flag is not None:
        parts.append(f"{t.flag.value} up")
    if t.process_stage is not None:
        parts.append(f"in {name_of(t.process_stage)}")
    if t.fenced:
        parts.append("this generation")
    return f"{t.name} ({', '.join(parts)})"


def node_chart() -> Chart:
    """Statuses of a cluster member: node scripts plus the sub-cluster cascade."""
    edges = [Edge(name_of(s), name_of(t.dest), transition_label(t), t.name)
             for t in TRANSITIONS for s in t.source]
    edges += [Edge(name_of(s), name_of(c.dest), f"sub-cluster: {c.when}", "cascade")
              for c in CASCADE for s in c.source]
    return Chart("node", "member status (client, worker, sub-cluster in its parent)",
                 tuple(name_of(s) for s in NodeStatus), name_of(min(NodeStatus)), tuple(edges))


def cluster_chart() -> Chart:
    """A cluster's process stage, moved by the cascade."""
    edges = [Edge(name_of(s), name_of(p.dest), p.when, f"to_{name_of(p.dest)}")
             for p in PROCESS_STAGE_TRANSITIONS for s in p.source]
    return Chart("cluster", "cluster process stage", tuple(name_of(s) for s in ProcessStage),
                 name_of(min(ProcessStage)), tuple(edges))


def charts(which: Which) -> list[Chart]:
    if which == Which.NODE:
        return [node_chart()]
    if which == Which.CLUSTER:
        return [cluster_chart()]
    return [node_chart(), cluster_chart()]


def state_id(chart: Chart, state: str, nested: bool) -> str:
    """A state's id in a diagram: prefixed by its machine when several share the diagram."""
    return f"{chart.name}{SEPARATOR}{state}" if nested else state


# -- mermaid (through transitions) ----------------------------------------------------------


class _State(NestedState):
    separator = SEPARATOR  # state names contain "_", transitions' default separator


class _NestedGraphMachine(HierarchicalGraphMachine):
    state_cls = _State


def _machine_transitions(chart: Chart, nested: bool) -> list[dict]:
    return [{"trigger": e.trigger, "source": state_id(chart, e.source, nested),
             "dest": state_id(chart, e.dest, nested), "label": e.label} for e in chart.edges]


def _graph_machine(selected: list[Chart]) -> tuple[SimpleNamespace, GraphMachine]:
    """A flat machine for one chart, a nested one (a composite state per chart) for more."""
    model = SimpleNamespace()
    options = {"model": model, "graph_engine": "mermaid", "auto_transitions": False}
    if len(selected) == 1:
        chart = selected[0]
        machine = GraphMachine(states=list(chart.states), initial=chart.initial,
                               transitions=_machine_transitions(chart, False), **options)
        return model, machine
    states = [{"name": c.name, "children": list(c.states), "initial": c.initial}
              for c in selected]
    moves = [t for c in selected for t in _machine_transitions(c, True)]
    machine = _NestedGraphMachine(states=states, initial=selected[0].name, transitions=moves,
                                  **options)
    return model, machine


def _clean(text: str) -> str:
    """Drop transitions' title block (so the text starts with the diagram type) and its
    highlight styles (a protocol diagram has no current state)."""
    lines = text.splitlines()
    if lines and lines[0] == "---":
        lines = lines[lines.index("---", 1) + 1:]
    kept = [line.rstrip() for line in lines
            if not line.strip().startswith(("classDef ", "Class "))]
    return "\n".join(kept).strip() + "\n"


def mermaid(selected: list[Chart]) -> str:
    """A `stateDiagram-v2` of the charts (one composite state per chart when several)."""
    model, _ = _graph_machine(selected)
    text = _clean(model.get_graph().draw(None))
    for c in selected if len(selected) > 1 else ():
        text = text.replace(f'state "{c.name}" as {c.name}\n', f'state "{c.title}" as {c.name}\n')
    return text


# -- dot ------------------------------------------------------------------------------------


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_chart(chart: Chart, nested: bool) -> list[str]:
    lines = [f"  subgraph {_q('cluster_' + chart.name)} {{", f"    label={_q(chart.title)};"]
    for state in chart.states:
        bold = ", style=\"rounded,bold\"" if state == chart.initial else ""
        lines.append(f"    {_q(state_id(chart, state, nested))} [label={_q(state)}{bold}];")
    for (src, dst), labels in chart.merged().items():
        label = "\\n".join(lab.replace("\\", "\\\\").replace('"', '\\"') for lab in labels)
        lines.append(f"    {_q(state_id(chart, src, nested))} -> "
                     f"{_q(state_id(chart, dst, nested))} [label=\"{label}\"];")
    lines.append("  }")
    return lines


def dot(selected: list[Chart]) -> str:
    """A graphviz digraph with one subgraph per chart."""
    nested = len(selected) > 1
    lines = ["digraph hierfl {", "  rankdir=LR;", '  node [shape=box, style=rounded];']
    for chart in selected:
        lines.extend(_dot_chart(chart, nested))
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(fmt: DiagramFormat = DiagramFormat.MERMAID, which: Which = Which.ALL) -> str:
    selected = charts(which)
    return mermaid(selected) if fmt == DiagramFormat.MERMAID else dot(selected)
