"""Cancelling and deleting jobs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from driver import Driver

from hierfl import keys
from hierfl.errors import IllegalTransition, UnknownJob
from hierfl.lifecycle import cancel_job, delete_job
from hierfl.protocol import Outcome, ProcessStage
from hierfl.store.state import list_jobs, read_cluster
from hierfl.store.waiter import KeyWaiter


def tree_keys(r, root="demo") -> list[bytes]:
    return list(r.scan_iter(match=keys.tree_pattern(root), count=1000))


def test_cancel_stops_every_cluster_and_only_once(r):
    d = Driver(r, sub=[2])
    d.setup()
    assert cancel_job(r, "demo", "testing") == 3
    job = d.job()
    assert job.top.outcome == Outcome.CANCELLED.value
    assert job.top.fields["reason"] == "testing"
    assert {c.process_stage for c in job.clusters.values()} == {ProcessStage.FINISHED}
    before = d.dump()
    with pytest.raises(IllegalTransition, match="cannot cancel a job that has cancelled"):
        cancel_job(r, "demo")
    assert d.dump() == before
    with pytest.raises(UnknownJob, match="job=ghost: no such job"):
        cancel_job(r, "ghost")


def test_delete_is_refused_while_nodes_are_live_and_then_leaves_nothing(r):
    d = Driver(r, sub=[2])
    d.setup()
    d.scripts.register_job("demo")
    before = d.dump()
    with pytest.raises(IllegalTransition, match=r"node\(s\) are still live"):
        delete_job(r, "demo")
    assert d.dump() == before
    assert delete_job(r, "demo", force=True) > 0
    assert tree_keys(r) == [] and list_jobs(r) == []


def test_delete_of_a_finished_job_needs_no_force(r):
    d = Driver(r, sub=[], clients=[2], workers=[1], rounds=1)
    d.setup()
    d.run_round()
    d.exit_all()
    delete_job(r, "demo")
    assert tree_keys(r) == []


def test_delete_of_a_job_nobody_joined_needs_no_force(r):
    Driver(r).deploy()
    delete_job(r, "demo")
    assert tree_keys(r) == []


@pytest.mark.e2e
def test_cancel_mid_round_ends_every_node_process_cleanly(r, hierfl_env):
    run = [sys.executable, "-m", "hierfl"]
    subprocess.run([*run, "init-job", "demo", "--sub", "1", "--clients", "2", "--workers", "1",
                    "--rounds", "500"], env=hierfl_env, check=True, capture_output=True)
    slots = [("demo", "worker", "w0"), ("demo#0", "worker", "w0"), ("demo#0", "client", "c0"),
             ("demo#0", "client", "c1")]
    procs = [subprocess.Popen([*run, "node", "--role", role, "--cluster", cluster, "--id", node],
                              env=hierfl_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for cluster, role, node in slots]
    with KeyWaiter(r, [keys.job("demo")]) as waiter:
        waiter.until(lambda: read_cluster(r, "demo"), lambda s: s.round >= 3,
                     deadline=time.monotonic() + 120)
    result = subprocess.run([*run, "cancel", "demo"], env=hierfl_env, capture_output=True,
                            text=True)
    started = time.monotonic()
    assert result.returncode == 0 and "cancelled" in result.stdout
    codes = [p.wait(timeout=30) for p in procs]
    elapsed = time.monotonic() - started
    assert codes == [0, 0, 0, 0], [p.stdout.read().decode()[-500:] for p in procs]
    assert elapsed < 10, f"nodes took {elapsed:.1f} s to exit"
    top = read_cluster(r, "demo")
    assert top.outcome == Outcome.CANCELLED.value and top.exited
    assert subprocess.run([*run, "delete", "demo"], env=hierfl_env).returncode == 0
    assert tree_keys(r) == []


@pytest.mark.e2e
def test_a_run_that_times_out_cancels_its_job(r, hierfl_env, tmp_path):
    sheet = tmp_path / "slow.toml"
    sheet.write_text('[job]\nname = "slow"\nrounds = 50\n[topology]\nclients = 2\nworkers = 1\n')
    result = subprocess.run([sys.executable, "-m", "hierfl", "run", str(sheet), "--timeout", "2",
                             "--runs-dir", str(tmp_path)], env=hierfl_env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "did not finish within 2 s" in result.stderr
    top = read_cluster(r, "slow")
    assert top.outcome == Outcome.CANCELLED.value
    assert "hierfl run stopped: job slow did not finish within 2 s" in top.fields["reason"]


def test_a_node_waiting_for_its_job_says_so_once_however_often_it_wakes(r, caplog):
    import logging
    import threading

    from hierfl.node.claim import NoFreeSlot, claim_slot
    from hierfl.protocol import Role

    outcome: list[BaseException] = []

    def wait_for_ghost() -> None:
        try:
            claim_slot(r, Role.CLIENT, job="ghost", timeout=1.5)
        except NoFreeSlot as exc:
            outcome.append(exc)

    with caplog.at_level(logging.DEBUG, logger="hierfl.node.claim"):
        waiting = threading.Thread(target=wait_for_ghost)
        waiting.start()
        for name in ("other1", "other2", "other3"):  # each registry change wakes it
            time.sleep(0.2)
            Driver(r, name, sub=[], clients=[1], workers=[1]).deploy()
        waiting.join(10)
    assert outcome and "no free client slot appeared within 1.5 s" in str(outcome[0])
    said = [rec for rec in caplog.records if "waiting for it to be deployed" in rec.message]
    assert said[0].message == "no job ghost yet; waiting for it to be deployed"
    assert [rec.levelno for rec in said][:1] == [logging.INFO] and len(said) >= 2
    assert all(rec.levelno == logging.DEBUG for rec in said[1:])
