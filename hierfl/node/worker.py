"""A worker: aggregates its cluster's submissions; a root worker also evaluates each round."""

from __future__ import annotations

import numpy as np
import redis

from hierfl import keys
from hierfl.errors import (
    BlobGone,
    HierflError,
    IllegalTransition,
    IntegrityError,
    ScriptError,
    StaleGeneration,
)
from hierfl.learning import params as P
from hierfl.learning.aggregation import aggregate
from hierfl.node.runtime import NodeRuntime, Slot
from hierfl.protocol import ErrorCode, Field, ProcessStage, Role, evaluated
from hierfl.store.state import ClusterState, read_unscored
from hierfl.wording import counted


class WorkerNode(NodeRuntime):
    role = Role.WORKER

    def __init__(self, client: redis.Redis, slot: Slot, **kwargs: object) -> None:
        super().__init__(client, slot, **kwargs)
        self.is_root = slot.cluster == slot.root
        self.test: tuple[np.ndarray, np.ndarray] | None = None
        self._all_scored_at: tuple[int, int, int] | None = None  # see _may_have_unscored
        self._scored: set[int] = set()  # rounds known scored (see _may_exist_unscored)
        self._scored_below = 0  # every round below it that the job evaluates has a metric
        self._peers: list[str] = []  # the root's workers, who share the scoring

    def load_data(self) -> None:
        if self.is_root:
            digest = self.client.get(keys.testset(self.slot.root)).decode()
            self.test = self.load_share(digest)
            self._peers = sorted(w.decode() for w in self.client.hkeys(keys.workers(
                self.slot.root)))

    def initial_candidate(self) -> str:
        # Only the root's workers offer: a sub-cluster's worker never builds a model, so its
        # process never loads torch.
        if not self.is_root or self.client.hexists(keys.job(self.slot.root),
                                                   Field.CANDIDATE.value):
            return ""
        # Every root worker draws the same initial model from the job's seed, so whichever
        # offer is kept, a job's run is reproducible down to the final digest.
        model = self.new_model(("init",))
        return self.blobs.put(P.to_bytes(P.from_model(model)))

    def may_act_in(self, state: ClusterState) -> bool:
        return state.process_stage == ProcessStage.AGGREGATING

    def may_wake_for(self, state: ClusterState) -> bool:
        # A root worker also scores rounds, in whichever phase the root is.
        return super().may_wake_for(state) or self._may_score(state)

    def _may_score(self, state: ClusterState) -> bool:
        """Whether a round of the root's `state` may still want scoring by this worker (what
        `_may_exist_unscored` says, without moving its mark: the hub's thread asks too)."""
        if not self.is_root or self.test is None:
            return False
        agreed = self._agreed(state)
        return self._first_maybe_unscored(agreed) <= agreed

    def has_work(self, state: ClusterState) -> bool:
        return self._must_aggregate(state) or self._may_have_unscored(state)

    def own_step_done(self, state: ClusterState) -> bool:
        return self.slot.node in state.uploaded

    def _must_aggregate(self, state: ClusterState) -> bool:
        return self.may_act_in(state) and not self.step_done(state)

    def work(self, state: ClusterState) -> None:
        if self._must_aggregate(state):
            self._aggregate(state)
        self._score_rounds(state)

    def before_exit(self, state: ClusterState) -> None:
        self._score_rounds(state, everyone=True)

    # -- aggregation -----------------------------------------------------------------------

    def _aggregate(self, state: ClusterState) -> None:
        gen = state.generation
        _, digests, samples = self._call("start_aggregation",
                                         self.scripts.start_aggregation_reading, gen)
        stored = self.blobs.get(state.global_digest)
        reference = P.from_bytes(stored)
        submissions = self._valid_submissions(digests, samples, reference, gen,
                                              state.global_digest, self._size_limit(len(stored)))
        rule = self.sheet.aggregation
        result = aggregate(submissions, rule=rule.rule, trim=rule.trim)
        digest = self._upload(result, state)
        self.log.info("generation %d: aggregated %s (%s) into %s",
                      gen, counted(len(submissions), "submissions"), rule.rule, digest[:12])

    def _upload(self, result: P.Params, state: ClusterState) -> str:
        """Store the aggregate and say so (upload_aggregate); its digest. A peer's identical
        aggregate already stored is not sent again, unless that copy was retired before the
        call (MISSING_BLOB): then once more, sent in full."""
        digest = self.publish(result, state)
        try:
            self._call("upload_aggregate", self.scripts.upload_aggregate, state.generation,
                       digest)
        except ScriptError as exc:
            if exc.code != ErrorCode.MISSING_BLOB:
                raise
            self.log.info("the stored copy of aggregate %s was retired; uploading it", digest[:12])
            self.blobs.put(P.to_bytes(result))
            self._call("upload_aggregate", self.scripts.upload_aggregate, state.generation,
                       digest)
        return digest

    def _valid_submissions(self, digests: dict[bytes, bytes], samples: dict[bytes, bytes],
                           reference: dict[str, np.ndarray], gen: int, global_digest: str,
                           limit: int) -> list:
        """Of this generation's submissions (member -> digest, member -> samples), those that
        verify and match the global model's layout.

        Every worker applies the same checks in the same order, so honest workers still agree;
        each excluded submission is recorded (an `excluded` event naming member and reason).
        """
        valid = []
        # Blobs never change, so each digest is checked once; the global itself (a member that
        # did not train submits it unchanged) was verified and decoded already.
        verdicts: dict[str, P.Params | IntegrityError] = {global_digest: reference}
        for member in sorted(digests):
            name, digest = member.decode(), digests[member].decode()
            if digest not in verdicts:
                try:
                    verdicts[digest] = self._checked(digest, reference, limit)
                except BlobGone:
                    raise  # submit_params checked it was stored: the generation is over
                except IntegrityError as exc:
                    verdicts[digest] = exc
            verdict = verdicts[digest]
            if isinstance(verdict, IntegrityError):
                self._exclude(gen, name, str(verdict))
                continue
            valid.append((name, verdict, int(samples[member])))
        if not valid:
            raise HierflError(f"{self.slot}: no valid submission to aggregate")
        return valid

    def _checked(self, digest: str, reference: dict[str, np.ndarray], limit: int) -> P.Params:
        """Size (before downloading), digest, safetensors header, layout, finiteness."""
        size = self.blobs.size(digest)
        if size > limit:
            raise IntegrityError(f"blob {digest[:12]} is {size} bytes, over the limit of {limit} "
                                 "([aggregation] max_params_mb)")
        params = P.from_bytes(self.blobs.get(digest))
        P.check_like(params, reference)
        return params

    def _size_limit(self, global_size: int) -> int:
        configured = self.sheet.aggregation.max_params_mb
        if configured > 0:
            return int(configured * 1_000_000)
        # A valid submission has exactly the global model's layout, hence about its size.
        return 2 * global_size + 4096

    def _exclude(self, gen: int, member: str, reason: str) -> None:
        self.log.warning("generation %d: excluding %s's submission: %s", gen, member, reason)
        try:
            self.scripts.report_exclusion(self.slot.cluster, self.slot.role.value,
                                          self.slot.node, gen, member, reason)
        except (StaleGeneration, IllegalTransition) as exc:
            self.log.debug("exclusion not recorded: %s", exc)  # the cluster moved on

    # -- evaluation (root workers) ---------------------------------------------------------

    def _may_have_unscored(self, state: ClusterState) -> bool:
        """A root worker's rounds to score (`_unscored_rounds`). The history gains a round,
        and a round becomes overdue, only in a script that also moves the root's round,
        generation or process stage, so once none was found for this worker, none is until
        one of those moves (the unscored rounds are not re-read on every wake-up)."""
        mark = (state.generation, state.round, state.process_stage)
        if mark == self._all_scored_at:
            return False
        if self._unscored_rounds(state):
            return True
        self._all_scored_at = mark
        return False

    def _may_exist_unscored(self, state: ClusterState) -> bool:
        """Whether a round the job evaluates may lack a metric, by what this worker has seen:
        the root's state says which rounds are agreed, the unscored rounds it read (or scored
        itself) which of them are done. Spares the read while no evaluated round is agreed
        (`evaluate_every`)."""
        agreed = self._agreed(state)
        self._scored_below = self._first_maybe_unscored(agreed)
        return self._scored_below <= agreed

    def _first_maybe_unscored(self, agreed: int) -> int:
        """The first round up to `agreed` that the job evaluates and this worker has not seen
        scored (`agreed` + 1 when there is none)."""
        sheet, first = self.sheet, self._scored_below
        while first <= agreed and (
                first in self._scored or not evaluated(first, sheet.rounds, sheet.evaluate_every)):
            first += 1
        return first

    @staticmethod
    def _agreed(state: ClusterState) -> int:
        """The last round with an agreed global: the one before the current, or the last once
        the job finished (round 0 is the initial model)."""
        return state.round if state.process_stage == ProcessStage.FINISHED else state.round - 1

    def _unscored_rounds(self, state: ClusterState, everyone: bool = False) -> dict[int, str]:
        """Rounds without a metric that this worker should score now: its own share of them
        (round mod the number of root workers picks one), so the root's workers do not all
        evaluate the same model at once; any round still unscored once a later round was
        agreed (its worker may be gone); with `everyone`, all of them."""
        if not self.is_root or self.test is None or not self._may_exist_unscored(state):
            return {}
        unscored = read_unscored(self.client, self.slot.root)
        # The scripts list every agreed round the job evaluates until it is scored.
        agreed = self._agreed(state)
        self._scored.update(r for r in range(self._scored_below, agreed + 1) if r not in unscored)
        if everyone or not unscored or not self._peers:
            return unscored
        latest = max(agreed, *unscored)
        return {r: d for r, d in unscored.items()
                if r < latest or self._peers[r % len(self._peers)] == self.slot.node}

    def _score_rounds(self, state: ClusterState, everyone: bool = False) -> None:
        from hierfl.learning.evaluation import evaluate  # torch: root workers only

        for round_, digest in sorted(self._unscored_rounds(state, everyone).items()):
            model = self.new_model(("eval",))
            try:
                params = P.from_bytes(self.blobs.get(digest))
            except BlobGone:
                continue  # another root worker scored this round and its checkpoint retired
            P.into_model(model, params)
            accuracy, loss = evaluate(model, *self.test)
            self.scripts.record_metric(self.slot.root, self.slot.node, round_, digest,
                                       accuracy, loss)
            self._scored.add(round_)  # by this worker, or (0 returned) by another first
            self.log.info("round %d: test accuracy %.4f, loss %.4f", round_, accuracy, loss)
