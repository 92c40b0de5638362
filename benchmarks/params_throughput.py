"""Storing and fetching parameter sets the hierfl way, against raw SET/GET of the same bytes.

A node publishes parameters by encoding them as safetensors (`hierfl.learning.params.to_bytes`)
and storing them under their SHA-256 (`BlobStore.put`: hash, SET NX); a reader fetches them
(`BlobStore.get`: GET, then hash again to verify) and decodes them (`from_bytes`). The least the
same trip could cost is a SET and a GET of the bytes. For 1, 10 and 100 MB parameter sets
(float32 tensors of an MLP's shapes) this times each stage, best of `--repeat`, against SET+GET
of the same bytes on the same connection; every store goes to a key that does not exist yet,
as a new round's parameters do. Target: hierfl's round trip reaches at least 0.5 of the raw
throughput at 10 MB and above.

    python benchmarks/params_throughput.py [--sizes 1,10,100] [--repeat 5] [--quick]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import benchlib
import numpy as np
import redis

from hierfl import keys
from hierfl.learning import params as P
from hierfl.store.blobs import BlobStore
from hierfl.store.connection import connect

TARGET = 0.5
#: From this size (MB) up the target applies.
TARGET_FROM_MB = 10
ROOT = "bench-params"
STAGES = ("serialise", "store", "fetch+verify", "deserialise")


def make_params(megabytes: int, seed: int) -> P.Params:
    """float32 tensors totalling `megabytes` MB: square hidden layers of width 1024 and a rest."""
    rng = np.random.default_rng(seed)
    floats = megabytes * 1_000_000 // 4
    params, width, i = {}, 1024, 0
    while floats >= width * width + width:
        params[f"layer{i}.weight"] = rng.standard_normal((width, width), dtype=np.float32)
        params[f"layer{i}.bias"] = rng.standard_normal(width, dtype=np.float32)
        floats -= width * width + width
        i += 1
    if floats:
        params[f"layer{i}.weight"] = rng.standard_normal(floats, dtype=np.float32)
    return params


@dataclass
class Timings:
    """Best seconds per stage over the repeats (each stage's best, independently)."""

    stages: dict[str, float]
    raw_set: float
    raw_get: float

    @property
    def hierfl(self) -> float:
        return sum(self.stages.values())

    @property
    def raw(self) -> float:
        return self.raw_set + self.raw_get


def clock(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def hierfl_trip(blobs: BlobStore, params: P.Params) -> tuple[dict[str, float], bytes]:
    """One serialise/store/fetch/deserialise trip; the blob is deleted after (not timed)."""
    t_ser, data = clock(lambda: P.to_bytes(params))
    t_put, digest = clock(lambda: blobs.put(data))
    t_get, fetched = clock(lambda: blobs.get(digest))
    t_de, decoded = clock(lambda: P.from_bytes(fetched))
    blobs.client.unlink(keys.blob(ROOT, digest))
    assert decoded.keys() == params.keys()
    return dict(zip(STAGES, (t_ser, t_put, t_get, t_de), strict=True)), data


def raw_trip(client: redis.Redis, data: bytes) -> tuple[float, float]:
    """SET then GET of the same bytes under a fresh key; deleted after (not timed)."""
    key = keys.blob(ROOT, "raw")
    t_set, _ = clock(lambda: client.set(key, data))
    t_get, fetched = clock(lambda: client.get(key))
    client.unlink(key)
    assert len(fetched) == len(data)
    return t_set, t_get


def measure(client: redis.Redis, megabytes: int, repeat: int) -> tuple[Timings, int]:
    """Interleaved hierfl and raw trips; the best of each stage, and the blob's size."""
    params = make_params(megabytes, seed=megabytes)
    blobs = BlobStore(client, ROOT)
    best = dict.fromkeys(STAGES, float("inf"))
    best_set = best_get = float("inf")
    size = 0
    for _ in range(repeat):
        stages, data = hierfl_trip(blobs, params)
        best = {k: min(best[k], stages[k]) for k in STAGES}
        t_set, t_get = raw_trip(client, data)
        best_set, best_get, size = min(best_set, t_set), min(best_get, t_get), len(data)
    return Timings(best, best_set, best_get), size


def main() -> None:
    p = benchlib.parser(__doc__)
    p.add_argument("--sizes", default="1,10,100", help="MB, comma-separated")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    repeat = 2 if args.quick else args.repeat
    results = []
    with benchlib.redis_url(args.redis) as url:
        client = connect(url)
        version = benchlib.server_version(client)
        for megabytes in sizes:
            results.append((megabytes, *measure(client, megabytes, repeat)))
        client.close()
    print(f"best of {repeat} trips per stage; MB/s = blob MB / seconds; redis-server {version}")
    rows, ratios = [], {}
    for megabytes, t, size in results:
        mb = size / 1e6
        ratios[megabytes] = t.raw / t.hierfl
        rows.append((megabytes, *(mb / t.stages[s] for s in STAGES), mb / t.hierfl,
                     mb / t.raw_set, mb / t.raw_get, mb / t.raw, ratios[megabytes]))
    print(benchlib.table(["MB", *(f"{s} MB/s" for s in STAGES), "hierfl trip MB/s",
                          "raw SET MB/s", "raw GET MB/s", "raw trip MB/s", "ratio"], rows))
    judged = [r for mb, r in ratios.items() if mb >= TARGET_FROM_MB]
    if judged:
        benchlib.verdict(f"hierfl / raw throughput, worst at >= {TARGET_FROM_MB} MB",
                         min(judged), TARGET)
    else:
        print(f"no size >= {TARGET_FROM_MB} MB measured: the target was not judged")


if __name__ == "__main__":
    main()
