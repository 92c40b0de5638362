"""A protocol driver for tests: deploys a tree without learning and moves its nodes by hand.

Blobs are small fake payloads: the scripts only check that a digest is stored, so protocol
tests run in milliseconds against the real redis-server.
"""

from __future__ import annotations

import redis

from hierfl import keys
from hierfl.jobtree import ClusterSpec, Tolerance, build_tree
from hierfl.protocol import ProcessStage
from hierfl.store.blobs import BlobStore
from hierfl.store.scripts import Scripts
from hierfl.store.state import ClusterState, JobStatus, read_cluster, read_job


class RecordingBlobs(BlobStore):
    """A blob store that remembers what it stored, so a driven worker can publish an aggregate
    again after the scripts retired it (as a real worker does on an aggregation re-run)."""

    def __init__(self, client: redis.Redis, root: str) -> None:
        super().__init__(client, root)
        self.payloads: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        digest = super().put(data)
        self.payloads[digest] = data
        return digest

    def republish(self, digest: str) -> None:
        if digest in self.payloads:
            super().put(self.payloads[digest])


class Driver:
    def __init__(self, client: redis.Redis, root: str = "demo", *, sub: list[int] | None = None,
                 clients: list[int] | None = None, workers: list[int] | None = None,
                 cluster_epochs: list[int] | None = None, rounds: int = 2,
                 tolerance: list[Tolerance] | None = None) -> None:
        sub = [2] if sub is None else sub
        depth = len(sub)
        self.client = client
        self.root = root
        self.rounds = rounds
        self.tree: list[ClusterSpec] = build_tree(
            root, sub=sub,
            clients=clients or [0] * depth + [2],
            workers=workers or [2] * (depth + 1),
            cluster_epochs=cluster_epochs or [1] * (depth + 1),
            tolerance=tolerance,
        )
        self.scripts = Scripts(client)
        self.blobs = RecordingBlobs(client, root)
        self.specs = {s.name: s for s in self.tree}

    def deploy(self) -> int:
        test = self.blobs.put(b"test split")
        return self.scripts.deploy(self.root, self.tree, "{}", self.rounds, {}, test)

    def nodes(self, role: str | None = None):
        for spec in self.tree:
            if role in (None, "client"):
                for c in spec.clients:
                    yield spec.name, "client", c
            if role in (None, "worker"):
                for w in spec.workers:
                    yield spec.name, "worker", w

    def cluster(self, name: str) -> ClusterState:
        state = read_cluster(self.client, name)
        assert state is not None
        return state

    def job(self) -> JobStatus:
        status = read_job(self.client, self.root)
        assert status is not None
        return status

    def ack_all_jobsheets(self) -> None:
        for cluster, role, node in self.nodes():
            self.scripts.ack_jobsheet(cluster, role, node)

    def ack_all_datasets(self) -> str:
        candidate = self.blobs.put(b"initial parameters")
        for cluster, role, node in self.nodes():
            self.scripts.ack_dataset(cluster, role, node, candidate if role == "worker" else "")
        return candidate

    def setup(self) -> str:
        self.deploy()
        self.ack_all_jobsheets()
        return self.ack_all_datasets()

    def train_cluster(self, name: str, tag: str = "") -> None:
        """Every direct client of `name` trains and submits for the current generation."""
        gen = self.cluster(name).generation
        for c in self.specs[name].clients:
            self.scripts.start_training(name, "client", c, gen)
            digest = self.blobs.put(f"{name}/{c}/{gen}{tag}".encode())
            self.scripts.submit_params(name, "client", c, gen, digest, 10)

    def aggregate_cluster(self, name: str, digests: dict[str, str] | None = None) -> str:
        """Every worker of `name` uploads (by default, the same aggregate)."""
        gen = self.cluster(name).generation
        agreed = self.blobs.put(f"aggregate {name} {gen}".encode())
        for w in self.specs[name].workers:
            self.scripts.start_aggregation(name, "worker", w, gen)
            digest = (digests or {}).get(w, agreed)
            self.blobs.republish(digest)
            self.scripts.upload_aggregate(name, "worker", w, gen, digest)
        return agreed

    def leaf_first(self) -> list[str]:
        return [s.name for s in sorted(self.tree, key=lambda s: -s.level)]

    def run_round(self) -> None:
        """One global round: every cluster trains and aggregates, deepest first, repeating a
        sub-cluster while it has local epochs left."""
        progressed = True
        start_round = self.cluster(self.root).round
        while progressed:
            progressed = False
            for name in self.leaf_first():
                state = self.cluster(name)
                waiting = set(self.specs[name].clients) - state.submitted
                if state.process_stage == ProcessStage.TRAINING and waiting:
                    self.train_cluster(name)
                    progressed = True
                state = self.cluster(name)
                if state.process_stage == ProcessStage.AGGREGATING:
                    self.aggregate_cluster(name)
                    progressed = True
            top = self.cluster(self.root)
            if top.round != start_round or top.process_stage == ProcessStage.FINISHED:
                return

    def exit_all(self) -> None:
        for cluster, role, node in self.nodes():
            self.scripts.ack_exit(cluster, role, node)

    def dump(self) -> dict[bytes, object]:
        """Every key of the tree, byte for byte, to prove a refusal changed nothing."""
        return tree_dump(self.client, self.root)


def tree_dump(client: redis.Redis, root: str) -> dict[bytes, object]:
    """Every key of a tree with its DUMP, except hashes: those are compared by their sorted
    fields and values, because a hashtable-encoded hash's DUMP lists its fields in table order,
    which a mere read can change (Redis rehashes incrementally on lookups)."""
    found = sorted(client.scan_iter(match=keys.tree_pattern(root), count=1000))
    pipe = client.pipeline(transaction=True)
    for key in found:
        pipe.type(key)
    kinds = pipe.execute()
    pipe = client.pipeline(transaction=True)
    for key, kind in zip(found, kinds, strict=True):
        (pipe.hgetall if kind == b"hash" else pipe.dump)(key)
    return {key: sorted(value.items()) if kind == b"hash" else value
            for key, kind, value in zip(found, kinds, pipe.execute(), strict=True)}
