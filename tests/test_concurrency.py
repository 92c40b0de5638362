"""Atomicity under real contention: every node of a three-level tree is its own process, all
acking, submitting and uploading at once with random delays. No ACK may be lost, and the end
state must equal the reference model's run of the same operations in sequence."""

from __future__ import annotations

import multiprocessing
import random
import time

import redis
from test_model_check import ROOT, model_state, redis_state

from hierfl import keys
from hierfl.jobtree import build_tree
from hierfl.protocol import ProcessStage
from hierfl.reference import JobModel
from hierfl.store.blobs import BlobStore, digest_of
from hierfl.store.scripts import Scripts
from hierfl.store.state import ClusterState, read_cluster
from hierfl.store.waiter import KeyWaiter

ROUNDS = 2


def candidate_bytes() -> bytes:
    return b"initial parameters"  # every worker offers the same, so the end state is unique


def params_bytes(cluster: str, role: str, node: str, gen: int) -> bytes:
    return (f"{cluster}/{node}/{gen}" if role == "client" else f"agg {cluster}/{gen}").encode()


def has_work(state: ClusterState, role: str, node: str) -> bool:
    if role == "client":
        return state.process_stage == ProcessStage.TRAINING and node not in state.submitted
    return state.process_stage == ProcessStage.AGGREGATING and node not in state.uploaded


def run_node(url: str, cluster: str, role: str, node: str, seed: int) -> None:
    """A protocol-only node: the real scripts and waiter, no learning, random pauses."""
    client = redis.Redis.from_url(url)
    scripts, blobs, rng = Scripts(client), BlobStore(client, ROOT), random.Random(seed)

    def pause() -> None:
        time.sleep(rng.uniform(0, 0.02))

    def read() -> ClusterState:
        return read_cluster(client, cluster)

    with KeyWaiter(client, [keys.job(cluster)], safety_timeout=2.0) as waiter:
        waiter.until(read, lambda s: s.jobsheet_flag)
        pause()
        scripts.ack_jobsheet(cluster, role, node)
        waiter.until(read, lambda s: s.dataset_flag)
        pause()
        scripts.ack_dataset(cluster, role, node,
                            blobs.put(candidate_bytes()) if role == "worker" else "")
        while True:
            state = waiter.until(read, lambda s: s.process_stage == ProcessStage.FINISHED
                                 or has_work(s, role, node))
            pause()
            if state.process_stage == ProcessStage.FINISHED:
                scripts.ack_exit(cluster, role, node)
                return
            gen = state.generation
            start = scripts.start_training if role == "client" else scripts.start_aggregation
            start(cluster, role, node, gen)
            pause()
            digest = blobs.put(params_bytes(cluster, role, node, gen))
            if role == "client":
                scripts.submit_params(cluster, role, node, gen, digest, 5)
            else:
                scripts.upload_aggregate(cluster, role, node, gen, digest)


def sequential_model(tree, nodes) -> JobModel:
    """The same nodes, one operation at a time, round-robin, in the reference model."""
    model = JobModel.deploy(ROOT, tree, ROUNDS)
    model.blobs.update({digest_of(b"test split"), digest_of(candidate_bytes())})
    progressed = True
    while progressed:
        progressed = False
        for cluster, role, node in nodes:
            c = model.clusters[cluster]
            for name in ("ack_jobsheet", "ack_dataset", "start_training", "submit_params",
                         "start_aggregation", "upload_aggregate", "ack_exit"):
                if not model.can_move(name, cluster, role, node):
                    continue
                args: tuple = ()
                if name == "ack_dataset":
                    args = (digest_of(candidate_bytes()) if role == "worker" else "",)
                elif name.startswith("start_"):
                    args = (c.generation,)
                elif name in ("submit_params", "upload_aggregate"):
                    digest = digest_of(params_bytes(cluster, role, node, c.generation))
                    model.blobs.add(digest)
                    args = (c.generation, digest, 5) if role == "client" else (c.generation,
                                                                               digest)
                model.apply(name, cluster, role, node, *args)
                progressed = True
                break
    return model


def test_many_processes_at_once_lose_nothing(r, redis_url):
    tree = build_tree(ROOT, sub=[2, 2], clients=[1, 1, 2], workers=[2, 1, 2],
                      cluster_epochs=[1, 2, 1])
    nodes = [(s.name, role, n) for s in tree
             for role, ids in (("client", s.clients), ("worker", s.workers)) for n in ids]
    Scripts(r).deploy(ROOT, tree, "{}", ROUNDS, {}, BlobStore(r, ROOT).put(b"test split"))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_node, args=(redis_url, *node, i))
             for i, node in enumerate(nodes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    assert len(procs) == 23  # 11 clients and 12 workers in 7 clusters
    expected = sequential_model(tree, nodes)
    assert expected.top.process_stage == ProcessStage.FINISHED and expected.outcome == "completed"
    assert redis_state(r) == model_state(expected)
