"""FedAvg over 10 to 1,000 submissions of a 1M-parameter model, against plain numpy.

`hierfl.learning.aggregation.aggregate` is what a worker runs: it sorts the submissions by
member, checks each one against the first (names, shapes, dtypes, finite values) and
accumulates in float64 so that honest workers agree byte for byte. Two plain numpy weighted
averages of the same arrays are the yardstick:

- `np.average(np.stack(xs), axis=0, weights=counts)` per tensor, what one would write first
  (it computes in float64 with integer weights); it holds every submission twice over in
  memory, so it runs only while that stays under `--stack-limit-gb`;
- a streaming loop, `acc += w * x` in float64 per submission, the same arithmetic without
  hierfl's checks and without the stacked copy.

The target is hierfl at least 0.5 of the faster numpy of each row. Bytes read per second (the
submissions' bytes over the time) are set against the machine's memory bandwidth, measured as a
1 GB numpy copy (bytes read per second of the copy). The submissions are distinct arrays
(1,000 of 4 MB is 4 GB), so nothing is served from cache.

    python benchmarks/aggregation.py [--counts 10,100,1000] [--repeat 3] [--quick]
"""

from __future__ import annotations

import time
from collections.abc import Callable

import benchlib
import numpy as np

from hierfl.learning.aggregation import aggregate
from hierfl.learning.params import Params

TARGET = 0.5
#: A 1M-parameter model: one 1000x999 layer and its 1000 biases, float32.
SHAPES = {"fc.bias": (1000,), "fc.weight": (1000, 999)}
PARAMETERS = sum(int(np.prod(s)) for s in SHAPES.values())


def submissions(count: int, seed: int = 0) -> list[tuple[str, Params, int]]:
    """`count` distinct float32 parameter sets with sample counts 1..50."""
    rng = np.random.default_rng(seed)
    return [(f"c{i:04d}", {name: rng.random(shape, dtype=np.float32)
                           for name, shape in SHAPES.items()}, int(rng.integers(1, 51)))
            for i in range(count)]


def numpy_average(subs: list[tuple[str, Params, int]]) -> Params:
    weights = [w for _, _, w in subs]
    return {name: np.average(np.stack([p[name] for _, p, _ in subs]), axis=0, weights=weights)
            .astype(np.float32) for name in SHAPES}


def numpy_loop(subs: list[tuple[str, Params, int]]) -> Params:
    out = {}
    total = float(sum(w for _, _, w in subs))
    for name, shape in SHAPES.items():
        acc = np.zeros(shape, dtype=np.float64)
        for _, params, weight in subs:
            acc += params[name] * float(weight)
        out[name] = (acc / total).astype(np.float32)
    return out


def hierfl_fedavg(subs: list[tuple[str, Params, int]]) -> Params:
    return aggregate(subs, rule="fedavg")


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def memory_bandwidth(gigabytes: float = 1.0, repeat: int = 3) -> float:
    """Bytes read per second by a large numpy copy (it writes as many)."""
    src = np.ones(int(gigabytes * 1e9) // 4, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = best_time(lambda: np.copyto(dst, src), repeat)
    return src.nbytes / seconds


def measure(count: int, repeat: int, stack_limit: float) -> dict[str, float | None]:
    """Seconds for each way of averaging `count` submissions (None: not run, too large)."""
    subs = submissions(count)
    expected = numpy_loop(subs)
    got = hierfl_fedavg(subs)
    for name in SHAPES:  # the same average, up to float32 rounding
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
    stacked_gb = 3 * count * PARAMETERS * 4 / 1e9  # the stack and its float64 product
    return {
        "hierfl": best_time(lambda: hierfl_fedavg(subs), repeat),
        "np.average": best_time(lambda: numpy_average(subs), repeat)
        if stacked_gb <= stack_limit else None,
        "numpy loop": best_time(lambda: numpy_loop(subs), repeat),
    }


def main() -> None:
    p = benchlib.parser(__doc__)
    p.add_argument("--counts", default="10,100,1000", help="submission counts, comma-separated")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--stack-limit-gb", type=float, default=2.0,
                   help="skip np.average when its stacked copies would exceed this")
    args = p.parse_args()
    counts = [10, 100] if args.quick else [int(c) for c in args.counts.split(",")]
    repeat = 2 if args.quick else args.repeat
    bandwidth = memory_bandwidth()
    rows, ratios = [], []
    for count in counts:
        t = measure(count, 1 if count >= 1000 else repeat, args.stack_limit_gb)
        fastest = min(v for k, v in t.items() if k != "hierfl" and v is not None)
        read = count * PARAMETERS * 4
        ratios.append(fastest / t["hierfl"])
        rows.append((count, t["hierfl"] * 1e3, _ms(t["np.average"]), t["numpy loop"] * 1e3,
                     read / t["hierfl"] / 1e9, read / t["hierfl"] / bandwidth, ratios[-1]))
    print(f"{PARAMETERS:,} float32 parameters per submission; memory bandwidth (1 GB numpy "
          f"copy, bytes read/s): {bandwidth / 1e9:.1f} GB/s; best of {repeat} (1 run at 1,000)")
    print(benchlib.table(["submissions", "hierfl ms", "np.average ms", "numpy loop ms",
                          "hierfl GB/s read", "of bandwidth", "hierfl / fastest numpy"], rows))
    benchlib.verdict("hierfl / fastest numpy, worst row", min(ratios), TARGET)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


if __name__ == "__main__":
    main()
