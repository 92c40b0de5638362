"""The cascade, script by script, against a real redis-server."""

from __future__ import annotations

import time

import pytest
from driver import Driver

from hierfl import keys
from hierfl.errors import IllegalTransition, JobExists, ScriptError, StaleGeneration, UnknownJob
from hierfl.jobtree import Tolerance
from hierfl.protocol import ErrorCode, NodeStatus, Outcome, ProcessStage

S = NodeStatus


def test_deploy_creates_tree_and_raises_jobsheet_flags_everywhere(r):
    d = Driver(r, sub=[2, 2])
    assert d.deploy() == 7
    job = d.job()
    assert list(job.clusters) == ["demo", "demo#0", "demo#0_0", "demo#0_1", "demo#1",
                                  "demo#1_0", "demo#1_1"]
    for c in job.clusters.values():
        assert c.jobsheet_flag and not c.dataset_flag
        assert c.process_stage == ProcessStage.IDLE and c.generation == 0
    assert job.clusters["demo"].clients == {"demo#0": 0, "demo#1": 0}
    assert job.clusters["demo#0_1"].clients == {"c0": 0, "c1": 0}
    assert r.xlen(keys.events("demo")) == 1


def test_second_deploy_with_same_name_is_refused_and_changes_nothing(r):
    d = Driver(r)
    d.deploy()
    before = d.dump()
    with pytest.raises(JobExists, match="job=demo: a job of this name exists already"):
        d.deploy()
    assert d.dump() == before


def test_jobsheet_acks_bubble_through_two_levels_then_dataset_flag_top_down(r):
    d = Driver(r, sub=[2, 1])
    d.deploy()
    nodes = list(d.nodes())
    for cluster, role, node in nodes[:-1]:
        d.scripts.ack_jobsheet(cluster, role, node)
    job = d.job()
    last_cluster = nodes[-1][0]
    assert not any(c.dataset_flag for c in job.clusters.values())
    assert job.clusters["demo"].clients["demo#0"] == S.JOBSHEET_ACKED  # demo#0's subtree done
    assert job.clusters["demo"].clients["demo#1"] == S.DEPLOYED
    assert job.clusters[last_cluster].client_stage == S.JOBSHEET_ACKED
    assert job.clusters[last_cluster].worker_stage == S.DEPLOYED  # last worker missing
    d.scripts.ack_jobsheet(*nodes[-1])
    job = d.job()
    assert all(c.dataset_flag for c in job.clusters.values())
    assert job.clusters["demo"].client_stage == S.JOBSHEET_ACKED
    assert job.clusters["demo#1"].clients == {"demo#1_0": S.JOBSHEET_ACKED}


@pytest.mark.parametrize("sub", [[], [2], [2, 2], [1, 2, 1]], ids=["1", "2", "3", "4"])
def test_dataset_acks_start_round_one_everywhere(r, sub):
    d = Driver(r, sub=sub, clients=[0] * len(sub) + [2] if sub else [3])
    candidate = d.setup()
    for c in d.job().clusters.values():
        assert c.process_stage == ProcessStage.TRAINING
        assert c.generation == 1 and c.round == 1
        assert c.global_digest == candidate
    top = d.cluster("demo")
    if sub:
        assert set(top.clients.values()) == {S.BUSY}  # sub-clusters are busy training
    assert r.hget(keys.history("demo"), 0).decode() == candidate


def test_first_worker_candidate_is_kept_and_later_ones_deleted(r):
    d = Driver(r, sub=[])
    d.deploy()
    d.ack_all_jobsheets()
    first, second = d.blobs.put(b"first init"), d.blobs.put(b"second init")
    d.scripts.ack_dataset("demo", "worker", "w0", first)
    d.scripts.ack_dataset("demo", "worker", "w1", second)
    assert r.hget(keys.job("demo"), "candidate").decode() == first
    assert not r.exists(keys.blob("demo", second))


def test_root_worker_without_candidate_is_refused_before_one_is_kept(r):
    d = Driver(r, sub=[])
    d.deploy()
    d.ack_all_jobsheets()
    before = d.dump()
    with pytest.raises(ScriptError, match="a root worker must offer a candidate") as info:
        d.scripts.ack_dataset("demo", "worker", "w0", "")
    assert info.value.code == ErrorCode.BAD_ARGUMENT
    assert d.dump() == before


def test_sub_cluster_workers_need_not_offer_a_candidate(r):
    # They never build a model (so their processes never load torch); the root's workers do.
    d = Driver(r, sub=[2])
    d.deploy()
    d.ack_all_jobsheets()
    for cluster, role, node in d.nodes():
        if cluster != "demo":
            assert d.scripts.ack_dataset(cluster, role, node, "") == S.DATASET_ACKED
    assert r.hget(keys.job("demo"), "candidate") is None
    offered = d.blobs.put(b"initial parameters")
    d.scripts.ack_dataset("demo", "worker", "w0", offered)
    d.scripts.ack_dataset("demo", "worker", "w1", "")
    assert d.cluster("demo#1").global_digest == offered and d.cluster("demo").round == 1


def test_one_round_two_levels_moves_every_stage(r):
    d = Driver(r, sub=[2], rounds=2)
    d.setup()
    d.train_cluster("demo#0")
    sub0 = d.cluster("demo#0")
    assert sub0.process_stage == ProcessStage.AGGREGATING
    assert sub0.client_stage == S.DONE and sub0.worker_stage == S.DATASET_ACKED
    agreed = d.aggregate_cluster("demo#0")
    sub0 = d.cluster("demo#0")
    assert sub0.process_stage == ProcessStage.IDLE and sub0.global_digest == agreed
    top = d.cluster("demo")
    assert top.clients == {"demo#0": S.DONE, "demo#1": S.BUSY}
    assert top.process_stage == ProcessStage.TRAINING
    assert r.hget(keys.submissions("demo"), "demo#0").decode() == agreed
    assert int(r.hget(keys.samples("demo"), "demo#0")) == 20  # 2 clients x 10 samples
    d.train_cluster("demo#1")
    d.aggregate_cluster("demo#1")
    assert d.cluster("demo").process_stage == ProcessStage.AGGREGATING
    root_agreed = d.aggregate_cluster("demo")
    job = d.job()
    for c in job.clusters.values():
        assert c.round == 2 and c.global_digest == root_agreed
        assert c.process_stage == ProcessStage.TRAINING
    assert job.clusters["demo"].generation == 2 and job.clusters["demo#0"].generation == 2
    assert r.hget(keys.history("demo"), 1).decode() == root_agreed


@pytest.mark.parametrize("sub", [[], [2], [2, 2]], ids=["depth0", "depth1", "depth2"])
def test_whole_job_finishes_and_everyone_exits(r, sub):
    d = Driver(r, sub=sub, clients=[0] * len(sub) + [2] if sub else [2], rounds=3)
    d.setup()
    for _ in range(3):
        d.run_round()
    job = d.job()
    assert job.top.outcome == Outcome.COMPLETED.value
    assert all(c.process_stage == ProcessStage.FINISHED for c in job.clusters.values())
    assert not job.finished
    d.exit_all()
    job = d.job()
    assert job.finished
    for c in job.clusters.values():
        assert set(c.clients.values()) == {S.EXITED} and set(c.workers.values()) == {S.EXITED}
    assert sorted(int(k) for k in r.hkeys(keys.history("demo"))) == [0, 1, 2, 3]


def test_cluster_epochs_two_gives_two_local_rounds_per_global_round(r):
    d = Driver(r, sub=[1], clients=[0, 2], cluster_epochs=[1, 2], rounds=1)
    d.setup()
    d.train_cluster("demo#0")
    d.aggregate_cluster("demo#0")
    sub = d.cluster("demo#0")
    assert sub.epoch == 1 and sub.generation == 2
    assert sub.process_stage == ProcessStage.TRAINING  # second local round, same global round
    assert d.cluster("demo").process_stage == ProcessStage.TRAINING
    assert d.cluster("demo").clients["demo#0"] == S.BUSY
    d.train_cluster("demo#0")
    agreed = d.aggregate_cluster("demo#0")
    sub = d.cluster("demo#0")
    assert sub.epoch == 2 and sub.process_stage == ProcessStage.IDLE
    top = d.cluster("demo")
    assert top.clients["demo#0"] == S.DONE and top.process_stage == ProcessStage.AGGREGATING
    assert r.hget(keys.submissions("demo"), "demo#0").decode() == agreed
    d.aggregate_cluster("demo")
    assert d.cluster("demo").process_stage == ProcessStage.FINISHED
    events = [e[1][b"op"] for e in r.xrange(keys.events("demo"))]
    assert events.count(b"consensus") == 3  # two local rounds in demo#0, one at the root


def test_three_worker_consensus_outvotes_the_odd_aggregate(r):
    d = Driver(r, sub=[], clients=[2], workers=[3], rounds=1)
    d.setup()
    d.train_cluster("demo")
    odd = d.blobs.put(b"a faulty aggregate")
    agreed = d.aggregate_cluster("demo", digests={"w1": odd})
    top = d.cluster("demo")
    assert top.outcome == Outcome.COMPLETED.value
    assert top.global_digest == agreed != odd
    consensus = [e[1] for e in r.xrange(keys.events("demo")) if e[1][b"op"] == b"consensus"]
    assert consensus[-1][b"digest"].decode() == agreed and consensus[-1][b"votes"] == b"2"


def test_no_majority_reruns_aggregation_once_then_fails_the_job(r):
    d = Driver(r, sub=[], clients=[1], workers=[2], rounds=1)
    d.setup()
    d.train_cluster("demo")
    other = d.blobs.put(b"another aggregate")
    d.aggregate_cluster("demo", digests={"w1": other})
    top = d.cluster("demo")
    assert top.outcome == Outcome.RUNNING.value
    assert top.process_stage == ProcessStage.AGGREGATING and top.fields["attempt"] == "1"
    assert top.uploaded == frozenset() and top.generation == 1
    # The attempt's aggregates are retired: nothing names them any more.
    assert not r.exists(keys.blob("demo", other))
    d.aggregate_cluster("demo", digests={"w1": other})  # the same disagreement, published again
    top = d.cluster("demo")
    assert top.outcome == Outcome.FAILED.value
    assert top.process_stage == ProcessStage.FINISHED
    assert "no 2 matching aggregates among the 2 uploaded in cluster demo" in top.fields["reason"]


def _failing_second_sub_cluster(r) -> Driver:
    """demo#1 (min_clients 2, a 1 ms deadline) gets one of its two submissions and fails at
    its deadline; the root's own deadline is a minute away."""
    d = Driver(r, sub=[2], clients=[0, 2], workers=[1, 1], rounds=2, tolerance=[
        Tolerance(round_timeout_ms=60_000, min_clients=1),
        Tolerance(round_timeout_ms=1, min_clients=2)])
    d.setup()
    gen = d.cluster("demo#1").generation
    d.scripts.start_training("demo#1", "client", "c0", gen)
    d.scripts.submit_params("demo#1", "client", "c0", gen, d.blobs.put(b"c0's"), 10)
    time.sleep(0.002)
    return d


def test_a_parent_goes_on_at_once_when_only_failed_sub_clusters_are_missing(r):
    d = _failing_second_sub_cluster(r)
    d.train_cluster("demo#0")
    d.aggregate_cluster("demo#0")
    assert d.cluster("demo").process_stage == ProcessStage.TRAINING  # waiting for demo#1
    assert d.scripts.close_round("demo#1", d.cluster("demo#1").generation) == 1
    assert d.cluster("demo#1").fields["failure"] == (
        "only 1 of 2 members submitted by the deadline (min_clients 2)")
    top = d.cluster("demo")  # not at its deadline, a minute away: now
    assert top.process_stage == ProcessStage.AGGREGATING and top.generation == 1
    assert top.fields["dropped"] == "demo#1" and top.submitted == {"demo#0"}
    ops = [e[1][b"op"] for e in r.xrange(keys.events("demo"))]
    assert ops[-3:] == [b"cluster_failed", b"dropped", b"aggregation"]


def test_a_parent_still_waits_for_members_that_have_not_failed(r):
    d = _failing_second_sub_cluster(r)
    d.scripts.close_round("demo#1", d.cluster("demo#1").generation)
    top = d.cluster("demo")
    assert top.process_stage == ProcessStage.TRAINING and top.fields["dropped"] == ""
    assert top.deadline_ms is not None  # demo#0 may still submit before it
    d.train_cluster("demo#0")
    d.aggregate_cluster("demo#0")  # the last member that could: the parent goes on
    assert d.cluster("demo").process_stage == ProcessStage.AGGREGATING


def test_every_sub_cluster_failing_fails_the_root_before_its_deadline(r):
    d = _failing_second_sub_cluster(r)
    gen = d.cluster("demo#0").generation
    time.sleep(0.002)
    d.scripts.close_round("demo#0", gen)  # no submission at all: demo#0 fails too
    d.scripts.close_round("demo#1", gen)
    top = d.cluster("demo")
    assert top.outcome == Outcome.FAILED.value and top.process_stage == ProcessStage.FINISHED
    assert top.fields["reason"] == ("only 0 of 2 members submitted before the deadline, the "
                                    "others having failed (min_clients 1)")


# -- refusals: each names job, cluster, node, from and to, and changes nothing ---------------

def refused(d: Driver, exc_type, match: str, call, *args) -> ScriptError:
    before = d.dump()
    with pytest.raises(exc_type, match=match) as info:
        call(*args)
    assert d.dump() == before, "a refused call changed the state"
    return info.value


def test_illegal_transitions_are_refused_without_change(r):
    d = Driver(r, sub=[1], clients=[0, 2], workers=[1, 1])
    d.deploy()
    s = d.scripts
    refused(d, IllegalTransition, "dataset_flag is not set yet", s.ack_dataset,
            "demo#0", "client", "c0", "")
    refused(d, IllegalTransition,
            r"job=demo cluster=demo#0 node=client/c0 from=0 to=3 \(start_training\): process "
            "stage is 0, needs 1", s.start_training, "demo#0", "client", "c0", 0)
    d.ack_all_jobsheets()
    d.ack_all_datasets()
    refused(d, IllegalTransition, r"from=2 to=4 \(submit_params\): not allowed from status 2",
            s.submit_params, "demo#0", "client", "c0", 1, d.blobs.put(b"x"), 5)
    refused(d, IllegalTransition, "not allowed for a worker", s.start_training,
            "demo#0", "worker", "w0", 1)
    refused(d, IllegalTransition, "process stage is 1, needs 2", s.start_aggregation,
            "demo#0", "worker", "w0", 1)
    refused(d, IllegalTransition, "process stage is 1, needs 3", s.ack_exit,
            "demo#0", "client", "c0")


def test_stale_generation_is_refused_naming_both_generations(r):
    d = Driver(r, sub=[], clients=[1], workers=[1], rounds=3)
    d.setup()
    d.run_round()
    err = refused(d, StaleGeneration, "call is for generation 1 but the cluster is at "
                  "generation 2", d.scripts.start_training, "demo", "client", "c0", 1)
    assert err.code == ErrorCode.STALE_GENERATION


def test_submission_needs_a_stored_blob_and_positive_samples(r):
    d = Driver(r, sub=[], clients=[1], workers=[1])
    d.setup()
    d.scripts.start_training("demo", "client", "c0", 1)
    refused(d, ScriptError, "is not stored", d.scripts.submit_params,
            "demo", "client", "c0", 1, "ab" * 32, 5)
    refused(d, ScriptError, "samples must be a positive integer", d.scripts.submit_params,
            "demo", "client", "c0", 1, d.blobs.put(b"p"), 0)
    refused(d, ScriptError, "is not a hex digest", d.scripts.submit_params,
            "demo", "client", "c0", 1, "../etc", 3)


def test_unknown_cluster_node_and_role_are_refused(r):
    d = Driver(r)
    d.deploy()
    e = refused(d, UnknownJob, "cluster=demo#7: no such cluster job", d.scripts.ack_jobsheet,
                "demo#7", "client", "c0")
    assert e.code == ErrorCode.UNKNOWN_CLUSTER
    e = refused(d, UnknownJob, "node=client/c9: no such client", d.scripts.ack_jobsheet,
                "demo#0", "client", "c9")
    assert e.code == ErrorCode.UNKNOWN_NODE
    refused(d, ScriptError, "unknown role 'boss'", d.scripts.ack_jobsheet,
            "demo#0", "boss", "c0")
    # a sub-cluster is a member of its parent but not a node anyone may drive
    refused(d, UnknownJob, "no such client", d.scripts.ack_jobsheet, "demo", "client", "demo#0")


def test_repeated_calls_are_no_op_successes(r):
    d = Driver(r, sub=[], clients=[1], workers=[1])
    d.deploy()
    assert d.scripts.ack_jobsheet("demo", "client", "c0") == S.JOBSHEET_ACKED
    before = d.dump()
    assert d.scripts.ack_jobsheet("demo", "client", "c0") == S.JOBSHEET_ACKED
    assert d.dump() == before


def test_record_metric_checks_the_digest_of_the_round(r):
    d = Driver(r, sub=[], clients=[1], workers=[1])
    candidate = d.setup()
    refused(d, ScriptError, "is not the global model of round 0", d.scripts.record_metric,
            "demo", "w0", 0, "ab" * 32, 0.5, 1.0)
    assert d.scripts.record_metric("demo", "w0", 0, candidate, 0.1, 2.3)
    assert not d.scripts.record_metric("demo", "w0", 0, candidate, 0.9, 0.1)  # first one kept
    assert d.job().metrics == [{"round": 0, "accuracy": 0.1, "loss": 2.3,
                                "at": d.job().metrics[0]["at"]}]


def test_claim_slot_hands_out_each_slot_once(r):
    d = Driver(r, sub=[2], clients=[0, 2], workers=[1, 1])
    d.deploy()
    claimed = [d.scripts.claim_slot("demo", "client", "t") for _ in range(4)]
    assert claimed == [("demo#0", "c0"), ("demo#0", "c1"), ("demo#1", "c0"), ("demo#1", "c1")]
    assert d.scripts.claim_slot("demo", "client", "t") is None
    assert d.scripts.claim_slot("demo", "worker", "t", "demo#1", "") == ("demo#1", "w0")
    assert d.scripts.claim_slot("demo", "worker", "t") == ("demo", "w0")
    assert d.scripts.claim_slot("demo", "worker", "t") == ("demo#0", "w0")
    with pytest.raises(UnknownJob, match="no such job"):
        d.scripts.claim_slot("nope", "client", "t")


def test_scripts_are_reloaded_after_the_server_forgets_them(r):
    d = Driver(r, sub=[], clients=[1], workers=[1])
    d.deploy()
    r.script_flush()
    assert d.scripts.ack_jobsheet("demo", "client", "c0") == S.JOBSHEET_ACKED


def test_start_aggregation_hands_the_worker_what_it_aggregates_in_the_same_round_trip(r):
    d = Driver(r, sub=[], clients=[2], workers=[1])
    d.setup()
    d.train_cluster("demo")
    gen = d.cluster("demo").generation
    r.script_flush()  # the transaction loads the script again, like a plain call
    multi = int(r.info("commandstats").get("cmdstat_multi", {}).get("calls", 0))

    status, digests, samples = d.scripts.start_aggregation_reading("demo", "worker", "w0", gen)

    assert status == S.BUSY
    assert sorted(digests) == [b"c0", b"c1"] and samples == {b"c0": b"10", b"c1": b"10"}
    assert digests[b"c0"].decode() == r.hget(keys.submissions("demo"), "c0").decode()
    assert int(r.info("commandstats")["cmdstat_multi"]["calls"]) == multi + 2  # NOSCRIPT, then
    with pytest.raises(StaleGeneration, match=f"generation {gen + 1} but the cluster is at gen"):
        d.scripts.start_aggregation_reading("demo", "worker", "w0", gen + 1)
