"""Nodes as threads of one process: the same results as node processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from hierfl.learning import params as P
from hierfl.learning.models import build_model
from hierfl.sheet import ModelConfig


def test_models_built_in_many_threads_at_once_equal_one_built_alone():
    # Two workers that must offer the same initial model do so even as threads of one process.
    cfg = ModelConfig(name="mlp", hidden=(32,))
    alone = P.to_bytes(P.from_model(build_model(cfg, 64, 10, seed=7)))
    built: list[bytes] = []

    def build() -> None:
        for _ in range(20):
            built.append(P.to_bytes(P.from_model(build_model(cfg, 64, 10, seed=7))))

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 80 and set(built) == {alone}


def test_node_count_runs_a_whole_job_from_two_processes(hierfl_env):
    def hierfl(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hierfl", *args], env=hierfl_env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    deploy = hierfl("init-job", "many", "--sub", "2", "--clients", "2", "--workers", "2",
                    "--rounds", "2")
    assert deploy.wait(60) == 0, deploy.stdout.read()
    procs = [hierfl("node", "--role", "client", "--job", "many", "--count", "4"),
             hierfl("node", "--role", "worker", "--job", "many", "--count", "6")]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert outputs[0].count("joined many#") == 4
    assert outputs[1].count("joined many") == 6
    status = subprocess.run([sys.executable, "-m", "hierfl", "status", "many", "--json"],
                            env=hierfl_env, capture_output=True, text=True, check=True)
    data = json.loads(status.stdout)
    assert data["outcome"] == "completed" and data["metrics"][-1]["round"] == 2
    assert all(set(c["clients"].values()) <= {5} and set(c["workers"].values()) == {5}
               for c in data["clusters"].values())


def test_a_tree_splits_into_shares_of_whole_clusters_and_spread_workers():
    from hierfl.jobtree import build_tree
    from hierfl.node.part import split

    tree = build_tree("sp", sub=[3], clients=[0, 4], workers=[3, 2], cluster_epochs=[1, 1])
    shares = split(tree, 2)
    leaves = [{slot.cluster for slot in share if slot.cluster != "sp"} for share in shares]
    assert sorted(map(len, leaves)) == [1, 2] and not leaves[0] & leaves[1]  # whole clusters
    root_workers = [sum(slot.cluster == "sp" for slot in share) for share in shares]
    # 12 and 6 nodes of leaves; the root's three workers go to the lighter share: 12 and 9.
    assert sorted(map(len, shares)) == [9, 12] and sorted(root_workers) == [0, 3]
    assert sorted(map(len, split(tree, 3))) == [7, 7, 7]  # each leaf and one root worker
    assert len(split(tree, 30)) == 6  # no empty share: three leaves, three root workers


def test_a_node_log_line_names_the_node_once_and_a_library_logger_after_it(tmp_path):
    import logging

    from hierfl.node.pool import logging_to

    path = tmp_path / "nodes.log"

    def node() -> None:
        logging.getLogger("hierfl.node.demo#0/client/c1").info("generation 3: submitted")
        logging.getLogger("hierfl.store.hub").warning("connection lost")

    with logging_to(path):
        thread = threading.Thread(target=node, name="demo#0/client/c1")
        thread.start()
        thread.join()
        node()  # a node process of its own logs from its main thread
    lines = [line.split(" ", 2)[2] for line in path.read_text().splitlines()]
    assert lines == ["INFO demo#0/client/c1: generation 3: submitted",
                     "WARNING demo#0/client/c1 hierfl.store.hub: connection lost",
                     "INFO demo#0/client/c1: generation 3: submitted",
                     "WARNING hierfl.store.hub: connection lost"]


def test_a_node_sleeps_only_through_states_it_could_not_act_in(r):
    """The hub does not wake a node for a cluster state its `may_wake_for` refuses; so that
    must hold of every state in which the node is ready (`_ready`), whatever its own entries
    and, for a root worker, whichever rounds are scored."""
    from itertools import product

    import numpy as np

    from hierfl import keys
    from hierfl.node.client import ClientNode
    from hierfl.node.runtime import Slot
    from hierfl.node.worker import WorkerNode
    from hierfl.protocol import ProcessStage, Role
    from hierfl.sheet import parse_sheet
    from hierfl.store.state import ClusterState

    now = 1_000_000
    root_worker = WorkerNode(r, Slot("j", Role.WORKER, "w0"))
    root_worker.sheet = parse_sheet('[job]\nname = "j"\nrounds = 4\nevaluate_every = 2\n',
                                    source="s.toml")
    root_worker.test = (np.zeros((1, 64)), np.zeros(1))
    r.hset(keys.unscored("j"), mapping={"2": "d2"})  # round 0 is scored, round 2 is not ...
    root_worker._scored = {0}  # ... and this worker has read so (round 1 is not evaluated)
    nodes = {"client": ClientNode(r, Slot("j#0", Role.CLIENT, "c0")),
             "leaf worker": WorkerNode(r, Slot("j#0", Role.WORKER, "w0")),
             "root worker": root_worker}
    asleep: dict[str, set] = {name: set() for name in nodes}
    for (name, node), stage, deadline, round_, own in product(
            nodes.items(), ProcessStage, ("", now - 1, now + 9), (1, 2, 3),
            (None, frozenset(), frozenset({"c0", "w0"}))):
        fields = {"process_stage": str(stage.value), "generation": str(round_ + 2),
                  "round": str(round_), "deadline": str(deadline)}
        hash_only = ClusterState(node.slot.cluster, fields, {}, {}, None, None, now)
        state = ClusterState(node.slot.cluster, fields, {}, {}, own, own, now)
        if not node.may_wake_for(hash_only):
            assert not node._ready(state), (name, stage, deadline, round_, own)
            asleep[name].add((stage.name, round_) if deadline == "" else "deadline")
    stages = {s.name for s in ProcessStage}
    assert asleep == {
        "client": {(s, n) for s in ("IDLE", "AGGREGATING") for n in (1, 2, 3)},
        "leaf worker": {(s, n) for s in ("IDLE", "TRAINING") for n in (1, 2, 3)},
        # Until round 2 is agreed (agreed: the round before, all of it once finished).
        "root worker": {(s, n) for s in stages - {"AGGREGATING", "FINISHED"} for n in (1, 2)},
    }
