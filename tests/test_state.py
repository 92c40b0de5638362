"""Reading state: a whole cluster for the CLI, a member's own view for its node."""

from __future__ import annotations

import pytest
from driver import Driver

from hierfl.protocol import STAGE_FIELDS, NodeStatus, ProcessStage
from hierfl.store.state import read_cluster, read_member


def test_a_members_view_holds_the_cluster_hash_and_only_its_own_entries(r):
    d = Driver(r, sub=[], clients=[3], workers=[2])
    d.setup()
    gen = d.cluster("demo").generation
    d.scripts.start_training("demo", "client", "c1", gen)
    d.scripts.submit_params("demo", "client", "c1", gen, d.blobs.put(b"c1 params"), 5)
    full = read_cluster(r, "demo")
    mine = read_cluster(r, "demo", member=("client", "c1"))
    other = read_cluster(r, "demo", member=("worker", "w0"))
    # The member's view has the cluster hash; the stages (no node acts on them) only a full read.
    stage_fields = {f.value for f in STAGE_FIELDS}
    assert set(full.fields) - set(mine.fields) == stage_fields
    assert mine.fields == {k: v for k, v in full.fields.items() if k not in stage_fields}
    assert mine.generation == gen and mine.own_read
    assert mine.clients == {"c1": NodeStatus.DONE} and mine.workers == {}
    assert mine.submitted == frozenset({"c1"}) and mine.uploaded == frozenset()
    assert other.workers == {"w0": NodeStatus.DATASET_ACKED} and other.clients == {}
    assert other.submitted == frozenset()
    assert len(full.clients) == 3 and full.submitted == frozenset({"c1"})
    assert read_cluster(r, "demo", member=("client", "ghost")).clients == {}
    assert read_cluster(r, "nosuch", member=("client", "c1")) is None


def test_a_member_reads_its_own_entries_only_when_the_cluster_hash_says_they_can_matter(r):
    d = Driver(r, sub=[], clients=[2], workers=[1])
    d.setup()
    fields, now = read_cluster(r, "demo", member=("client", "c0")).fields, 1_000
    training = lambda state: state.process_stage == ProcessStage.TRAINING  # noqa: E731
    aggregating = lambda state: state.process_stage == ProcessStage.AGGREGATING  # noqa: E731
    mine = read_member(r, "demo", ("client", "c0"), fields, now, wants_own=training)
    assert mine.own_read and mine.submitted == frozenset()
    assert mine.clients == {"c0": NodeStatus.DATASET_ACKED} and mine.server_ms == now
    skipped = read_member(r, "demo", ("client", "c0"), fields, now, wants_own=aggregating)
    assert not skipped.own_read and skipped.generation == mine.generation
    with pytest.raises(TypeError):  # unread entries cannot pass for "not submitted"
        "c0" in skipped.submitted  # noqa: B015
