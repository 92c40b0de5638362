"""The node loop shared by clients and workers: read, act, wait (on notifications), repeat.

A node derives everything it does from the state in Redis: it acts when its cluster's hash says
there is work for it in the current generation, and waits on keyspace notifications otherwise.
So a restarted node picks up where the state says it is, and an old round can never be mistaken
for a new one (every step is fenced by the generation it was read in).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import redis

from hierfl import keys
from hierfl.errors import HierflError, IllegalTransition, StaleGeneration
from hierfl.learning import params as P
from hierfl.learning.data import decode_share
from hierfl.learning.models import build_model
from hierfl.node.machine import NodeMachine
from hierfl.protocol import NodeStatus, Outcome, ProcessStage, Role
from hierfl.sheet import JobSheet
from hierfl.store.blobs import BlobStore
from hierfl.store.scripts import Scripts
from hierfl.store.state import ClusterState, read_cluster
from hierfl.store.waiter import SAFETY_TIMEOUT, KeyWaiter


@dataclass(frozen=True)
class Slot:
    """Where a node sits in a job tree."""

    cluster: str
    role: Role
    node: str

    @property
    def root(self) -> str:
        return keys.root_of(self.cluster)

    def __str__(self) -> str:
        return f"{self.cluster}/{self.role.value}/{self.node}"


def finished(state: ClusterState) -> bool:
    return state.process_stage == ProcessStage.FINISHED


class NodeRuntime:
    """What every node does; `ClientNode` and `WorkerNode` fill in the role's own steps."""

    role: Role

    def __init__(
        self, client: redis.Redis, slot: Slot, safety_timeout: float = SAFETY_TIMEOUT
    ) -> None:
        self.client = client
        self.slot = slot
        self.scripts = Scripts(client)
        self.blobs = BlobStore(client, slot.root)
        self.safety_timeout = safety_timeout
        self.machine = NodeMachine(slot.role)
        self.log = logging.getLogger(f"hierfl.node.{slot}")
        self.sheet: JobSheet | None = None

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Take part in the job until it ends; 0 if it completed or was cancelled, 1 if it
        failed."""
        with KeyWaiter(self.client, [keys.job(self.slot.cluster)], self.safety_timeout) as waiter:
            if self._setup(waiter):
                while True:
                    state = waiter.until(self.read, self._ready)
                    if finished(state):
                        break
                    self._act(state)
            return self._exit(self.read())

    def read(self) -> ClusterState:
        state = read_cluster(self.client, self.slot.cluster)
        if state is None:
            raise HierflError(
                f"{self.slot}: cluster {self.slot.cluster} no longer exists (was the job deleted?)"
            )
        return state

    def _ready(self, state: ClusterState) -> bool:
        return finished(state) or self.has_work(state)

    def _setup(self, waiter: KeyWaiter) -> bool:
        """Job sheet, then dataset; False when the job ended before this node was ready."""
        state = waiter.until(self.read, lambda s: s.jobsheet_flag or finished(s))
        self.machine.sync(self.my_status(state))
        self.sheet = JobSheet.from_json(self.client.get(keys.sheet(self.slot.root)))
        try:
            if self.machine.status < NodeStatus.JOBSHEET_ACKED and not finished(state):
                self._call("ack_jobsheet", self.scripts.ack_jobsheet)
            state = waiter.until(self.read, lambda s: s.dataset_flag or finished(s))
            if finished(state):
                return False
            self.load_data()
            if self.my_status(state) < NodeStatus.DATASET_ACKED:
                candidate = self.initial_candidate()
                self._call("ack_dataset", self.scripts.ack_dataset, candidate)
        except IllegalTransition:
            if finished(self.read()):  # cancelled while we were setting up
                return False
            raise
        self.log.info("ready: job sheet and dataset acknowledged")
        return True

    def _act(self, state: ClusterState) -> None:
        try:
            self.work(state)
        except (StaleGeneration, IllegalTransition) as exc:
            # The cluster moved on while we worked: re-read and follow the new state.
            self.log.warning("step refused, following the new state: %s", exc)

    def _exit(self, state: ClusterState) -> int:
        self.before_exit(state)
        if self.my_status(state) != NodeStatus.EXITED:
            self._call("ack_exit", self.scripts.ack_exit)
        top = read_cluster(self.client, self.slot.root)
        outcome = top.outcome if top else ""
        self.log.info("job %s ended: %s", self.slot.root, outcome or "unknown")
        return 1 if outcome == Outcome.FAILED.value else 0

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, name: str, script, *args: object) -> int:
        status = script(self.slot.cluster, self.slot.role.value, self.slot.node, *args)
        self.machine.sync(status)
        self.log.debug("%s -> status %s", name, status)
        return status

    def my_status(self, state: ClusterState) -> int:
        status = state.status_of(self.slot.role.value, self.slot.node)
        if status is None:
            raise HierflError(f"{self.slot}: no such {self.slot.role.value} in {self.slot.cluster}")
        return status

    def new_model(self, seed_labels: tuple[object, ...]):
        from hierfl.learning.training import derive_seed

        sheet = self.sheet
        seed = derive_seed(sheet.seed, *seed_labels)
        return build_model(sheet.model, sheet.data.n_features, sheet.data.n_classes, seed)

    def global_params(self, state: ClusterState) -> dict[str, np.ndarray]:
        return P.from_bytes(self.blobs.get(state.global_digest))

    def load_share(self, digest: str) -> tuple[np.ndarray, np.ndarray]:
        return decode_share(self.blobs.get(digest))

    # -- what a role fills in --------------------------------------------------------------

    def load_data(self) -> None:
        """Download what this node needs once the dataset flag is up."""

    def initial_candidate(self) -> str:
        """The digest of initial parameters offered with the dataset ACK, or ""."""
        return ""

    def has_work(self, state: ClusterState) -> bool:
        raise NotImplementedError

    def work(self, state: ClusterState) -> None:
        raise NotImplementedError

    def before_exit(self, state: ClusterState) -> None:
        """Last duties once the job is finished (a root worker records the final metric)."""
