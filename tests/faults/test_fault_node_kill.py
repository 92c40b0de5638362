"""A node SIGKILLed (or SIGTERMed) in the middle of its step and restarted with the same
--cluster/--id.

The victim runs with the test hook HIERFL_TEST_PAUSE_AFTER (hierfl/node/runtime.py), so it
sleeps right after its start_training / start_aggregation call in generation 2: Redis shows it
busy, nothing of its result exists yet, and the test kills it exactly there. The restarted node
reads its status (busy, generation 2), repeats the start call (a no-op success) and redoes the
step with the same seed on the same inputs, so the job ends with the same final digest as the
undisturbed run — a stronger check than accuracy within 0.02, which it implies.

SIGTERM instead of SIGKILL: the node abandons the step itself, says how to resume, and exits 0.
"""

from __future__ import annotations

import signal
import time

import pytest
from conftest import wait_for

from hierfl.protocol import NodeStatus, ProcessStage
from hierfl.store.state import read_cluster

pytestmark = pytest.mark.e2e

PAUSE = {"HIERFL_TEST_PAUSE_SECONDS": "120"}


@pytest.mark.parametrize(
    ("slot", "step", "stage", "sig"),
    [
        (("victim#0", "client", "c0"), "start_training", ProcessStage.TRAINING, signal.SIGKILL),
        (("victim", "worker", "w0"), "start_aggregation", ProcessStage.AGGREGATING,
         signal.SIGKILL),
        (("victim#1", "client", "c1"), "start_training", ProcessStage.TRAINING, signal.SIGTERM),
    ],
    ids=["client-sigkill-mid-training", "worker-sigkill-mid-aggregation",
         "client-sigterm-mid-training"],
)
def test_stopped_node_restarted_with_its_slot_finishes_the_job(
    new_job, r, undisturbed, slot, step, stage, sig
):
    cluster, role, node = slot
    job = new_job("victim").start_all({slot: {**PAUSE, "HIERFL_TEST_PAUSE_AFTER": f"{step}@2"}})

    caught = wait_for(r, cluster, lambda s: s.generation == 2 and s.status_of(role, node)
                      == NodeStatus.BUSY)
    assert caught.process_stage == stage
    job.wait_log(slot, "TEST HOOK: pausing")
    signalled = time.monotonic()
    job.procs[slot].send_signal(sig)
    code = job.procs[slot].wait(timeout=10)
    stopped_in = time.monotonic() - signalled
    log = job.log(slot)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 0, log
        assert f"stopped; restart with --cluster {cluster} --id {node} to resume" in log
        assert "Traceback" not in log
    # Gone in the middle of its step: busy in generation 2, with nothing submitted.
    state = read_cluster(r, cluster)
    assert state.generation == 2 and state.process_stage == stage
    assert state.status_of(role, node) == NodeStatus.BUSY
    assert node not in (state.submitted if role == "client" else state.uploaded)

    restarted = time.monotonic()
    job.start(slot)  # the same --cluster/--id, without the hook
    outcome = job.wait_all()
    resumed = time.monotonic() - restarted

    assert outcome.outcome == "completed" and outcome.rounds == undisturbed.rounds
    assert abs(outcome.accuracy - undisturbed.accuracy) <= 0.02
    assert outcome.digest == undisturbed.digest  # redone deterministically: the same model
    print(f"\n{sig.name} {role} after {step}: exit {code} in {stopped_in:.2f} s; job done "
          f"{resumed:.1f} s after the restart; {outcome}; undisturbed {undisturbed.seconds:.1f} s")
