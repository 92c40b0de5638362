"""Why a job is not moving: what each cluster waits for, and which members hold it up.

`explain` is a pure function over a `JobStatus` snapshot (`hierfl.store.state.read_job`). It
follows every wait down the tree (a sub-cluster that holds up its parent is itself held up by
its members) and sideways (a cluster that did its part waits for its parent or for the rest of
the tree), so each answer ends at the clients and workers that block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hierfl.protocol import Field, NodeStatus, Outcome, ProcessStage
from hierfl.store.state import ClusterState, JobStatus

SUB_CLUSTER = "sub-cluster"
#: Phases: the two setup stages (before the first generation), then the process stages.
JOBSHEET, DATASET = "jobsheet", "dataset"
JOB = "job"


def status_name(status: int) -> str:
    return NodeStatus(status).name.lower()


@dataclass(frozen=True)
class Blocker:
    """A member holding up its cluster."""

    cluster: str
    role: str  # "client" | "worker" | "sub-cluster"
    node: str
    status: int
    note: str

    def short(self) -> str:
        return f"{self.role} {self.node} ({status_name(self.status)} — {self.note})"

    def long(self) -> str:
        return (f"{self.role} {self.node} of {self.cluster} "
                f"(status {status_name(self.status)} — {self.note})")

    def to_json(self) -> dict:
        return {"cluster": self.cluster, "role": self.role, "node": self.node,
                "status": status_name(self.status), "note": self.note}


@dataclass(frozen=True)
class Finding:
    """What one cluster (or, with phase "job", the whole job) waits for."""

    cluster: str
    phase: str
    text: str
    blockers: tuple[Blocker, ...] = ()  # its own members that hold it up
    leaves: tuple[Blocker, ...] = ()  # the clients and workers at the end of the chain
    defers_to: str | None = None  # the cluster it waits for when no member of its own blocks

    def to_json(self) -> dict:
        return {"cluster": self.cluster, "phase": self.phase, "text": self.text,
                "blockers": [b.to_json() for b in self.blockers],
                "leaves": [b.to_json() for b in self.leaves], "defers_to": self.defers_to}


@dataclass
class _Walk:
    """Per-cluster findings (without leaves), and the leaves resolved from them."""

    job: JobStatus
    findings: dict[str, Finding] = field(default_factory=dict)

    def leaves(self, cluster: str, seen: frozenset[str] = frozenset()) -> tuple[Blocker, ...]:
        finding = self.findings.get(cluster)
        if finding is None or cluster in seen:
            return ()
        seen = seen | {cluster}
        if not finding.blockers and finding.defers_to:
            return self.leaves(finding.defers_to, seen)
        found: list[Blocker] = []
        for b in finding.blockers:
            found.extend(self.leaves(b.node, seen) if b.role == SUB_CLUSTER else [b])
        return tuple(dict.fromkeys(found))


def phase_of(c: ClusterState) -> str:
    if c.process_stage == ProcessStage.IDLE and c.generation == 0:
        return DATASET if c.dataset_flag else JOBSHEET
    return c.process_stage.name.lower()


def _note(phase: str, role: str, status: int) -> str:
    """Why a member at `status` holds up a cluster in `phase`."""
    if role == SUB_CLUSTER:
        return "waiting on its own members"
    if phase == ProcessStage.FINISHED.name.lower():
        return "never started" if status == NodeStatus.DEPLOYED else "has not exited yet"
    work = "training" if role == "client" else "aggregating"
    return {
        NodeStatus.DEPLOYED: "never started?",
        NodeStatus.JOBSHEET_ACKED: "has not acked its dataset (still loading it?)",
        NodeStatus.DATASET_ACKED: f"has not started {work} yet",
        NodeStatus.BUSY: f"still {work}",
        NodeStatus.DONE: "finished the previous generation, not started this one",
    }.get(NodeStatus(status), "unexpected status")


def _members(c: ClusterState, roles: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """(role, id, status) of the cluster's members, sub-clusters marked as such."""
    out = []
    if "client" in roles:
        out += [(SUB_CLUSTER if n in c.children else "client", n, s)
                for n, s in sorted(c.clients.items())]
    if "worker" in roles:
        out += [("worker", n, s) for n, s in sorted(c.workers.items())]
    return out


def _blockers(c: ClusterState, phase: str, members: list[tuple[str, str, int]],
              pending: Callable[[str, int], bool]) -> tuple[Blocker, ...]:
    """The members for which `pending(id, status)` holds, with why they hold `c` up."""
    return tuple(Blocker(c.name, role, n, s, _note(phase, role, s))
                 for role, n, s in members if pending(n, s))


def _setup(c: ClusterState, phase: str, root: str) -> Finding:
    need = NodeStatus.JOBSHEET_ACKED if phase == JOBSHEET else NodeStatus.DATASET_ACKED
    what = "job-sheet" if phase == JOBSHEET else "dataset"
    blockers = _blockers(c, phase, _members(c, ("client", "worker")), lambda n, s: s < need)
    if blockers:
        return Finding(c.name, phase, f"waiting for {what} ACKs from "
                       + ", ".join(b.short() for b in blockers), blockers)
    nxt = "the dataset flag rises" if phase == JOBSHEET else "the first round starts"
    return Finding(c.name, phase, f"every member sent its {what} ACK; waiting for the rest of "
                   f"the tree ({nxt} when all have)", defers_to=root)


def _deadline(c: ClusterState) -> str:
    """When a deadline will let the cluster go on without the members it waits for."""
    due = c.deadline_in()
    if due is None:
        return "; no deadline: it waits for them however long they take"
    if due > 0:
        return f"; its deadline passes in {due:.1f} s"
    return f"; its deadline passed {-due:.1f} s ago (the next member to wake closes it)"


def _training(c: ClusterState, phase: str) -> Finding:
    blockers = _blockers(c, phase, _members(c, ("client",)), lambda n, s: n not in c.submitted)
    where = f"generation {c.generation}, round {c.round}"
    return Finding(c.name, phase, f"{where}: waiting for submissions from "
                   + ", ".join(b.short() for b in blockers) + _deadline(c), blockers)


def _aggregating(c: ClusterState, phase: str) -> Finding:
    blockers = _blockers(c, phase, _members(c, ("worker",)), lambda n, s: n not in c.uploaded)
    where = f"generation {c.generation}, round {c.round}"
    return Finding(c.name, phase, f"{where}: waiting for aggregates from "
                   + ", ".join(b.short() for b in blockers) + _deadline(c), blockers)


def _idle(c: ClusterState, phase: str) -> Finding:
    if c.failure:
        return Finding(c.name, phase, f"failed generation {c.generation}: {c.failure}; "
                       f"{c.parent} goes on without it at its deadline (at once if nothing "
                       "else can come)", defers_to=c.parent)
    return Finding(c.name, phase, f"submitted its result to {c.parent}; waiting for "
                   f"{c.parent} to start the next generation", defers_to=c.parent)


def _finished(c: ClusterState, phase: str) -> Finding:
    blockers = _blockers(c, phase, _members(c, ("client", "worker")),
                         lambda n, s: s != NodeStatus.EXITED)
    text = ("finished: waiting for exits from " + ", ".join(b.short() for b in blockers)
            if blockers else "finished: every member exited")
    return Finding(c.name, phase, text, blockers)


def cluster_finding(c: ClusterState, root: str) -> Finding:
    """What one cluster waits for (its leaves are resolved by `explain`)."""
    phase = phase_of(c)
    if phase in (JOBSHEET, DATASET):
        return _setup(c, phase, root)
    handler = {ProcessStage.TRAINING: _training, ProcessStage.AGGREGATING: _aggregating,
               ProcessStage.IDLE: _idle, ProcessStage.FINISHED: _finished}[c.process_stage]
    return handler(c, phase)


def _job_text(job: JobStatus) -> str:
    top = job.top
    outcome = top.outcome or Outcome.RUNNING.value
    if outcome == Outcome.RUNNING.value:
        return f"running, round {top.round} of {top.rounds}, {phase_of(top)} stage"
    reason = top.fields.get(Field.REASON.value) or ""
    how = f"failed: {reason}" if outcome == Outcome.FAILED.value else (
        f"completed after {top.round} of {top.rounds} rounds")
    if job.finished:
        return f"{how}; every node has exited"
    return f"{how}; waiting for exits"


def explain(job: JobStatus) -> list[Finding]:
    """The job's finding first, then one per cluster still waiting for something, pre-order."""
    walk = _Walk(job)
    for name, c in job.clusters.items():
        walk.findings[name] = cluster_finding(c, job.root)
    resolved = [Finding(f.cluster, f.phase, f.text, f.blockers, walk.leaves(name), f.defers_to)
                for name, f in walk.findings.items()]
    leaves = walk.leaves(job.root)
    head = Finding(job.root, JOB, _job_text(job), leaves=leaves)
    waiting = [f for f in resolved if f.blockers or f.defers_to]
    return [head, *waiting]


def render_text(findings: list[Finding]) -> str:
    """The job's finding and the members holding it up, then one line per cluster."""
    head, rest = findings[0], findings[1:]
    lines = [f"job {head.cluster}: {head.text}"]
    if len(head.leaves) == 1:
        lines.append(f"held up by: {head.leaves[0].long()}")
    elif head.leaves:
        lines += ["held up by:", *(f"  - {b.long()}" for b in head.leaves)]
    width = max((len(f.cluster) for f in rest), default=0)
    lines += [f"  {f.cluster:<{width}}  [{f.phase}] {f.text}" for f in rest]
    return "\n".join(lines)
