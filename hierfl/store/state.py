"""Reading job state: one cluster in one round trip, or a whole tree level by level.

Readers never write. `ClusterState` is a frozen snapshot; `JobStatus.to_json` is the shape
`hierfl status --json` prints. Every key read together belongs to one job tree, so to one slot
of a Redis Cluster (the `{ROOT}` hash tag); only the registry, `hierfl:jobs`, is read alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

import redis

from hierfl import keys
from hierfl.errors import BadInput
from hierfl.protocol import FLAG_UP, Field, NodeStatus, Outcome, ProcessStage
from hierfl.store.shards import AnyRedis, is_cluster, owner


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def decode_map(raw: dict) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


@dataclass(frozen=True)
class ClusterState:
    """A cluster's hash with its members (all of them, or only the reader's own: see
    `read_cluster`) and who has uploaded in the current generation.

    A full read merges the cluster's stages hash (`STAGE_FIELDS`) into `fields`; a member's own
    view has no stages (no node acts on them), so its `client_stage` and `worker_stage` read 0.
    A member's view may also leave its own entries unread (`own_read` False: `read_member`),
    and then `submitted` and `uploaded` are None, so that using them fails loudly.
    """

    name: str
    fields: dict[str, str]
    clients: dict[str, int]
    workers: dict[str, int]
    submitted: frozenset[str] | None = frozenset()
    uploaded: frozenset[str] | None = frozenset()
    server_ms: int = 0  # the server's clock when this snapshot was read (deadlines use it)

    @property
    def own_read(self) -> bool:
        return self.submitted is not None

    def _int(self, f: Field) -> int:
        return int(self.fields.get(f.value) or 0)

    @property
    def parent(self) -> str:
        return self.fields.get(Field.PARENT.value, "")

    @property
    def children(self) -> list[str]:
        text = self.fields.get(Field.CHILDREN.value, "")
        return [c for c in text.split(",") if c]

    @property
    def jobsheet_flag(self) -> bool:
        return self._int(Field.JOBSHEET_FLAG) == FLAG_UP

    @property
    def dataset_flag(self) -> bool:
        return self._int(Field.DATASET_FLAG) == FLAG_UP

    @cached_property  # asked several times per wake-up by every node
    def process_stage(self) -> ProcessStage:
        return ProcessStage(self._int(Field.PROCESS_STAGE))

    @property
    def finished(self) -> bool:
        """The job is over (completed, failed or cancelled): nothing moves any more."""
        return self.process_stage == ProcessStage.FINISHED

    @property
    def client_stage(self) -> int:
        return self._int(Field.CLIENT_STAGE)

    @property
    def worker_stage(self) -> int:
        return self._int(Field.WORKER_STAGE)

    @cached_property
    def generation(self) -> int:
        return self._int(Field.GENERATION)

    @cached_property
    def round(self) -> int:
        return self._int(Field.ROUND)

    @property
    def rounds(self) -> int:
        return self._int(Field.ROUNDS)

    @cached_property
    def attempt(self) -> int:
        """Aggregation attempts in this generation (one re-run when no majority agreed)."""
        return self._int(Field.ATTEMPT)

    @property
    def epoch(self) -> int:
        return self._int(Field.EPOCH)

    @property
    def cluster_epochs(self) -> int:
        return self._int(Field.CLUSTER_EPOCHS)

    @property
    def global_digest(self) -> str:
        return self.fields.get(Field.GLOBAL.value, "")

    @property
    def outcome(self) -> str:
        return self.fields.get(Field.OUTCOME.value, "")

    @property
    def failure(self) -> str:
        """Why this cluster failed its current generation ("" when it did not)."""
        return self.fields.get(Field.FAILURE.value, "")

    @property
    def dropped(self) -> list[str]:
        """Members a deadline closed this generation without."""
        return [m for m in self.fields.get(Field.DROPPED.value, "").split(",") if m]

    @cached_property
    def deadline_ms(self) -> int | None:
        """When the current phase may be closed (server ms), or None when it waits forever."""
        text = self.fields.get(Field.DEADLINE.value, "")
        return int(text) if text else None

    def deadline_in(self) -> float | None:
        """Seconds until the deadline (negative once passed), or None without one."""
        if self.deadline_ms is None or self.process_stage not in (ProcessStage.TRAINING,
                                                                  ProcessStage.AGGREGATING):
            return None
        return (self.deadline_ms - self.server_ms) / 1000

    @property
    def exited(self) -> bool:
        return self.client_stage == NodeStatus.EXITED and self.worker_stage == NodeStatus.EXITED

    def status_of(self, role: str, node: str) -> int | None:
        return (self.clients if role == "client" else self.workers).get(node)

    def to_json(self) -> dict:
        return {
            "parent": self.parent or None,
            "process_stage": int(self.process_stage),
            "client_stage": self.client_stage,
            "worker_stage": self.worker_stage,
            "generation": self.generation,
            "round": self.round,
            "epoch": self.epoch,
            "cluster_epochs": self.cluster_epochs,
            "jobsheet_flag": self.jobsheet_flag,
            "dataset_flag": self.dataset_flag,
            "global": self.global_digest or None,
            "deadline_in": self.deadline_in(),
            "dropped": self.dropped,
            "failure": self.failure or None,
            "clients": dict(sorted(self.clients.items())),
            "workers": dict(sorted(self.workers.items())),
        }


#: A member's own view of its cluster: (role, node id). See `read_cluster`.
Member = tuple[str, str]


#: Replies `_queue_cluster` queues for a full read.
FULL_REPLIES = 6


def _queue_cluster(pipe: redis.client.Pipeline, cluster: str, member: Member | None = None
                   ) -> None:
    pipe.hgetall(keys.job(cluster))
    if member is None:
        pipe.hgetall(keys.stages(cluster))
        pipe.hgetall(keys.clients(cluster))
        pipe.hgetall(keys.workers(cluster))
        pipe.hkeys(keys.submissions(cluster))
        pipe.hkeys(keys.aggregates(cluster))
        return
    _queue_own(pipe, cluster, member)


def _queue_own(pipe: redis.client.Pipeline, cluster: str, member: Member) -> None:
    """A member's own status and whether it uploaded in this generation."""
    role, node = member
    pipe.hget(keys.members(cluster, role), node)
    pipe.hexists(keys.submissions(cluster), node)
    pipe.hexists(keys.aggregates(cluster), node)


def _cluster_from(cluster: str, replies: list, member: Member | None = None
                  ) -> ClusterState | None:
    if member is not None:
        return _member_view(cluster, replies, member)
    job, stages, clients, workers, submitted, uploaded = replies
    if not job:
        return None
    return ClusterState(
        name=cluster,
        fields=decode_map(job) | decode_map(stages),
        clients={k: int(v) for k, v in decode_map(clients).items()},
        workers={k: int(v) for k, v in decode_map(workers).items()},
        submitted=frozenset(_s(k) for k in submitted),
        uploaded=frozenset(_s(k) for k in uploaded),
    )


def _member_view(cluster: str, replies: list, member: Member) -> ClusterState | None:
    job, *own = replies
    if not job:
        return None
    return _with_own(ClusterState(cluster, decode_map(job), {}, {}, None, None), member, own)


def _with_own(state: ClusterState, member: Member, own: list) -> ClusterState:
    """`state` with a member's own entries as `_queue_own` read them."""
    status, submitted, uploaded = own
    role, node = member
    mine = {} if status is None else {node: int(status)}
    return replace(state, clients=mine if role == "client" else {},
                   workers=mine if role == "worker" else {},
                   submitted=frozenset([node] if submitted else []),
                   uploaded=frozenset([node] if uploaded else []))


def read_cluster(client: AnyRedis, cluster: str, member: Member | None = None
                 ) -> ClusterState | None:
    """One cluster's hash, members and this generation's uploads, with the server's clock,
    in one round trip (two on a Redis Cluster, see `_read_sharded`).

    With `member` (role, node id), only that member's status and uploads are read, as its
    node needs: every member of a cluster re-reads on each change, so a full read each would
    cost a cluster of n members n² entries per change.
    """
    if is_cluster(client):
        return _read_sharded(client, cluster, member)
    pipe = client.pipeline(transaction=True)
    _queue_cluster(pipe, cluster, member)
    pipe.time()
    *replies, (seconds, micros) = pipe.execute()
    state = _cluster_from(cluster, replies, member)
    if state is None:
        return None
    return replace(state, server_ms=seconds * 1000 + micros // 1000)


def read_member(client: AnyRedis, cluster: str, member: Member, fields: dict[str, str],
                server_ms: int, wants_own: Callable[[ClusterState], bool] | None = None
                ) -> ClusterState:
    """A member's view built on a cluster hash read earlier (`fields`, decoded, and the server's
    clock `server_ms` now): its own entries are read now, unless `wants_own` says the cluster
    hash alone shows that they cannot matter (then `own_read` is False)."""
    state = ClusterState(cluster, fields, {}, {}, None, None, server_ms)
    if wants_own is not None and not wants_own(state):
        return state
    pipe = client.pipeline(transaction=False)
    _queue_own(pipe, cluster, member)
    return _with_own(state, member, pipe.execute())


def _read_sharded(client: AnyRedis, cluster: str, member: Member | None
                  ) -> ClusterState | None:
    """`read_cluster` on a Redis Cluster, whose MULTI/EXEC may hold only commands on keys of one
    slot (no TIME). The clock is read first, from the shard that owns the tree (the one whose
    scripts enforce its deadlines): a deadline then never looks due before it is there."""
    seconds, micros = owner(client, keys.job(cluster)).time()
    pipe = client.pipeline(transaction=True)
    _queue_cluster(pipe, cluster, member)
    state = _cluster_from(cluster, pipe.execute(), member)
    if state is None:
        return None
    return replace(state, server_ms=seconds * 1000 + micros // 1000)


@dataclass
class JobStatus:
    root: str
    clusters: dict[str, ClusterState] = field(default_factory=dict)  # pre-order
    metrics: list[dict] = field(default_factory=list)

    @property
    def top(self) -> ClusterState:
        return self.clusters[self.root]

    @property
    def finished(self) -> bool:
        return self.top.exited

    def to_json(self) -> dict:
        top = self.top
        return {
            "job": self.root,
            "finished": self.finished,
            "outcome": top.outcome or Outcome.RUNNING.value,
            "reason": top.fields.get(Field.REASON.value) or None,
            "round": top.round,
            "rounds": top.rounds,
            "clusters": {name: c.to_json() for name, c in self.clusters.items()},
            "metrics": self.metrics,
        }


def read_job(client: redis.Redis, root: str) -> JobStatus | None:
    """The whole tree, read level by level (one pipeline per level), plus the metrics."""
    if "#" in root:
        raise BadInput(f"{root} is a cluster of job {keys.root_of(root)}: give the root job's "
                       f"name ({keys.root_of(root)})")
    status = JobStatus(root)
    level = [root]
    found: dict[str, ClusterState] = {}
    while level:
        pipe = client.pipeline(transaction=False)
        for cluster in level:
            _queue_cluster(pipe, cluster)
        replies = pipe.execute()
        next_level: list[str] = []
        for i, cluster in enumerate(level):
            state = _cluster_from(cluster, replies[i * FULL_REPLIES : (i + 1) * FULL_REPLIES])
            if state is not None:
                found[cluster] = state
                next_level.extend(state.children)
        level = next_level
    if root not in found:
        return None
    _preorder(found, root, status.clusters)
    status.metrics = read_metrics(client, root)
    return status


def _preorder(found: dict[str, ClusterState], name: str, out: dict[str, ClusterState]) -> None:
    out[name] = found[name]
    for child in found[name].children:
        if child in found:
            _preorder(found, child, out)


def read_metrics(client: redis.Redis, root: str) -> list[dict]:
    raw = decode_map(client.hgetall(keys.metrics(root)))
    return sorted((json.loads(v) for v in raw.values()), key=lambda m: m["round"])


def read_history(client: redis.Redis, root: str) -> dict[int, str]:
    return {int(k): v for k, v in decode_map(client.hgetall(keys.history(root))).items()}


def read_unscored(client: redis.Redis, root: str) -> dict[int, str]:
    """Agreed rounds the job evaluates that no worker has scored yet: round -> global digest."""
    return {int(k): v for k, v in decode_map(client.hgetall(keys.unscored(root))).items()}


def job_exists(client: redis.Redis, root: str) -> bool:
    return bool(client.exists(keys.job(root)))


def list_jobs(client: redis.Redis) -> list[str]:
    """Registered job names, oldest first."""
    raw = decode_map(client.hgetall(keys.JOBS))
    return [name for name, _ in sorted(raw.items(), key=lambda kv: (int(kv[1]), kv[0]))]
