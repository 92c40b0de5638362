"""A pure-Python reference model of a job tree: the protocol as an executable specification.

It applies the same operations as the Lua scripts, with the same checks in the same order and
the same cascade, but with no Redis. The model check (`tests/test_model_check.py`) runs random
operations against both and requires identical state after every step; the two implementations
share only the table in `hierfl.protocol`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hierfl.jobtree import ClusterSpec, Tolerance
from hierfl.protocol import (
    FLAG_DOWN,
    FLAG_UP,
    TRANSITION_BY_NAME,
    ErrorCode,
    Field,
    NodeStatus,
    Outcome,
    ProcessStage,
    evaluated,
)

S = NodeStatus
_HEX = re.compile(r"^[0-9a-fA-F]+$")
#: How a round closed because only failed sub-clusters were missing ends a failure's reason.
EARLY = "before the deadline, the others having failed"


class Refusal(Exception):
    """The model refuses an operation, as the script would, with this code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value} {message}")
        self.code = code


@dataclass
class ClusterModel:
    name: str
    parent: str
    level: int
    children: list[str]
    cluster_epochs: int
    rounds: int
    clients: dict[str, int]
    workers: dict[str, int]
    tolerance: Tolerance = field(default_factory=Tolerance)
    jobsheet_flag: int = FLAG_UP
    dataset_flag: int = FLAG_DOWN
    client_stage: int = S.DEPLOYED
    worker_stage: int = S.DEPLOYED
    process_stage: int = ProcessStage.IDLE
    generation: int = 0
    round: int = 0
    epoch: int = 0
    global_digest: str = ""
    samples: int = 0
    deadline: bool = False  # the model cannot know the server's clock: set or not
    attempt: int = 0
    parent_gen: int = 0
    dropped: str = ""
    failure: str = ""
    submissions: dict[str, str] = field(default_factory=dict)
    sample_counts: dict[str, int] = field(default_factory=dict)
    aggregates: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)

    def members(self, role: str) -> dict[str, int]:
        return self.clients if role == "client" else self.workers


@dataclass
class JobModel:
    root: str
    clusters: dict[str, ClusterModel]
    blobs: set[str] = field(default_factory=set)
    candidate: str | None = None
    outcome: str = Outcome.RUNNING.value
    reason: str = ""
    history: dict[int, str] = field(default_factory=dict)
    events: int = 0
    keep_checkpoints: bool = False
    evaluate_every: int = 1
    scored: set[int] = field(default_factory=set)  # rounds with a metric (record_metric)
    retiring: set[str] = field(default_factory=set)

    # -- deploy ----------------------------------------------------------------------------

    @classmethod
    def deploy(cls, root: str, tree: list[ClusterSpec], rounds: int,
               keep_checkpoints: bool = False, evaluate_every: int = 1) -> JobModel:
        clusters = {
            spec.name: ClusterModel(
                name=spec.name, parent=spec.parent or "", level=spec.level,
                children=list(spec.children), cluster_epochs=spec.cluster_epochs, rounds=rounds,
                clients={**{c: S.DEPLOYED for c in spec.children},
                         **{c: S.DEPLOYED for c in spec.clients}},
                workers={w: S.DEPLOYED for w in spec.workers},
                tolerance=spec.tolerance,
            )
            for spec in tree
        }
        job = cls(root, clusters, keep_checkpoints=keep_checkpoints,
                  evaluate_every=evaluate_every)
        job.events = 1
        return job

    @property
    def top(self) -> ClusterModel:
        return self.clusters[self.root]

    # -- node operations (one per script) --------------------------------------------------

    def apply(self, op: str, cluster: str, role: str, node: str, *args: object) -> int:
        """Apply one node operation; returns the node's status or raises `Refusal`."""
        return getattr(self, op)(cluster, role, node, *args)

    def ack_jobsheet(self, cluster: str, role: str, node: str) -> int:
        c, status, repeated = self._begin("ack_jobsheet", cluster, role, node)
        if repeated:
            return status
        self._move(c, role, node, "ack_jobsheet")
        self._settle(c)
        return S.JOBSHEET_ACKED

    def ack_dataset(self, cluster: str, role: str, node: str, offered: str = "") -> int:
        c, status, repeated = self._begin("ack_dataset", cluster, role, node)
        if repeated:
            return status
        if offered:
            self._check_blob(offered)
        elif role == "worker" and cluster == self.root and self.candidate is None:
            raise Refusal(ErrorCode.BAD_ARGUMENT, "a root worker must offer a candidate")
        if offered and self.candidate is None:
            self.candidate = offered
        elif offered and offered != self.candidate:
            self.blobs.discard(offered)
        self._move(c, role, node, "ack_dataset")
        self._settle(c)
        return S.DATASET_ACKED

    def start_training(self, cluster: str, role: str, node: str, generation: int) -> int:
        c, status, repeated = self._begin("start_training", cluster, role, node, generation)
        if repeated:
            return status
        if node in c.submissions:
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, "already submitted")
        self._move(c, role, node, "start_training")
        self._recompute(c)
        return S.BUSY

    def submit_params(self, cluster: str, role: str, node: str, generation: int, digest: str,
                      samples: int) -> int:
        c, status, repeated = self._begin("submit_params", cluster, role, node, generation)
        if repeated:
            if c.submissions.get(node) == digest:
                return status
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, "not training in this generation")
        self._check_blob(digest)
        if samples < 1:
            raise Refusal(ErrorCode.BAD_ARGUMENT, "samples must be a positive integer")
        self._move(c, role, node, "submit_params")
        self._recompute(c)
        self._record_submission(c, node, digest, samples)
        return S.DONE

    def start_aggregation(self, cluster: str, role: str, node: str, generation: int) -> int:
        c, status, repeated = self._begin("start_aggregation", cluster, role, node, generation)
        if repeated:
            return status
        if node in c.aggregates:
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, "already uploaded")
        self._move(c, role, node, "start_aggregation")
        self._recompute(c)
        return S.BUSY

    def upload_aggregate(self, cluster: str, role: str, node: str, generation: int,
                         digest: str) -> int:
        c, status, repeated = self._begin("upload_aggregate", cluster, role, node, generation)
        if repeated:
            if c.aggregates.get(node) == digest:
                return status
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, "not aggregating in this generation")
        self._check_blob(digest)
        self._move(c, role, node, "upload_aggregate")
        c.aggregates[node] = digest
        self._recompute(c)
        if len(c.aggregates) == len(c.workers):
            self._conclude(c)
        return S.DONE

    def ack_exit(self, cluster: str, role: str, node: str) -> int:
        c, status, repeated = self._begin("ack_exit", cluster, role, node)
        if repeated:
            return status
        self._move(c, role, node, "ack_exit")
        self._settle(c)
        return S.EXITED

    def record_metric(self, node: str, round_: int, digest: str) -> int:
        """A root worker's score for a round (figures aside): 1 when first, 0 after."""
        if node not in self.top.workers:
            raise Refusal(ErrorCode.UNKNOWN_NODE, "only a worker of the root records metrics")
        if self.history.get(round_) != digest:
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"not the global model of round {round_}")
        if not self._evaluated(round_):
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"round {round_} is not evaluated")
        if round_ in self.scored:
            return 0
        self.scored.add(round_)
        self._emit()
        self.retiring.add(digest)
        self._sweep()
        return 1

    def can_move(self, name: str, cluster: str, role: str, node: str) -> bool:
        """Whether a well-behaved call of `name` now would move the node (not a repeat)."""
        c = self.clusters.get(cluster)
        try:
            _, _, repeated = self._begin(name, cluster, role, node, c.generation if c else 0)
        except Refusal:
            return False
        own = c.submissions if name == "start_training" else c.aggregates
        return not repeated and not (name.startswith("start_") and node in own)

    def report_exclusion(self, cluster: str, role: str, node: str, generation: int,
                         member: str, reason: str) -> int:
        c = self.clusters.get(cluster)
        if c is None:
            raise Refusal(ErrorCode.UNKNOWN_CLUSTER, f"no such cluster {cluster}")
        if role not in ("client", "worker"):
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"unknown role {role}")
        if c.members(role).get(node) is None or "#" in node:
            raise Refusal(ErrorCode.UNKNOWN_NODE, f"no such {role} {node}")
        if role != "worker":
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, "only a worker excludes submissions")
        if generation != c.generation:
            raise Refusal(ErrorCode.STALE_GENERATION, "stale generation")
        if c.process_stage != ProcessStage.AGGREGATING:
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, "not aggregating")
        if member not in c.submissions:
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"{member} has no submission")
        if member in c.excluded:
            return 0
        c.excluded[member] = reason
        self._emit()
        return 1

    def close_round(self, cluster: str, generation: int) -> int:
        """At a passed deadline (the model check only calls it once one has passed)."""
        c = self.clusters.get(cluster)
        if c is None:
            raise Refusal(ErrorCode.UNKNOWN_CLUSTER, f"no such cluster {cluster}")
        if generation != c.generation:
            raise Refusal(ErrorCode.STALE_GENERATION, f"generation {generation} != "
                          f"{c.generation}")
        if c.process_stage not in (ProcessStage.TRAINING, ProcessStage.AGGREGATING):
            return 0
        if not c.deadline:
            return 0
        self._close_phase(c)
        return 1

    # -- checks (before any change, in the scripts' order) ----------------------------------

    def _begin(self, name: str, cluster: str, role: str, node: str,
               generation: int | None = None) -> tuple[ClusterModel, int, bool]:
        c = self.clusters.get(cluster)
        if c is None:
            raise Refusal(ErrorCode.UNKNOWN_CLUSTER, f"no such cluster {cluster}")
        if role not in ("client", "worker"):
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"unknown role {role}")
        status = c.members(role).get(node)
        if status is None or "#" in node:
            raise Refusal(ErrorCode.UNKNOWN_NODE, f"no such {role} {node}")
        t = TRANSITION_BY_NAME[name]
        if role not in t.roles:
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, f"not allowed for a {role}")
        if t.fenced and generation != c.generation:
            raise Refusal(ErrorCode.STALE_GENERATION, f"generation {generation} != {c.generation}")
        if t.flag is not None and getattr(c, t.flag.value) != FLAG_UP:
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, f"{t.flag.value} is not set yet")
        if t.process_stage is not None and c.process_stage != t.process_stage:
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, "wrong process stage")
        if status == t.dest:
            return c, status, True
        if status not in t.source:
            raise Refusal(ErrorCode.ILLEGAL_TRANSITION, f"not allowed from status {status}")
        return c, status, False

    def _check_blob(self, digest: str) -> None:
        if not _HEX.match(digest or ""):
            raise Refusal(ErrorCode.BAD_ARGUMENT, "not a hex digest")
        if digest not in self.blobs:
            raise Refusal(ErrorCode.MISSING_BLOB, f"{digest} is not stored")

    # -- the cascade -----------------------------------------------------------------------

    def _emit(self) -> None:
        self.events += 1

    def _move(self, c: ClusterModel, role: str, node: str, name: str) -> None:
        c.members(role)[node] = TRANSITION_BY_NAME[name].dest
        self._emit()

    def _recompute(self, c: ClusterModel) -> tuple[int, int]:
        c.client_stage = min(c.clients.values(), default=S.EXITED)
        c.worker_stage = min(c.workers.values(), default=S.EXITED)
        return c.client_stage, c.worker_stage

    def _set_in_parent(self, c: ClusterModel, status: int) -> None:
        self.clusters[c.parent].clients[c.name] = status
        self._emit()

    def _below(self, c: ClusterModel) -> list[ClusterModel]:
        out = [c]
        for child in c.children:
            out.extend(self._below(self.clusters[child]))
        return out

    def _settle(self, c: ClusterModel) -> None:
        cs, ws = self._recompute(c)
        both = cs if cs == ws else None
        if c.parent:
            if both in (S.JOBSHEET_ACKED, S.DATASET_ACKED, S.EXITED):
                parent = self.clusters[c.parent]
                if parent.clients[c.name] < both:
                    self._set_in_parent(c, both)
                    self._settle(parent)
            return
        if both == S.JOBSHEET_ACKED and c.dataset_flag == FLAG_DOWN:
            for each in self._below(c):
                each.dataset_flag = FLAG_UP
            self._emit()
        elif both == S.DATASET_ACKED and c.round == 0:
            c.round = 1
            self.history[0] = self.candidate
            self._begin_generation(c, self.candidate)
        elif both == S.EXITED:
            self._emit()

    def _begin_generation(self, c: ClusterModel, digest: str) -> None:
        self.retiring.update([c.global_digest, *c.submissions.values(), *c.aggregates.values()])
        c.global_digest = digest
        c.process_stage = ProcessStage.TRAINING
        c.round = self.top.round
        c.deadline = c.tolerance.round_timeout_ms > 0
        c.attempt, c.dropped, c.failure = 0, "", ""
        c.generation += 1
        c.submissions, c.sample_counts, c.aggregates, c.excluded = {}, {}, {}, {}
        for name in c.children:
            child = self.clusters[name]
            child.epoch = 0
            child.parent_gen = c.generation
            self._set_in_parent(child, S.BUSY)
            self._begin_generation(child, digest)
        self._recompute(c)
        self._emit()

    def _finish(self, outcome: Outcome, reason: str, digest: str | None) -> None:
        self.outcome, self.reason = outcome.value, reason
        for c in self._below(self.top):
            c.process_stage = ProcessStage.FINISHED
            c.deadline = False
            if digest is not None:
                self.retiring.add(c.global_digest)
                c.global_digest = digest
        self._emit()

    def _record_submission(self, c: ClusterModel, member: str, digest: str,
                           samples: int) -> None:
        c.submissions[member] = digest
        c.sample_counts[member] = samples
        if len(c.submissions) == len(c.clients):
            self._start_aggregating(c)
        elif self._only_failed_missing(c):
            self._close_phase(c, EARLY)

    def _start_aggregating(self, c: ClusterModel) -> None:
        c.process_stage = ProcessStage.AGGREGATING
        c.deadline = c.tolerance.aggregation_timeout_ms > 0
        self._emit()

    def _fail_cluster(self, c: ClusterModel, reason: str) -> None:
        if not c.parent:
            self._finish(Outcome.FAILED, reason, None)
            return
        c.process_stage, c.deadline, c.failure = ProcessStage.IDLE, False, reason
        self._emit()
        parent = self.clusters[c.parent]
        if parent.tolerance.round_timeout_ms <= 0:
            self._finish(Outcome.FAILED, f"cluster {c.name} failed ({reason}) and cluster "
                         f"{parent.name} has no round_timeout to go on without it", None)
        elif self._only_failed_missing(parent):
            self._close_phase(parent, EARLY)

    def _only_failed_missing(self, c: ClusterModel) -> bool:
        """Every member yet to submit is a sub-cluster that failed in this generation."""
        if c.process_stage != ProcessStage.TRAINING:
            return False
        failed = [name for name in c.children if self.clusters[name].failure
                  and self.clusters[name].parent_gen == c.generation]
        return bool(failed) and len(c.submissions) + len(failed) == len(c.clients)

    def _conclude(self, c: ClusterModel, at_deadline: bool = False) -> None:
        self._decide(c, at_deadline)
        self._sweep()

    def _decide(self, c: ClusterModel, at_deadline: bool) -> None:
        needed = c.tolerance.quorum or len(c.workers) // 2 + 1
        winner = majority(list(c.aggregates.values()), needed)
        if winner is None:
            if at_deadline or c.attempt > 0:
                self._fail_cluster(c, f"no {needed} matching aggregates among the "
                                   f"{len(c.aggregates)} uploaded in cluster {c.name}")
            else:
                c.attempt += 1
                self.retiring.update(c.aggregates.values())
                c.aggregates = {}
                c.deadline = c.tolerance.aggregation_timeout_ms > 0
                self._emit()
            return
        self._emit()
        self._apply_winner(c, winner)

    def _apply_winner(self, c: ClusterModel, winner: str) -> None:
        c.epoch += 1
        c.samples = sum(c.sample_counts.values())
        if not c.parent:
            self.history[c.round] = winner
            if c.round >= c.rounds:
                self._finish(Outcome.COMPLETED, "", winner)
            else:
                c.round += 1
                self._begin_generation(c, winner)
        elif c.epoch < c.cluster_epochs:
            self._begin_generation(c, winner)
        else:
            self.retiring.add(c.global_digest)
            c.global_digest, c.process_stage, c.deadline = winner, ProcessStage.IDLE, False
            parent = self.clusters[c.parent]
            if (parent.process_stage != ProcessStage.TRAINING
                    or parent.generation != c.parent_gen):
                self._emit()  # late: the parent went on without this cluster
                return
            self._set_in_parent(c, S.DONE)
            self._recompute(parent)
            self._record_submission(parent, c.name, winner, c.samples)

    def _live_blobs(self) -> set[str]:
        """What lib/retire.lua's live_blobs finds: blobs a live round may still need."""
        live = {self.candidate} if self.candidate else set()
        for c in self.clusters.values():
            live.update([c.global_digest, *c.submissions.values(), *c.aggregates.values()])
        live.update((self.history if self.keep_checkpoints else self.unscored).values())
        return live

    @property
    def unscored(self) -> dict[int, str]:
        """Agreed rounds the job evaluates that have no metric yet (the scripts keep them
        in their own hash as rounds are agreed and scored; here they are derived)."""
        return {r: d for r, d in self.history.items()
                if self._evaluated(r) and r not in self.scored}

    def _evaluated(self, round_: int) -> bool:
        return evaluated(round_, self.top.rounds, self.evaluate_every)

    def _sweep(self) -> None:
        if self.retiring:
            self.blobs -= self.retiring - self._live_blobs()
            self.retiring = set()

    def _close_phase(self, c: ClusterModel, when: str = "by the deadline") -> None:
        if c.process_stage == ProcessStage.AGGREGATING:
            self._conclude(c, at_deadline=True)
            return
        members = sorted(c.clients)
        needed = c.tolerance.min_clients
        if needed <= 0 or needed > len(members):
            needed = len(members)
        if len(c.submissions) < needed or not c.submissions:
            self._fail_cluster(c, f"only {len(c.submissions)} of {len(members)} members "
                               f"submitted {when} (min_clients {needed})")
            return
        c.dropped = ",".join(m for m in members if m not in c.submissions)
        self._emit()
        self._start_aggregating(c)

    # -- the state as Redis would show it ---------------------------------------------------

    def cluster_fields(self, c: ClusterModel) -> dict[str, str]:
        """The cluster hash's fields (timestamps aside), as strings."""
        fields = {
            Field.NAME: c.name, Field.ROOT: self.root, Field.PARENT: c.parent,
            Field.LEVEL: c.level, Field.CHILDREN: ",".join(c.children),
            Field.N_CLIENTS: len(c.clients), Field.N_WORKERS: len(c.workers),
            Field.JOBSHEET_FLAG: c.jobsheet_flag, Field.DATASET_FLAG: c.dataset_flag,
            Field.PROCESS_STAGE: c.process_stage, Field.GENERATION: c.generation,
            Field.ROUND: c.round, Field.ROUNDS: c.rounds, Field.EPOCH: c.epoch,
            Field.CLUSTER_EPOCHS: c.cluster_epochs, Field.GLOBAL: c.global_digest,
            Field.SAMPLES: c.samples,
            Field.ROUND_TIMEOUT: c.tolerance.round_timeout_ms,
            Field.MIN_CLIENTS: c.tolerance.min_clients,
            Field.AGGREGATION_TIMEOUT: c.tolerance.aggregation_timeout_ms,
            Field.QUORUM: c.tolerance.quorum, Field.DEADLINE: "set" if c.deadline else "",
            Field.ATTEMPT: c.attempt, Field.PARENT_GEN: c.parent_gen, Field.DROPPED: c.dropped,
            Field.FAILURE: c.failure,
        }
        if not c.parent:
            fields[Field.OUTCOME] = self.outcome
            fields[Field.REASON] = self.reason
            fields[Field.KEEP_CHECKPOINTS] = int(self.keep_checkpoints)
            fields[Field.EVALUATE_EVERY] = self.evaluate_every
            if self.candidate is not None:
                fields[Field.CANDIDATE] = self.candidate
        return {f.value: str(int(v) if isinstance(v, int) else v) for f, v in fields.items()}

    def stage_fields(self, c: ClusterModel) -> dict[str, str]:
        """The cluster's stages hash (its timestamp aside), as strings."""
        return {Field.CLIENT_STAGE.value: str(int(c.client_stage)),
                Field.WORKER_STAGE.value: str(int(c.worker_stage))}


def majority(digests: list[str], needed: int) -> str | None:
    """The digest with the most votes if it has at least `needed`; a tie goes to the smaller
    digest."""
    counts = {d: digests.count(d) for d in digests}
    ranked = sorted(counts, key=lambda d: (-counts[d], d))
    return ranked[0] if ranked and counts[ranked[0]] >= needed else None
