"""The coordination protocol, written once.

Every stage and status number, every cluster-hash field name, every error code and every legal
node transition is defined here. The Lua scripts receive these as a generated include
(`hierfl.store.loader.constants_lua`), and the Python side builds its `transitions` machine from
the same table, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum


class NodeStatus(IntEnum):
    """Status of one member of a cluster (a client, a worker or a sub-cluster)."""

    DEPLOYED = 0
    JOBSHEET_ACKED = 1
    DATASET_ACKED = 2
    BUSY = 3
    DONE = 4
    EXITED = 5


class ProcessStage(IntEnum):
    """What a cluster is doing."""

    IDLE = 0
    TRAINING = 1
    AGGREGATING = 2
    FINISHED = 3


class Role(str, Enum):
    CLIENT = "client"
    WORKER = "worker"


class Outcome(str, Enum):
    """How a finished job ended (the root's `outcome` field)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorCode(str, Enum):
    """Error codes a script may answer with; the reply reads `CODE message`."""

    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    STALE_GENERATION = "STALE_GENERATION"
    UNKNOWN_JOB = "UNKNOWN_JOB"
    UNKNOWN_CLUSTER = "UNKNOWN_CLUSTER"
    UNKNOWN_NODE = "UNKNOWN_NODE"
    JOB_EXISTS = "JOB_EXISTS"
    MISSING_BLOB = "MISSING_BLOB"
    BAD_ARGUMENT = "BAD_ARGUMENT"
    NOT_YET = "NOT_YET"


class Field(str, Enum):
    """Fields of a cluster hash (`hierfl:{ROOT}:job:CLUSTER`), and the three of its stages hash
    (`STAGE_FIELDS`, in `hierfl:{ROOT}:stages:CLUSTER`)."""

    NAME = "name"
    ROOT = "root"
    PARENT = "parent"
    LEVEL = "level"
    CHILDREN = "children"  # comma-separated sub-cluster names
    N_CLIENTS = "n_clients"  # members of the clients hash, sub-clusters included
    N_WORKERS = "n_workers"
    JOBSHEET_FLAG = "jobsheet_flag"
    DATASET_FLAG = "dataset_flag"
    CLIENT_STAGE = "client_stage"
    WORKER_STAGE = "worker_stage"
    PROCESS_STAGE = "process_stage"
    GENERATION = "generation"
    ROUND = "round"
    ROUNDS = "rounds"
    EPOCH = "epoch"
    CLUSTER_EPOCHS = "cluster_epochs"
    GLOBAL = "global"
    SAMPLES = "samples"  # training samples under this cluster in its last local round
    CANDIDATE = "candidate"  # root only: the first worker's initial parameters
    OUTCOME = "outcome"  # root only
    REASON = "reason"  # root only: why the job failed
    KEEP_CHECKPOINTS = "keep_checkpoints"  # root only: 1 keeps every round's global blob
    EVALUATE_EVERY = "evaluate_every"  # root only: rounds between scored rounds (evaluated)
    ROUND_TIMEOUT = "round_timeout"  # ms a generation may wait for submissions; 0 = forever
    MIN_CLIENTS = "min_clients"  # submissions needed by that deadline; 0 = every member
    AGGREGATION_TIMEOUT = "aggregation_timeout"  # ms to wait for aggregates; 0 = forever
    QUORUM = "quorum"  # identical aggregates consensus needs; 0 = a majority of the workers
    DEADLINE = "deadline"  # server ms when the current phase may be closed; "" = none
    ATTEMPT = "attempt"  # aggregation attempts in this generation (one re-run on no majority)
    PARENT_GEN = "parent_gen"  # the parent's generation this sub-cluster's round belongs to
    DROPPED = "dropped"  # members the last deadline closed the phase without (comma-separated)
    FAILURE = "failure"  # why this cluster failed in its current generation; "" = it did not
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"


#: The fields of a cluster's stages hash, not its cluster hash: the lowest status of its clients
#: and of its workers, and when either last moved. They change whenever a member moves, and no
#: node acts on them, so they are kept out of the hash every member of the cluster waits on.
STAGE_FIELDS = (Field.CLIENT_STAGE, Field.WORKER_STAGE, Field.UPDATED_AT)

#: Flag fields are "0" or "1".
FLAG_DOWN, FLAG_UP = 0, 1

#: The capped length of a job's event stream.
EVENTS_MAXLEN = 10_000


@dataclass(frozen=True)
class Transition:
    """A status change a node asks for with one script call."""

    name: str  # also the script's file name: lua/<name>.lua
    roles: tuple[Role, ...]
    source: tuple[NodeStatus, ...]
    dest: NodeStatus
    process_stage: ProcessStage | None = None  # the cluster must be in this stage
    flag: Field | None = None  # ... and have this flag up
    fenced: bool = False  # the call carries the generation it belongs to


BOTH = (Role.CLIENT, Role.WORKER)
S = NodeStatus

#: Node transitions, in protocol order. Sub-cluster members move by the cascade (`CASCADE`).
TRANSITIONS: tuple[Transition, ...] = (
    Transition("ack_jobsheet", BOTH, (S.DEPLOYED,), S.JOBSHEET_ACKED, flag=Field.JOBSHEET_FLAG),
    Transition("ack_dataset", BOTH, (S.JOBSHEET_ACKED,), S.DATASET_ACKED, flag=Field.DATASET_FLAG),
    Transition(
        "start_training", (Role.CLIENT,), (S.DATASET_ACKED, S.DONE), S.BUSY,
        process_stage=ProcessStage.TRAINING, fenced=True,
    ),
    Transition(
        "submit_params", (Role.CLIENT,), (S.BUSY,), S.DONE,
        process_stage=ProcessStage.TRAINING, fenced=True,
    ),
    Transition(
        "start_aggregation", (Role.WORKER,), (S.DATASET_ACKED, S.DONE), S.BUSY,
        process_stage=ProcessStage.AGGREGATING, fenced=True,
    ),
    Transition(
        "upload_aggregate", (Role.WORKER,), (S.BUSY,), S.DONE,
        process_stage=ProcessStage.AGGREGATING, fenced=True,
    ),
    Transition(
        "ack_exit", BOTH,
        (S.DEPLOYED, S.JOBSHEET_ACKED, S.DATASET_ACKED, S.BUSY, S.DONE), S.EXITED,
        process_stage=ProcessStage.FINISHED,
    ),
)

TRANSITION_BY_NAME = {t.name: t for t in TRANSITIONS}


@dataclass(frozen=True)
class CascadeStep:
    """A sub-cluster's status change in its parent, made by the cascade inside a script."""

    source: tuple[NodeStatus, ...]
    dest: NodeStatus
    when: str


#: How a sub-cluster moves as a member of its parent (documentation and diagrams).
CASCADE: tuple[CascadeStep, ...] = (
    CascadeStep((S.DEPLOYED,), S.JOBSHEET_ACKED, "its client and worker stages reach 1"),
    CascadeStep((S.JOBSHEET_ACKED,), S.DATASET_ACKED, "its client and worker stages reach 2"),
    CascadeStep((S.DATASET_ACKED, S.DONE), S.BUSY, "its parent starts a generation"),
    CascadeStep((S.BUSY,), S.DONE, "its consensus after the last cluster epoch"),
    CascadeStep((S.DONE,), S.EXITED, "its client and worker stages reach 5"),
)


@dataclass(frozen=True)
class StageStep:
    """A change of a cluster's process stage, made by the cascade inside a script."""

    source: tuple[ProcessStage, ...]
    dest: ProcessStage
    when: str


P = ProcessStage

#: How a cluster's process stage moves (documentation and diagrams). Deploy starts it at IDLE.
PROCESS_STAGE_TRANSITIONS: tuple[StageStep, ...] = (
    StageStep((P.IDLE,), P.TRAINING, "the root starts a round or the parent starts a generation"),
    StageStep((P.TRAINING,), P.AGGREGATING, "every member has submitted"),
    StageStep((P.AGGREGATING,), P.TRAINING, "consensus with rounds or cluster epochs left"),
    StageStep((P.AGGREGATING,), P.IDLE, "a sub-cluster's last epoch is agreed and submitted"),
    StageStep((P.AGGREGATING,), P.FINISHED, "consensus after the last round, or no majority"),
    StageStep((P.IDLE,), P.FINISHED, "the job ends (completed, or failed elsewhere)"),
    StageStep((P.TRAINING,), P.FINISHED, "the job failed elsewhere in the tree"),
)


def stage_of(statuses: list[int]) -> int:
    """A cluster's client or worker stage: the lowest status of its members."""
    return min(statuses) if statuses else int(NodeStatus.EXITED)


def evaluated(round_: int, rounds: int, every: int) -> bool:
    """Whether a root worker scores the global model after `round_` (0: the initial model):
    every `every`-th round and always the last; with `every` = 0 only the last. The scripts
    apply the same rule (lib/retire.lua `evaluated`)."""
    return round_ == rounds or (every > 0 and round_ % every == 0)
