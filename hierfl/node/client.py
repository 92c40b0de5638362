"""A client: trains the cluster's global model on its own data and submits the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis

from hierfl import keys
from hierfl.errors import BadInput
from hierfl.learning import params as P
from hierfl.learning.data import load_dataset
from hierfl.learning.training import train_local
from hierfl.node.runtime import NodeRuntime, Slot
from hierfl.protocol import ProcessStage, Role
from hierfl.store.state import ClusterState


class ClientNode(NodeRuntime):
    role = Role.CLIENT

    def __init__(self, client: redis.Redis, slot: Slot, data: Path | None = None,
                 **kwargs: object) -> None:
        super().__init__(client, slot, **kwargs)
        self.data_path = data
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None

    def load_data(self) -> None:
        if self.data_path is not None:
            from dataclasses import replace

            self.x, self.y = load_dataset(replace(self.sheet.data, dataset=str(self.data_path)))
            self._check_local_shape()
            return
        digest = self.client.hget(keys.shares(self.slot.cluster), self.slot.node)
        if digest is None:
            raise BadInput(f"{self.slot}: the job has no dataset share for this client; "
                           "start it with --data PATH to train on local data")
        self.x, self.y = self.load_share(digest.decode())

    def _check_local_shape(self) -> None:
        features = self.sheet.data.n_features
        if features and self.x.shape[1] != features:
            raise BadInput(f"{self.slot}: local data at {self.data_path} has {self.x.shape[1]} "
                           f"features, the job's model expects {features}")

    def may_act_in(self, state: ClusterState) -> bool:
        return state.process_stage == ProcessStage.TRAINING

    def own_step_done(self, state: ClusterState) -> bool:
        return self.slot.node in state.submitted

    def has_work(self, state: ClusterState) -> bool:
        return self.may_act_in(state) and not self.step_done(state)

    def work(self, state: ClusterState) -> None:
        gen = state.generation
        self._call("start_training", self.scripts.start_training, gen)
        if self.sheet.training.local_epochs == 0:
            # No training (a benchmark of coordination alone): the global parameters, already
            # stored under their digest, are this client's submission.
            self._call("submit_params", self.scripts.submit_params, gen, state.global_digest,
                       len(self.y))
            return
        model = self.new_model(("client", self.slot.cluster, self.slot.node))
        P.into_model(model, self.global_params(state))
        seed = training_seed(self.sheet.seed, self.slot, gen)
        loss = train_local(model, self.x, self.y, self.sheet.training, seed)
        digest = self.publish(P.from_model(model), state)
        self._call("submit_params", self.scripts.submit_params, gen, digest, len(self.y))
        self.log.info("generation %d: trained on %d samples, loss %.4f, submitted %s",
                      gen, len(self.y), loss, digest[:12])


def training_seed(seed: int, slot: Slot, generation: int) -> int:
    """Depends on the slot's place in the tree, not on the job's name, so the same sheet run
    under another name reproduces the same models."""
    from hierfl.learning.training import derive_seed

    place = slot.cluster[len(slot.root):]  # "" for the root, "#0_1" below it
    return derive_seed(seed, place, slot.node, generation)
