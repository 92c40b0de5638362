"""Bounded memory: the scripts delete the parameter blobs no live round can need any more."""

from __future__ import annotations

import pytest
import redis
from driver import Driver

from hierfl import keys
from hierfl.errors import ScriptError


def stored_blobs(d: Driver) -> set[str]:
    return {k.decode().rsplit(":", 1)[1]
            for k in d.client.scan_iter(match=keys.blob(d.root, "*"), count=1000)}


def history(d: Driver) -> dict[int, str]:
    return {int(k): v.decode() for k, v in d.client.hgetall(keys.history(d.root)).items()}


def unscored(d: Driver) -> dict[int, str]:
    return {int(k): v.decode() for k, v in d.client.hgetall(keys.unscored(d.root)).items()}


def run_rounds(d: Driver, rounds: int) -> None:
    for _ in range(rounds):
        d.run_round()


def test_blob_count_stays_flat_however_many_rounds_run(r):
    d = Driver(r, sub=[2], clients=[1, 2], workers=[2, 2], cluster_epochs=[1, 2], rounds=12)
    d.setup()
    counts = []
    for _ in range(10):
        d.run_round()
        scorer = d.specs["demo"].workers[0]
        for round_, digest in history(d).items():  # a root worker scores every round
            d.scripts.record_metric("demo", scorer, round_, digest, 0.5, 1.0)
        counts.append(len(stored_blobs(d)))
    assert counts[-1] == counts[1], f"blobs per round: {counts}"
    # What is left: the test split, the initial candidate, the current global and the last
    # generation's submissions and aggregates of each cluster, nothing older.
    top = d.cluster("demo")
    live = {top.global_digest} | set(top.fields.get("candidate", "").split())
    for name in d.specs:
        for hash_key in (keys.submissions(name), keys.aggregates(name)):
            live |= {v.decode() for v in d.client.hvals(hash_key)}
        live.add(d.cluster(name).global_digest)
    test = d.client.get(keys.testset("demo")).decode()
    assert stored_blobs(d) == live | {test}


def test_an_unscored_round_keeps_its_global_until_a_root_worker_scores_it(r):
    d = Driver(r, sub=[], clients=[2], workers=[2], rounds=5)
    d.setup()
    run_rounds(d, 3)  # round 4 is training: rounds 1 and 2's globals are no cluster's any more
    past = history(d)
    assert set(past) == {0, 1, 2, 3}
    assert {past[1], past[2]} <= stored_blobs(d), "unscored checkpoints must stay"
    assert d.scripts.record_metric("demo", "w0", 1, past[1], 0.9, 0.3)
    assert past[1] not in stored_blobs(d) and past[2] in stored_blobs(d)
    # The current global is kept even once scored: training reads it.
    assert d.scripts.record_metric("demo", "w1", 3, past[3], 0.9, 0.3)
    assert past[3] in stored_blobs(d) and d.cluster("demo").global_digest == past[3]


@pytest.mark.parametrize("keep", [True, False])
def test_keep_checkpoints_keeps_every_rounds_global(r, keep):
    d = Driver(r, sub=[], clients=[2], workers=[1], rounds=4)
    d.deploy = lambda: d.scripts.deploy(d.root, d.tree, "{}", d.rounds, {},
                                        d.blobs.put(b"test split"), keep)
    d.setup()
    run_rounds(d, 4)
    past = history(d)
    for round_, digest in past.items():
        d.scripts.record_metric("demo", "w0", round_, digest, 0.9, 0.3)
    kept = {round_ for round_, digest in past.items() if digest in stored_blobs(d)}
    # Without checkpoints: the initial candidate and the final model stay, nothing between.
    assert kept == ({0, 1, 2, 3, 4} if keep else {0, 4})
    assert d.cluster("demo").fields["keep_checkpoints"] == ("1" if keep else "0")


def test_rounds_the_job_does_not_evaluate_keep_no_checkpoint_and_take_no_metric(r):
    d = Driver(r, sub=[], clients=[2], workers=[2], rounds=5)
    d.deploy = lambda: d.scripts.deploy(d.root, d.tree, "{}", d.rounds, {},
                                        d.blobs.put(b"test split"), False, 2)
    d.setup()
    run_rounds(d, 4)  # round 5 is training: rounds 1-3's globals are no cluster's any more
    past = history(d)
    kept = {round_ for round_, digest in past.items() if digest in stored_blobs(d)}
    assert kept == {0, 2, 4}  # evaluated (every 2nd) and not scored yet; 4 is also the global
    assert unscored(d) == {0: past[0], 2: past[2], 4: past[4]}
    with pytest.raises(ScriptError, match=r"round 3 is not evaluated \(evaluate_every = 2\)"):
        d.scripts.record_metric("demo", "w0", 3, past[3], 0.9, 0.3)
    assert d.scripts.record_metric("demo", "w0", 2, past[2], 0.9, 0.3)
    assert past[2] not in stored_blobs(d) and set(unscored(d)) == {0, 4}
    d.run_round()  # the last round is evaluated whatever evaluate_every says
    assert set(unscored(d)) == {0, 4, 5}
    assert d.scripts.record_metric("demo", "w1", 5, history(d)[5], 0.9, 0.3)
    assert not d.scripts.record_metric("demo", "w0", 5, history(d)[5], 0.8, 0.3)  # first kept
    assert set(unscored(d)) == {0, 4}
    assert d.cluster("demo").fields["evaluate_every"] == "2"


def test_a_sweep_reads_no_more_as_the_history_grows(r):
    """Which checkpoints live comes from the unscored rounds, not from the whole history: the
    redis calls of a round's last upload stay flat from round 2 to round 30."""
    d = Driver(r, sub=[], clients=[2], workers=[1], rounds=40)
    d.setup()
    calls = []
    for _ in range(30):
        before = d.client.info("commandstats")
        d.run_round()
        after = d.client.info("commandstats")
        calls.append(sum(v["calls"] for v in after.values())
                     - sum(v["calls"] for v in before.values()))
        past = history(d)
        d.scripts.record_metric("demo", "w0", max(past), past[max(past)], 0.9, 0.3)
    assert calls[-1] == calls[2], f"server commands per round: {calls}"
    assert set(unscored(d)) == {0}


def test_a_blob_stored_for_a_refused_call_is_taken_back_unless_live(r):
    d = Driver(r, sub=[], clients=[2], workers=[1], rounds=3)
    share = d.blobs.put(b"c0's share")
    d.deploy = lambda: d.scripts.deploy(d.root, d.tree, "{}", d.rounds, {"demo": {"c0": share}},
                                        d.blobs.put(b"test split"))
    d.setup()
    stale = d.cluster("demo").generation
    d.scripts.start_training("demo", "client", "c0", stale)
    d.run_round()  # the round closes without c0's own parameters (the driver submits for it)
    late = d.blobs.put(b"c0's parameters, trained too long")
    with pytest.raises(ScriptError, match=r"^STALE_GENERATION: .* call is for generation "):
        d.scripts.submit_params("demo", "client", "c0", stale, late, 10)
    assert late in stored_blobs(d)
    assert d.scripts.discard_blob("demo", late) is True
    assert late not in stored_blobs(d)
    assert d.scripts.discard_blob("demo", late) is False  # gone already
    # Live blobs and data stay, whoever asks.
    top = d.cluster("demo")
    test = d.client.get(keys.testset("demo")).decode()
    for keep in (top.global_digest, top.fields["candidate"], test, share):
        assert d.scripts.discard_blob("demo", keep) is False
        assert keep in stored_blobs(d)


def test_discarding_refuses_bad_input_and_changes_nothing(r):
    d = Driver(r, sub=[], clients=[1], workers=[1], rounds=2)
    d.setup()
    before = stored_blobs(d)
    with pytest.raises(ScriptError, match=r"BAD_ARGUMENT: job=demo: 'not-hex' is not a blob "):
        d.scripts.discard_blob("demo", "not-hex")
    with pytest.raises(ScriptError, match=r"\(64 hex digits\)"):
        d.scripts.discard_blob("demo", "ab" * 5000)
    # KEYS[1] must be the named job's root hash: not a sub-cluster's, nor another key.
    _, sha = d.scripts._scripts["discard_blob"]
    for key, root in ((keys.job("demo"), "demo#0"), (keys.sheet("demo"), "demo")):
        with pytest.raises(redis.ResponseError, match=r"BAD_ARGUMENT KEYS\[1\] is "):
            d.client.evalsha(sha, 1, key, root, "ab" * 32)
    with pytest.raises(redis.ResponseError, match=r"BAD_ARGUMENT KEYS\[1\] is nil"):
        d.client.evalsha(sha, 0, "demo", "ab" * 32)
    with pytest.raises(ScriptError, match=r"UNKNOWN_JOB: job=nojob: no such job"):
        d.scripts.discard_blob("nojob", "ab" * 32)
    assert stored_blobs(d) == before
