"""Bad parameters and bad aggregates, sent by real misbehaving node processes.

One job, run once for the module: four clients and three workers on digits. Client c3 is an
adversary (tests/faults/adversary.py) that sends a different kind of garbage each round (a NaN,
a wrong shape, truncated safetensors, bytes under a digest they do not have, an oversized blob)
and honest parameters in the last round; worker w2 uploads a wrong aggregate every round. Each
test below checks one row of docs/reliability.md from what the job left in Redis.

A second job checks robust aggregation: one client of five sends its update scaled by 100, and
`trimmed_mean` keeps the model good.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import redis
from conftest import Job, Outcome, node_env

from hierfl import keys
from hierfl.cli.events import read_all
from hierfl.store.connection import connect

pytestmark = pytest.mark.e2e

BAD_PARAMS_SHEET = """
[job]
name = "garbage"
rounds = 6
seed = 0

[topology]
clients = 4
workers = 3

[training]
lr = 0.1
local_epochs = 5

[data]
dataset = "digits"
partition = "iid"
"""
#: Client c3's garbage, round by round (generation g uses the g-th; the job is one level deep,
#: so generation = round), and the reason every worker must give for excluding it.
GARBAGE = {
    "nan": "non-finite value",
    "shape": "has shape",
    "truncated": "malformed parameter blob",
    "digest": "does not match its digest",
    "oversize": "over the limit",
}
ROUNDS = 6


@dataclass
class Finished:
    outcome: Outcome
    events: list[dict[str, str]]
    logs: dict[str, str]

    def of(self, op: str) -> list[dict[str, str]]:
        return [e for e in self.events if e["op"] == op]


def _run(redis_server, hierfl_home, tmp_path_factory, name: str, source: str,
         adversaries: dict) -> Finished:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    job = Job(name, redis_server.url, node_env(hierfl_home), tmp_path_factory.mktemp(name),
              source, adversaries).deploy()
    try:
        outcome = job.start_all().wait_all()
    finally:
        job.stop()
    reader = connect(redis_server.url)
    try:
        events = [fields for _, fields in read_all(reader, keys.events(name))]
    finally:
        reader.close()
    logs = {f"{role}/{node}": job.log((cluster, role, node)) for cluster, role, node in job.procs}
    print(f"\n{name}: {outcome}")
    return Finished(outcome, events, logs)


@pytest.fixture(scope="module")
def garbage(redis_server, hierfl_home, tmp_path_factory) -> Finished:
    modes = ",".join([*GARBAGE, "honest"])
    return _run(redis_server, hierfl_home, tmp_path_factory, "garbage", BAD_PARAMS_SHEET,
                {("garbage", "client", "c3"): modes, ("garbage", "worker", "w2"): "wrong"})


def test_the_job_completes_despite_a_garbage_client_and_a_lying_worker(garbage):
    assert garbage.outcome.outcome == "completed"
    assert garbage.outcome.rounds == list(range(ROUNDS + 1))
    assert garbage.outcome.accuracy >= 0.9, garbage.outcome


@pytest.mark.parametrize(("generation", "mode"), list(enumerate(GARBAGE, start=1)),
                         ids=list(GARBAGE))
def test_each_bad_submission_is_excluded_with_a_named_reason(garbage, generation, mode):
    excluded = [e for e in garbage.of("excluded") if e["gen"] == str(generation)]
    assert [e["member"] for e in excluded] == ["c3"], excluded
    assert GARBAGE[mode] in excluded[0]["reason"], excluded[0]["reason"]
    # Recorded once for all workers (each worker checked it and came to the same verdict).
    for worker in ("w0", "w1"):
        log = garbage.logs[f"worker/{worker}"]
        assert f"generation {generation}: excluding c3's submission" in log


def test_an_honest_submission_after_garbage_counts_again(garbage):
    assert not [e for e in garbage.of("excluded") if e["gen"] == str(ROUNDS)]
    assert "aggregated 4 submissions" in garbage.logs["worker/w0"]


def test_a_worker_uploading_a_wrong_aggregate_is_outvoted_every_round(garbage):
    consensus = garbage.of("consensus")
    assert [e["gen"] for e in consensus] == [str(g) for g in range(1, ROUNDS + 1)]
    for event in consensus:
        assert event["votes"] == "2" and event["outvoted"] == "w2", event


TRIMMED_SHEET = """
[job]
name = "scaled"
rounds = 5
seed = 0

[topology]
clients = 5
workers = 1

[training]
lr = 0.1
local_epochs = 5

[aggregation]
rule = "trimmed_mean"
trim = 0.2

[data]
dataset = "digits"
partition = "iid"
"""


def test_an_update_scaled_by_100_is_trimmed_away(redis_server, hierfl_home, tmp_path_factory):
    run = _run(redis_server, hierfl_home, tmp_path_factory, "scaled", TRIMMED_SHEET,
               {("scaled", "client", "c4"): "scale"})
    assert run.outcome.outcome == "completed"
    assert "publishing scale parameters" in run.logs["client/c4"]
    assert not run.of("excluded")  # finite and well-formed: only the rule can stop it
    assert run.outcome.accuracy >= 0.9, run.outcome
