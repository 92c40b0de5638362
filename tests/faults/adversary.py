"""A node that misbehaves on purpose, for the fault tests: a real `hierfl` node process whose
`publish` (the one place a node's result enters Redis) sends garbage.

    python tests/faults/adversary.py ROLE CLUSTER ID MODE[,MODE...]

Modes, taken in turn by generation (generation g uses modes[(g - 1) % len(modes)]):
- nan        one value of the first tensor is NaN
- shape      the first tensor has one row too many
- truncated  the safetensors bytes cut short (stored under their own digest)
- digest     honest bytes stored under a digest they do not have
- oversize   an extra tensor that makes the blob several times the model's size
- scale      the update scaled by 100 (global + 100 x (trained - global))
- wrong      an aggregate off by 0.01 everywhere (a worker's mode)
- honest     no tampering

Everything else (claiming the slot, ACKs, waiting, fencing, the scripts) is the real node's.
The fault tests start it with the repository on PYTHONPATH (tests/faults/conftest.py).
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from hierfl import keys
from hierfl.learning import params as P
from hierfl.node.claim import claim_slot
from hierfl.node.client import ClientNode
from hierfl.node.worker import WorkerNode
from hierfl.protocol import Role
from hierfl.store.blobs import digest_of
from hierfl.store.connection import connect
from hierfl.store.state import ClusterState

MODES = ("nan", "shape", "truncated", "digest", "oversize", "scale", "wrong", "honest")


def tampered(node, params: P.Params, state: ClusterState, mode: str) -> str:
    """Store a bad version of `params` as `mode` says; the digest the node will submit."""
    first = sorted(params)[0]
    bad = {name: value.copy() for name, value in params.items()}
    if mode == "nan":
        bad[first].flat[0] = np.nan
    elif mode == "shape":
        bad[first] = np.concatenate([bad[first], bad[first][:1]])
    elif mode == "oversize":
        size = sum(v.size for v in params.values())
        bad["padding"] = np.zeros(4 * size, dtype=np.float32)
    elif mode == "scale":
        start = node.global_params(state)
        bad = {n: (start[n] + 100 * (v - start[n])).astype(v.dtype) for n, v in params.items()}
    elif mode == "wrong":
        bad = {n: (v + 0.01).astype(v.dtype) for n, v in params.items()}
    data = P.to_bytes(bad)
    if mode == "truncated":
        return node.blobs.put(data[: len(data) // 2])
    if mode == "digest":
        # Honest bytes under the digest of other bytes: only a reader that verifies notices.
        fake = digest_of(data + b"tampered")
        node.client.set(keys.blob(node.slot.root, fake), data)
        return fake
    return node.blobs.put(data)


def adversary(base: type) -> type:
    class Adversary(base):
        modes: tuple[str, ...] = ("honest",)

        def publish(self, params: P.Params, state: ClusterState) -> str:
            mode = self.modes[(state.generation - 1) % len(self.modes)]
            self.log.warning("ADVERSARY: generation %d, publishing %s parameters",
                             state.generation, mode)
            if mode == "honest":
                return super().publish(params, state)
            return tampered(self, params, state, mode)

    return Adversary


def main(role: str, cluster: str, node: str, modes: str) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wanted = tuple(modes.split(","))
    unknown = set(wanted) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; known: {', '.join(MODES)}")
    url = os.environ["HIERFL_REDIS_URL"]
    client = connect(url)
    slot = claim_slot(client, Role(role), cluster=cluster, node=node)
    kind = adversary(ClientNode if role == "client" else WorkerNode)
    kind.modes = wanted
    return kind(client, slot, url=url).run()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
