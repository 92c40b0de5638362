"""Model check: random trees and random interleavings of legal and illegal operations, run
against the Lua scripts on a real redis-server and against the pure-Python reference model.
After every step the whole Redis state must equal the model's; every refusal must carry the
model's error code and leave every key of the tree byte-identical.

`pytest --hypothesis-profile thorough tests/test_model_check.py` runs thousands of examples.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import redis
from driver import tree_dump
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from hierfl import keys
from hierfl.errors import ScriptError
from hierfl.jobtree import ClusterSpec, Tolerance, child_name
from hierfl.protocol import TRANSITIONS, NodeStatus, ProcessStage
from hierfl.reference import JobModel, Refusal
from hierfl.store.blobs import BlobStore, digest_of
from hierfl.store.scripts import Scripts

ROOT = "mc"
TIMESTAMPS = {"created_at", "updated_at"}
STATIC = ("free", "sheet", "testset")  # written by deploy only


# -- random trees ---------------------------------------------------------------------------

@st.composite
def trees(draw) -> list[ClusterSpec]:
    """Depth 1 to 3, 1 to 4 sub-clusters or clients per cluster, 1 to 3 workers; some clusters
    have both direct clients and sub-clusters."""
    depth = draw(st.integers(0, 2))
    specs: list[ClusterSpec] = []
    # Deadlines of 1 ms have always passed when the check calls close_round (it waits 2 ms).
    tolerance = Tolerance(round_timeout_ms=draw(st.sampled_from([0, 0, 1])),
                          min_clients=draw(st.integers(0, 2)),
                          aggregation_timeout_ms=draw(st.sampled_from([0, 0, 1])),
                          quorum=draw(st.integers(0, 1)))

    def add(name: str, parent: str | None, level: int) -> None:
        n_sub = draw(st.integers(1, 3 if level == 0 else 2)) if level < depth else 0
        n_clients = draw(st.integers(0 if n_sub else 1, 2 if n_sub else 4))
        spec = ClusterSpec(
            name=name, parent=parent, level=level,
            children=[child_name(name, i) for i in range(n_sub)],
            clients=[f"c{i}" for i in range(n_clients)],
            workers=[f"w{i}" for i in range(draw(st.integers(1, 3)))],
            cluster_epochs=draw(st.integers(1, 2)) if level else 1,
            tolerance=tolerance,
        )
        specs.append(spec)
        for child in spec.children:
            add(child, name, level + 1)

    add(ROOT, None, 0)
    return specs


# -- reading the whole tree ------------------------------------------------------------------

#: Every key of a tree, its type and contents, read in one call and sent back as one JSON
#: string: the check reads the whole tree after every step, and parsing a reply per key in
#: redis-py took half its time.
READ_TREE = """
local out = {}
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  local kind = redis.call('TYPE', key).ok
  local value = 1
  if kind == 'hash' then value = redis.call('HGETALL', key)
  elseif kind == 'list' then value = redis.call('LRANGE', key, 0, -1)
  elseif kind == 'stream' then value = redis.call('XLEN', key) end
  out[#out + 1] = {key, kind, value}
end
return cjson.encode(out)
"""


def redis_state(client: redis.Redis) -> dict:
    """The tree as the model describes it: hashes without timestamps, a string by its being
    there, a stream by its length; the keys deploy alone writes are left out."""
    found = sorted(json.loads(client.eval(READ_TREE, 0, keys.tree_pattern(ROOT))))
    found = [(key, kind, _pairs(value) if kind == "hash" else value)
             for key, kind, value in found]
    state = {}
    for key, kind, value in found:
        if any(f":{s}" in key for s in STATIC):
            continue
        if key.endswith(":metrics"):
            value = sorted(value)  # the figures are the workers' business
        elif kind == "hash":
            value = {k: v for k, v in value.items() if k not in TIMESTAMPS}
            if value.get("deadline"):
                value["deadline"] = "set"  # server time: the model only knows it is set
        state[key] = value
    return state


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def model_state(model: JobModel) -> dict:
    state: dict = {}
    for c in model.clusters.values():
        state[keys.job(c.name)] = model.cluster_fields(c)
        state[keys.stages(c.name)] = model.stage_fields(c)
        state[keys.clients(c.name)] = {k: str(int(v)) for k, v in c.clients.items()}
        state[keys.workers(c.name)] = {k: str(int(v)) for k, v in c.workers.items()}
        for key, values in ((keys.submissions(c.name), c.submissions),
                            (keys.samples(c.name), c.sample_counts),
                            (keys.aggregates(c.name), c.aggregates),
                            (keys.excluded(c.name), c.excluded)):
            if values:
                state[key] = {k: str(v) for k, v in values.items()}
    if model.history:
        state[keys.history(ROOT)] = {str(k): v for k, v in model.history.items()}
    if model.unscored:
        state[keys.unscored(ROOT)] = {str(k): v for k, v in model.unscored.items()}
    if model.scored:
        state[keys.metrics(ROOT)] = sorted(str(r) for r in model.scored)
    for digest in model.blobs:
        state[keys.blob(ROOT, digest)] = 1
    state[keys.events(ROOT)] = model.events
    return dict(sorted(state.items()))


def dump(client: redis.Redis) -> dict:
    return tree_dump(client, ROOT)


# -- operations --------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    name: str
    cluster: str
    role: str
    node: str
    args: tuple = ()

    def __str__(self) -> str:
        return f"{self.name}({self.cluster}, {self.role}/{self.node}, {self.args})"


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self, client: redis.Redis) -> None:
        super().__init__()
        self.client = client
        self.scripts = Scripts(client)
        self.blobs = BlobStore(client, ROOT)
        self.model: JobModel | None = None
        self.counter = 0
        self.high_water: dict[str, tuple[int, int]] = {}

    @initialize(tree=trees(), rounds=st.integers(1, 3), keep=st.booleans(),
                every=st.integers(0, 2))
    def deploy(self, tree: list[ClusterSpec], rounds: int, keep: bool, every: int) -> None:
        self.client.flushdb()
        note(f"tree: {[(s.name, len(s.clients), len(s.workers), s.cluster_epochs) for s in tree]}"
             f" rounds={rounds} keep_checkpoints={keep} evaluate_every={every}")
        testset = self.blobs.put(b"test split")
        self.scripts.deploy(ROOT, tree, "{}", rounds, {}, testset, keep, every)
        self.model = JobModel.deploy(ROOT, tree, rounds, keep, every)
        self.model.blobs.add(testset)
        self.nodes = [(s.name, role, n) for s in tree
                      for role, ids in (("client", s.clients), ("worker", s.workers))
                      for n in ids]
        self.sub_members = [(s.name, "client", child) for s in tree for child in s.children]

    # -- drawing operations ------------------------------------------------------------------

    def blob(self, label: str) -> str:
        """A stored blob, known to both sides."""
        digest = self.blobs.put(label.encode())
        self.model.blobs.add(digest)
        return digest

    def fresh(self) -> str:
        self.counter += 1
        return self.blob(f"blob {self.counter}")

    def canonical(self, name: str, cluster: str, role: str, node: str, odd: bool) -> Op:
        """The op a well-behaved node would send now."""
        c = self.model.clusters.get(cluster)
        gen = c.generation if c else 0
        if name == "close_round":
            return Op(name, cluster, role, node, (gen,))
        if name == "report_exclusion":
            pending = sorted(set(c.submissions) - set(c.excluded)) if c else []
            member = pending[0] if pending else "c0"
            return Op(name, cluster, role, node, (gen, member, f"bad params from {member}"))
        if name == "ack_dataset":
            # A root worker must offer while none is kept; a sub-cluster's worker may.
            offer = (self.fresh() if role == "worker" and self.model.candidate is None
                     and (cluster == ROOT or odd) else "")
            return Op(name, cluster, role, node, (offer,))
        if name in ("start_training", "start_aggregation"):
            return Op(name, cluster, role, node, (gen,))
        if name == "submit_params":
            return Op(name, cluster, role, node, (gen, self.blob(f"{cluster}/{node}/{gen}"), 7))
        if name == "upload_aggregate":
            label = f"odd {cluster}/{node}/{gen}" if odd else f"agg {cluster}/{gen}"
            return Op(name, cluster, role, node, (gen, self.blob(label)))
        return Op(name, cluster, role, node)

    def enabled(self) -> list[tuple[str, str, str, str]]:
        """(transition, cluster, role, node) of every call that would move a node now, and
        ("close_round", cluster, "", "") where a deadline could close a phase."""
        moves = [(t.name, cluster, role, node) for cluster, role, node in self.nodes
                 for t in TRANSITIONS
                 if role in t.roles and self.model.can_move(t.name, cluster, role, node)]
        closes = [("close_round", c.name, "", "") for c in self.model.clusters.values()
                  if c.deadline and c.process_stage in (ProcessStage.TRAINING,
                                                        ProcessStage.AGGREGATING)]
        exclusions = [("report_exclusion", c.name, "worker", w) for c in
                      self.model.clusters.values() for w in c.workers
                      if c.process_stage == ProcessStage.AGGREGATING
                      and set(c.submissions) - set(c.excluded)]
        return moves + closes + exclusions

    # -- rules -------------------------------------------------------------------------------

    @rule(data=st.data(), odd=st.booleans())
    def legal_step(self, data, odd: bool) -> None:
        ops = self.enabled()
        if ops:
            self.apply(self.canonical(*data.draw(st.sampled_from(ops)), odd=odd))

    @rule(data=st.data(), steps=st.integers(1, 12))
    def legal_burst(self, data, steps: int) -> None:
        for _ in range(steps):
            ops = self.enabled()
            if not ops:
                return
            self.apply(self.canonical(*data.draw(st.sampled_from(ops)), odd=False))

    @rule(data=st.data())
    def any_step(self, data) -> None:
        cluster, role, node = data.draw(st.sampled_from(
            self.nodes + self.sub_members + [(ROOT, "client", "ghost"), (ROOT + "#9", "worker",
                                                                          "w0")]))
        name = data.draw(st.sampled_from([t.name for t in TRANSITIONS]
                                         + ["close_round", "report_exclusion"]))
        op = self.canonical(name, cluster, role, node, odd=data.draw(st.booleans()))
        mutation = data.draw(st.sampled_from(["none", "gen-1", "gen+1", "unstored", "nothex",
                                              "zero", "role"]))
        self.apply(self.mutate(op, mutation))

    @rule(data=st.data(), wrong=st.booleans())
    def score_round(self, data, wrong: bool) -> None:
        """A root worker records a round's metric (which retires that round's global)."""
        if not self.model.history:
            return
        round_ = data.draw(st.sampled_from(sorted(self.model.history)))
        node = data.draw(st.sampled_from([*sorted(self.model.top.workers), "ghost"]))
        digest = "ab" * 32 if wrong else self.model.history[round_]
        note(f"record_metric {node} round {round_} {digest[:8]}")
        try:
            expected, refusal = self.model.record_metric(node, round_, digest), None
        except Refusal as exc:
            expected, refusal = None, exc
        try:
            got, error = self.scripts.record_metric(ROOT, node, round_, digest, 0.5, 1.0), None
        except ScriptError as exc:
            got, error = None, exc
        if refusal is not None:
            assert error is not None and error.code == refusal.code, f"{error} vs {refusal}"
            return
        assert error is None and got == bool(expected)
        assert redis_state(self.client) == model_state(self.model), "after record_metric"

    def mutate(self, op: Op, how: str) -> Op:
        args = list(op.args)
        if how in ("gen-1", "gen+1") and args and isinstance(args[0], int):
            args[0] += -1 if how == "gen-1" else 1
        elif how in ("unstored", "nothex") and len(args) >= 2:
            args[1] = "ab" * 32 if how == "unstored" else "../etc"
        elif how == "zero" and op.name == "submit_params":
            args[2] = 0
        elif how == "role":
            return Op(op.name, op.cluster, "worker" if op.role == "client" else "client",
                      op.node, op.args)
        return Op(op.name, op.cluster, op.role, op.node, tuple(args))

    # -- one step on both sides ----------------------------------------------------------------

    def apply(self, op: Op) -> None:
        note(str(op))
        if op.name == "close_round":
            time.sleep(0.002)  # every 1 ms deadline has passed
            model_call = lambda: self.model.close_round(op.cluster, *op.args)  # noqa: E731
            redis_call = lambda: self.scripts.close_round(op.cluster, *op.args)  # noqa: E731
        else:
            model_call = lambda: self.model.apply(  # noqa: E731
                op.name, op.cluster, op.role, op.node, *op.args)
            redis_call = lambda: getattr(self.scripts, op.name)(  # noqa: E731
                op.cluster, op.role, op.node, *op.args)
        try:  # the model, like the scripts, checks everything before its first change
            expected = model_call()
            refusal = None
        except Refusal as exc:
            refusal = exc
        before = dump(self.client) if refusal else None
        try:
            got = redis_call()
            error = None
        except ScriptError as exc:
            error = exc
        if refusal is not None:
            assert error is not None, f"{op}: model refused ({refusal}) but Redis accepted"
            assert error.code == refusal.code, f"{op}: Redis said {error}, model {refusal}"
            after = dump(self.client)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            detail = {k.decode(): (before.get(k), after.get(k)) for k in changed}
            assert not changed, f"{op}: a refusal ({error}) changed {detail}"
            return
        assert error is None, f"{op}: Redis refused ({error}) but the model accepted"
        assert got == expected
        assert redis_state(self.client) == model_state(self.model), f"after {op}"

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def stages_are_lowest_member_status(self) -> None:
        if self.model is None:
            return
        for c in self.model.clusters.values():
            assert c.client_stage == min(c.clients.values())
            assert c.worker_stage == min(c.workers.values())

    @invariant()
    def generation_and_round_never_go_down(self) -> None:
        if self.model is None:
            return
        for c in self.model.clusters.values():
            last = self.high_water.get(c.name, (0, 0))
            assert c.generation >= last[0] and c.round >= last[1]
            self.high_water[c.name] = (c.generation, c.round)

    @invariant()
    def uploads_point_at_verified_blobs(self) -> None:
        if self.model is None:
            return
        for c in self.model.clusters.values():
            done = {n for n, s in c.clients.items() if s == NodeStatus.DONE and n in
                    c.submissions}
            for member in done:
                data = self.client.get(keys.blob(ROOT, c.submissions[member]))
                assert data is not None and digest_of(data) == c.submissions[member]
            for digest in c.aggregates.values():
                data = self.client.get(keys.blob(ROOT, digest))
                assert data is not None and digest_of(data) == digest

    @invariant()
    def live_blobs_are_never_retired(self) -> None:
        """Every global, submission, aggregate and unscored checkpoint a live round names is
        still stored (which blobs go is checked step by step: Redis equals the model)."""
        if self.model is None:
            return
        live = self.model._live_blobs() - {""}
        stored = {k.decode().rsplit(":", 1)[1] for k in
                  self.client.scan_iter(match=keys.blob(ROOT, "*"), count=1000)}
        assert live <= stored, f"live blobs missing: {sorted(live - stored)}"

    @invariant()
    def finished_trees_only_exit(self) -> None:
        if self.model is not None:
            event(f"outcome {self.model.outcome}, root round {self.model.top.round}")
        if self.model is None or self.model.top.process_stage != ProcessStage.FINISHED:
            self.frozen = None
            return
        frozen = {name: (c.generation, c.round, c.global_digest, c.process_stage, c.epoch)
                  for name, c in self.model.clusters.items()}
        if getattr(self, "frozen", None) is not None:
            assert frozen == self.frozen, "something other than an exit moved after the end"
        self.frozen = frozen


def test_scripts_agree_with_the_reference_model(r):
    settings_ = settings(deadline=None, suppress_health_check=list(HealthCheck))
    run_state_machine_as_test(lambda: ProtocolMachine(r), settings=settings(
        settings_, max_examples=settings.default.max_examples,
        stateful_step_count=settings.default.stateful_step_count))


def test_scripts_agree_with_the_model_when_a_submission_leaves_only_failed_members(
        r, monkeypatch):
    """A path the random runs seldom take: a sub-cluster fails, then its sibling's submission
    leaves only failed members missing, and the parent closes its round before its deadline."""
    monkeypatch.setattr(sys.modules[__name__], "note", lambda _: None)  # outside hypothesis
    sub = Tolerance(round_timeout_ms=1, min_clients=2)
    tree = [ClusterSpec(ROOT, None, 0, children=[f"{ROOT}#0", f"{ROOT}#1"], workers=["w0"],
                        tolerance=Tolerance(round_timeout_ms=60_000, min_clients=1))]
    tree += [ClusterSpec(f"{ROOT}#{i}", ROOT, 1, clients=["c0", "c1"], workers=["w0"],
                         tolerance=sub) for i in (0, 1)]
    machine = ProtocolMachine(r)
    machine.deploy(tree, rounds=1, keep=False, every=0)

    def step(name: str, cluster: str, role: str = "", node: str = "") -> None:
        machine.apply(machine.canonical(name, cluster, role, node, odd=False))

    for name in ("ack_jobsheet", "ack_dataset"):
        for cluster, role, node in machine.nodes:
            step(name, cluster, role, node)
    first, second = f"{ROOT}#0", f"{ROOT}#1"
    for op in ("start_training", "submit_params"):
        step(op, second, "client", "c0")
    step("close_round", second)  # one of two, min_clients 2: it fails
    assert machine.model.clusters[second].failure
    for node in ("c0", "c1"):
        for op in ("start_training", "submit_params"):
            step(op, first, "client", node)
    for op in ("start_aggregation", "upload_aggregate"):
        step(op, first, "worker", "w0")
    top = machine.model.top
    assert top.process_stage == ProcessStage.AGGREGATING and top.dropped == second
