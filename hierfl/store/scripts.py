"""One Python method per Lua script, with its keys and arguments named in header order.

Scripts run by EVALSHA, loaded again (SCRIPT LOAD) after a NOSCRIPT reply from a restarted or
flushed server: what redis-py's `Script` objects do, without the ~17 µs a call they add (a
transition's whole server time is ~50 µs). A script's refusal comes back as a
`hierfl.errors.ScriptError` subclass; nothing was changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from hierfl import keys
from hierfl.errors import from_script_reply
from hierfl.jobtree import ClusterSpec
from hierfl.store.loader import load_script, script_names
from hierfl.store.shards import is_cluster


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@functools.cache
def _sources() -> dict[str, tuple[str, str]]:
    """Every script's assembled source and its SHA1, made once per process: a thousand nodes in
    one process (`hierfl simulate`) each make a `Scripts`."""
    return {name: (source, hashlib.sha1(source.encode()).hexdigest())
            for name in script_names() for source in [load_script(name)]}


class Scripts:
    """The Lua layer as Python methods, bound to one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._scripts = _sources()

    def _call(self, name: str, keys_: Sequence[str], args: Sequence[object]) -> object:
        source, sha = self._scripts[name]
        words = [*keys_, *(_text(a) for a in args)]
        try:
            try:
                return self.client.evalsha(sha, len(keys_), *words)
            except NoScriptError:  # a restarted or flushed server: load it, once more
                self.client.script_load(source)
                return self.client.evalsha(sha, len(keys_), *words)
        except redis.ResponseError as exc:
            translated = from_script_reply(str(exc))
            if translated is None:
                raise
            raise translated from None

    def _call_then_read(self, name: str, keys_: Sequence[str], args: Sequence[object],
                        reads: Callable[[Any], object]) -> list[object]:
        """The script, then the reads `reads` queues, in one transaction (one round trip): the
        script's reply followed by the reads' replies. The reads see the script's writes.
        (A Redis Cluster pipeline cannot carry EVALSHA: there the reads follow the call.)"""
        if is_cluster(self.client):
            reply = self._call(name, keys_, args)
            pipe = self.client.pipeline(transaction=True)
            reads(pipe)
            return [reply, *pipe.execute()]
        source, sha = self._scripts[name]
        words = [*keys_, *(_text(a) for a in args)]
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=True)
            pipe.evalsha(sha, len(keys_), *words)
            reads(pipe)
            replies = pipe.execute(raise_on_error=False)
            reply = replies[0]
            if isinstance(reply, NoScriptError) and attempt == 0:
                self.client.script_load(source)  # a restarted or flushed server
                continue
            for failed in (r for r in replies if isinstance(r, redis.ResponseError)):
                raise from_script_reply(str(failed)) or failed
            return replies
        raise AssertionError("unreachable")

    # -- the tree --------------------------------------------------------------------------

    def deploy(
        self,
        root: str,
        tree: list[ClusterSpec],
        sheet: str,
        rounds: int,
        shares: dict[str, dict[str, str]],
        testset: str,
        keep_checkpoints: bool = False,
        evaluate_every: int = 1,
    ) -> int:
        tree_json = json.dumps([spec.to_json() for spec in tree])
        args = [root, tree_json, sheet, rounds, json.dumps(shares), testset,
                int(keep_checkpoints), evaluate_every]
        return int(self._call("deploy", [keys.job(root)], args))

    def register_job(self, root: str) -> bool:
        return bool(self._call("register_job", [keys.JOBS], [root]))

    def unregister_job(self, root: str) -> bool:
        return bool(self._call("unregister_job", [keys.JOBS], [root]))

    def cancel_job(self, root: str, reason: str = "") -> int:
        return int(self._call("cancel_job", [keys.job(root)], [root, reason]))

    def delete_job(self, root: str, force: bool = False) -> int:
        return int(self._call("delete_job", [keys.job(root)], [root, "1" if force else "0"]))

    def claim_slot(
        self, root: str, role: str, claimant: str, cluster: str = "", node: str = ""
    ) -> tuple[str, str] | None:
        reply = self._call("claim_slot", [keys.job(root)], [root, role, claimant, cluster, node])
        if not reply:
            return None
        cluster_name, node_id = reply
        return _text(cluster_name), _text(node_id)

    # -- node transitions ------------------------------------------------------------------

    def ack_jobsheet(self, cluster: str, role: str, node: str) -> int:
        return int(self._call("ack_jobsheet", [keys.job(cluster)], [cluster, role, node]))

    def ack_dataset(self, cluster: str, role: str, node: str, candidate: str = "") -> int:
        args = [cluster, role, node, candidate]
        return int(self._call("ack_dataset", [keys.job(cluster)], args))

    def start_training(self, cluster: str, role: str, node: str, generation: int) -> int:
        args = [cluster, role, node, generation]
        return int(self._call("start_training", [keys.job(cluster)], args))

    def submit_params(
        self, cluster: str, role: str, node: str, generation: int, digest: str, samples: int
    ) -> int:
        args = [cluster, role, node, generation, digest, samples]
        return int(self._call("submit_params", [keys.job(cluster)], args))

    def start_aggregation(self, cluster: str, role: str, node: str, generation: int) -> int:
        args = [cluster, role, node, generation]
        return int(self._call("start_aggregation", [keys.job(cluster)], args))

    def start_aggregation_reading(self, cluster: str, role: str, node: str, generation: int
                                  ) -> tuple[int, dict[bytes, bytes], dict[bytes, bytes]]:
        """start_aggregation, and in the same round trip what the worker aggregates: the
        cluster's submissions and sample counts (member -> digest, member -> samples), which
        no call changes while the cluster aggregates this generation."""
        status, digests, samples = self._call_then_read(
            "start_aggregation", [keys.job(cluster)], [cluster, role, node, generation],
            lambda pipe: pipe.hgetall(keys.submissions(cluster)).hgetall(keys.samples(cluster)))
        return int(status), digests, samples

    def upload_aggregate(
        self, cluster: str, role: str, node: str, generation: int, digest: str
    ) -> int:
        args = [cluster, role, node, generation, digest]
        return int(self._call("upload_aggregate", [keys.job(cluster)], args))

    def ack_exit(self, cluster: str, role: str, node: str) -> int:
        return int(self._call("ack_exit", [keys.job(cluster)], [cluster, role, node]))

    def report_exclusion(self, cluster: str, role: str, node: str, generation: int,
                         member: str, reason: str) -> bool:
        args = [cluster, role, node, generation, member, reason]
        return bool(self._call("report_exclusion", [keys.job(cluster)], args))

    def discard_blob(self, root: str, digest: str) -> bool:
        """Delete a blob stored for a refused call, unless something live names it."""
        return bool(self._call("discard_blob", [keys.job(root)], [root, digest]))

    def close_round(self, cluster: str, generation: int) -> bool:
        return bool(self._call("close_round", [keys.job(cluster)], [cluster, generation]))

    def record_metric(
        self, root: str, node: str, round_: int, digest: str, accuracy: float, loss: float
    ) -> bool:
        args = [root, node, round_, digest, repr(float(accuracy)), repr(float(loss))]
        return bool(self._call("record_metric", [keys.job(root)], args))
