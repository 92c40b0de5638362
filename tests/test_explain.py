"""`hierfl explain`: what a stuck job waits for, pointed at the member that blocks it."""

from __future__ import annotations

import json

import pytest
from driver import Driver
from typer.testing import CliRunner

from hierfl.cli.app import app
from hierfl.explain import SUB_CLUSTER, Finding, explain, render_text
from hierfl.protocol import NodeStatus


def by_cluster(findings: list[Finding]) -> dict[str, Finding]:
    return {f.cluster: f for f in findings[1:]}


def leaf_ids(finding: Finding) -> list[tuple[str, str, str, int]]:
    return [(b.cluster, b.role, b.node, b.status) for b in finding.leaves]


@pytest.fixture
def driver(r) -> Driver:
    return Driver(r)


def ack_jobsheets_except(d: Driver, missing: tuple[str, str, str]) -> None:
    for node in d.nodes():
        if node != missing:
            d.scripts.ack_jobsheet(*node)


def test_a_client_that_never_started_is_named_with_its_cluster_and_status(driver):
    driver.deploy()
    ack_jobsheets_except(driver, ("demo#1", "client", "c1"))
    findings = explain(driver.job())
    head = findings[0]
    assert head.phase == "job" and head.cluster == "demo"
    assert leaf_ids(head) == [("demo#1", "client", "c1", NodeStatus.DEPLOYED)]
    assert head.text == "running, round 0 of 2, jobsheet stage"
    clusters = by_cluster(findings)
    assert clusters["demo"].phase == "jobsheet"
    [sub] = clusters["demo"].blockers
    assert (sub.role, sub.node, sub.status) == (SUB_CLUSTER, "demo#1", NodeStatus.DEPLOYED)
    assert [b.node for b in clusters["demo#1"].blockers] == ["c1"]
    assert clusters["demo#0"].blockers == () and clusters["demo#0"].defers_to == "demo"
    assert leaf_ids(clusters["demo#0"]) == leaf_ids(head)  # it waits on the same client
    lines = render_text(findings).splitlines()
    assert lines[:2] == ["job demo: running, round 0 of 2, jobsheet stage",
                         "held up by: client c1 of demo#1 (status deployed — never started?)"]
    assert "waiting for job-sheet ACKs from client c1 (deployed — never started?)" in lines[-1]


def test_a_client_that_has_not_submitted_holds_up_the_round(driver):
    driver.setup()
    driver.run_round()  # round 1 complete: every client is DONE from the previous generation
    driver.train_cluster("demo#0")
    driver.aggregate_cluster("demo#0")  # demo#0 submitted to demo and went idle
    gen = driver.cluster("demo#1").generation
    driver.scripts.start_training("demo#1", "client", "c0", gen)  # c0 busy; c1 not started
    findings = explain(driver.job())
    clusters = by_cluster(findings)
    assert clusters["demo#0"].phase == "idle" and clusters["demo#0"].defers_to == "demo"
    assert clusters["demo"].phase == "training"
    assert [b.node for b in clusters["demo"].blockers] == ["demo#1"]
    notes = {b.node: (b.status, b.note) for b in clusters["demo#1"].blockers}
    assert notes == {
        "c0": (NodeStatus.BUSY, "still training"),
        "c1": (NodeStatus.DONE, "finished the previous generation, not started this one"),
    }
    assert [b.node for b in findings[0].leaves] == ["c0", "c1"]
    assert findings[0].text == "running, round 2 of 2, training stage"
    assert "generation 2, round 2: waiting for submissions from client c0" in \
        clusters["demo#1"].text


def test_a_sub_cluster_waits_on_its_workers(driver):
    driver.setup()
    for name in ("demo#0", "demo#1"):
        driver.train_cluster(name)
    driver.aggregate_cluster("demo#0")
    gen = driver.cluster("demo#1").generation
    digest = driver.blobs.put(b"aggregate demo#1")
    driver.scripts.start_aggregation("demo#1", "worker", "w0", gen)
    driver.scripts.upload_aggregate("demo#1", "worker", "w0", gen, digest)
    findings = explain(driver.job())
    clusters = by_cluster(findings)
    assert clusters["demo#1"].phase == "aggregating"
    [w1] = clusters["demo#1"].blockers
    assert (w1.role, w1.node, w1.status) == ("worker", "w1", NodeStatus.DATASET_ACKED)
    assert leaf_ids(findings[0]) == [("demo#1", "worker", "w1", NodeStatus.DATASET_ACKED)]
    assert "waiting for aggregates from worker w1 (dataset_acked" in clusters["demo#1"].text


def test_a_finished_job_says_so_then_waits_for_exits(driver):
    driver.setup()
    for _ in range(driver.rounds):
        driver.run_round()
    findings = explain(driver.job())
    assert findings[0].text.startswith("completed after 2 of 2 rounds; waiting for exits")
    assert {b.node for b in findings[0].leaves} == {"c0", "c1", "w0", "w1"}
    driver.scripts.ack_exit("demo#0", "client", "c0")
    assert ("demo#0", "client", "c0") not in {(b.cluster, b.role, b.node)
                                             for b in explain(driver.job())[0].leaves}
    driver.exit_all()
    findings = explain(driver.job())
    assert len(findings) == 1
    assert findings[0].text == "completed after 2 of 2 rounds; every node has exited"


def test_a_failed_job_gives_the_reason(driver):
    driver.setup()
    driver.train_cluster("demo#0")
    a, b = driver.blobs.put(b"one"), driver.blobs.put(b"two")
    driver.aggregate_cluster("demo#0", digests={"w0": a, "w1": b})
    driver.aggregate_cluster("demo#0", digests={"w0": a, "w1": b})  # the re-run disagrees too
    head = explain(driver.job())[0]
    assert head.text.startswith("failed: cluster demo#0 failed (no 2 matching aggregates among "
                                "the 2 uploaded in cluster demo#0)")


@pytest.fixture
def cli(redis_url, monkeypatch):
    monkeypatch.setenv("HIERFL_REDIS_URL", redis_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_explain_text_and_json(cli, r):
    d = Driver(r)
    d.deploy()
    ack_jobsheets_except(d, ("demo#1", "client", "c1"))
    result = cli("explain", "demo")
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()[:2]
    assert first == "job demo: running, round 0 of 2, jobsheet stage"
    assert second == "held up by: client c1 of demo#1 (status deployed — never started?)"
    data = json.loads(cli("explain", "demo", "--json").output)
    assert data["job"] == "demo" and data["finished"] is False
    [leaf] = data["findings"][0]["leaves"]
    assert leaf == {"cluster": "demo#1", "role": "client", "node": "c1", "status": "deployed",
                    "note": "never started?"}


def test_cli_explain_unknown_job(cli):
    result = cli("explain", "ghost")
    assert result.exit_code == 1 and "job=ghost: no such job" in result.output
