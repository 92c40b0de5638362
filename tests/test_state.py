"""Reading state: a whole cluster for the CLI, a member's own view for its node."""

from __future__ import annotations

from driver import Driver

from hierfl.protocol import NodeStatus
from hierfl.store.state import read_cluster


def test_a_members_view_holds_the_cluster_hash_and_only_its_own_entries(r):
    d = Driver(r, sub=[], clients=[3], workers=[2])
    d.setup()
    gen = d.cluster("demo").generation
    d.scripts.start_training("demo", "client", "c1", gen)
    d.scripts.submit_params("demo", "client", "c1", gen, d.blobs.put(b"c1 params"), 5)
    full = read_cluster(r, "demo")
    mine = read_cluster(r, "demo", member=("client", "c1"))
    other = read_cluster(r, "demo", member=("worker", "w0"))
    assert mine.fields == full.fields and mine.generation == gen
    assert mine.clients == {"c1": NodeStatus.DONE} and mine.workers == {}
    assert mine.submitted == frozenset({"c1"}) and mine.uploaded == frozenset()
    assert other.workers == {"w0": NodeStatus.DATASET_ACKED} and other.clients == {}
    assert other.submitted == frozenset()
    assert len(full.clients) == 3 and full.submitted == frozenset({"c1"})
    assert read_cluster(r, "demo", member=("client", "ghost")).clients == {}
    assert read_cluster(r, "nosuch", member=("client", "c1")) is None
