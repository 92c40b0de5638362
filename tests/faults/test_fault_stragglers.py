"""Stragglers and dropouts: deadlines from the server's clock, min_clients per level, fencing of
late submissions, and what `hierfl explain` says when no deadline is set.

With deadlines: a two-level job (two sub-clusters of three clients, min_clients 2 below the
root and 1 at the root) where
- #0's client c2 is killed in round 1 and never restarted: #0 closes every round without it;
- #1's client c2 is killed in round 2 and never restarted, and #1's client c1 sleeps through
  round 2's deadline: #1 has one submission by then, fails that round with its reason, and the
  root goes on with #0 alone as soon as #0 submits; c1's late submission for round 2 (trained
  on round 2's model, kept by keep_checkpoints) is refused by fencing, and it rejoins in
  round 3.
Without deadlines: a killed client holds its round, and `hierfl explain` names it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import wait_for

from hierfl import keys
from hierfl.cli.events import read_all
from hierfl.explain import status_name
from hierfl.protocol import NodeStatus, ProcessStage

pytestmark = pytest.mark.e2e

TOLERANT_SHEET = """
[job]
name = "strag"
rounds = 3
seed = 0
keep_checkpoints = true  # so that round 2's model is still there when the late client wakes

[topology]
sub = [2]
clients = [0, 3]
workers = [1, 1]

[training]
lr = 0.1
local_epochs = 5

[data]
dataset = "digits"
partition = "iid"

[tolerance]
round_timeout = [24, 10]
min_clients = [1, 2]
"""


def _hook(step: str, seconds: float) -> dict[str, str]:
    return {"HIERFL_TEST_PAUSE_AFTER": step, "HIERFL_TEST_PAUSE_SECONDS": str(seconds)}


def test_deadlines_drop_dead_and_late_members_and_the_job_completes(new_job, r):
    name = "strag"
    dead0, dead1, late = (f"{name}#0", "client", "c2"), (f"{name}#1", "client", "c2"), \
        (f"{name}#1", "client", "c1")
    job = new_job(name, source=TOLERANT_SHEET).start_all({
        dead0: _hook("start_training@1", 300),
        dead1: _hook("start_training@2", 300),
        late: _hook("start_training@2", 15),  # round 2's deadline is 10 s after it starts
    })
    for slot in (dead0, dead1):
        job.wait_log(slot, "TEST HOOK: pausing", timeout=180)
        job.kill(slot)
        del job.procs[slot]  # never restarted
    outcome = job.wait_all()

    stream = list(read_all(r, keys.events(name)))
    events = [fields for _, fields in stream]

    def of(op: str, cluster: str) -> dict[str, dict[str, str]]:
        """The events of one kind in one cluster, by the root's round."""
        return {e["round"]: e for e in events if e["op"] == op and e["cluster"] == cluster}

    assert outcome.outcome == "completed" and outcome.rounds == [0, 1, 2, 3], outcome
    assert outcome.accuracy >= 0.85, outcome
    # #0 goes on without its dead client every round.
    assert {r_: e["members"] for r_, e in of("dropped", f"{name}#0").items()} == {
        "1": "c2", "2": "c2", "3": "c2"}
    # #1 loses c2 for good in round 2, when c1 is late too: too few, it fails that round ...
    failed = of("cluster_failed", f"{name}#1")
    assert list(failed) == ["2"]
    assert failed["2"]["reason"] == ("only 1 of 3 members submitted by the deadline "
                                     "(min_clients 2)")
    assert {r_: e["members"] for r_, e in of("dropped", f"{name}#1").items()} == {"3": "c2"}
    # ... and the root (min_clients 1) closes round 2 with #0 alone as soon as both are in,
    # #1 failed and #0 submitted (nothing else can come), not at its own deadline.
    assert {r_: e["members"] for r_, e in of("dropped", name).items()} == {"2": f"{name}#1"}
    at = {(e["op"], e["cluster"], e["round"]): int(id_.split("-")[0]) for id_, e in stream}
    root_round_2 = at["dropped", name, "2"] - at["generation", name, "2"]
    assert root_round_2 < 24_000 - 3_000, root_round_2
    # c1's submission for round 2 came after the deadline: refused, nothing of it counted;
    # it rejoined in round 3.
    assert "step refused" in job.log(late)
    submitted = [e["round"] for e in events
                 if e["op"] == "submit_params" and e["cluster"] == f"{name}#1"
                 and e["node"] == "client/c1"]
    assert submitted == ["1", "3"]
    # The blob it stored for the refused call was taken back: what is left at the end is the
    # data, every round's model (keep_checkpoints) and the last generation's submissions and
    # aggregates (what lib/retire keeps of a finished job), nothing else an earlier round left.
    assert "stored for the refused call" in job.log(late)
    clusters = (name, f"{name}#0", f"{name}#1")
    stored = {k.decode().rsplit(":", 1)[1] for k in r.scan_iter(match=keys.blob(name, "*"))}
    history = {int(k): v.decode() for k, v in r.hgetall(keys.history(name)).items()}
    data = {r.get(keys.testset(name)).decode()} | {
        v.decode() for c in clusters for v in r.hvals(keys.shares(c))}
    last = {v.decode() for c in clusters
            for v in r.hvals(keys.submissions(c)) + r.hvals(keys.aggregates(c))}
    assert sorted(history) == [0, 1, 2, 3]
    assert stored == data | set(history.values()) | last
    print(f"\n{outcome}; the root closed round 2 after {root_round_2 / 1000:.1f} s")


NO_DEADLINE_SHEET = TOLERANT_SHEET.split("[tolerance]")[0]


def test_without_a_deadline_explain_names_the_dead_client(new_job, r, redis_url):
    name = "stuck"
    dead = (f"{name}#0", "client", "c1")
    job = new_job(name, source=NO_DEADLINE_SHEET).start_all(
        {dead: _hook("start_training@1", 300)})
    job.wait_log(dead, "TEST HOOK: pausing", timeout=180)
    job.kill(dead)
    # Everyone else has done their part of round 1: #1 submitted to the root, #0 has every
    # submission but c1's.
    wait_for(r, f"{name}#0", lambda s: s.process_stage == ProcessStage.TRAINING
             and sorted(s.submitted) == ["c0", "c2"])
    wait_for(r, f"{name}#1", lambda s: s.process_stage == ProcessStage.IDLE)

    shown = subprocess.run(
        [sys.executable, "-m", "hierfl", "explain", name, "--redis", redis_url],
        capture_output=True, text=True, timeout=60, env=job.env)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"held up by: client c1 of {name}#0 (status {status_name(NodeStatus.BUSY)}" in text, text
    assert "still training" in text, text

    subprocess.run([sys.executable, "-m", "hierfl", "cancel", name, "--redis", redis_url],
                   check=True, capture_output=True, timeout=60, env=job.env)
    del job.procs[dead]
    job.wait_all()
