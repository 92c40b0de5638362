"""Redis memory per round: the scripts retire parameter blobs no live round needs, so memory
after many rounds stays within a small multiple of one round's.

Starts a throwaway redis-server, deploys a job (by default examples/digits.toml, run for 20
rounds), runs every node as a thread of this process (as `hierfl simulate` does) and, each time
the root moves to a new round, reads `used_memory` and counts the job's blob keys. Prints one row
per round, then the ratio used_memory(last round) / used_memory(round 2) against the target of
at most 3, and the same run with `keep_checkpoints = true` (on a server of its own) beside it.

    python benchmarks/memory_per_round.py [--sheet examples/digits.toml] [--rounds 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import redis

from hierfl import keys
from hierfl.lifecycle import deploy_job
from hierfl.node.pool import POOL_CONNECTIONS, NodePool, tree_slots
from hierfl.sheet import load_sheet
from hierfl.store.connection import connect
from hierfl.store.server import EmbeddedServer
from hierfl.store.state import read_cluster
from hierfl.store.waiter import KeyWaiter

ROOT = Path(__file__).resolve().parents[1]
TARGET = 3.0


def blob_count(client: redis.Redis, root: str) -> int:
    return sum(1 for _ in client.scan_iter(match=keys.blob(root, "*"), count=1000))


def run(url: str, sheet_path: Path, rounds: int, keep: bool) -> list[tuple[int, int, int]]:
    """(round, used_memory, blobs) each time the root starts a round, and once at the end."""
    client = connect(url, pool_size=POOL_CONNECTIONS)
    sheet = load_sheet(sheet_path).with_overrides(rounds=rounds, name=f"mem{int(keep)}",
                                                  keep_checkpoints=keep)
    tree = deploy_job(client, sheet)
    rows: list[tuple[int, int, int]] = []

    def sample(round_: int) -> None:
        rows.append((round_, int(client.info("memory")["used_memory"]),
                     blob_count(client, sheet.name)))

    with NodePool(client, url) as pool, KeyWaiter(client, [keys.job(sheet.name)], 5.0) as w:
        pool.start_slots(tree_slots(tree))
        seen = 0
        while True:
            top = read_cluster(client, sheet.name)
            if top.process_stage == 3:  # finished: sample once the nodes have exited
                break
            if top.round > seen:
                seen = top.round
                sample(seen - 1)  # the previous round is complete
            pool.check()
            w.wait()
        pool.wait(120)
    sample(rounds)
    return rows


def on_own_server(sheet: Path, rounds: int, keep: bool) -> list[tuple[int, int, int]]:
    with tempfile.TemporaryDirectory(prefix="hierfl-mem-") as tmp:
        server = EmbeddedServer(Path(tmp)).start()
        try:
            return run(server.url, sheet, rounds, keep)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sheet", type=Path, default=ROOT / "examples" / "digits.toml")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    started = time.monotonic()
    results = {keep: on_own_server(args.sheet, args.rounds, keep) for keep in (False, True)}
    took = time.monotonic() - started
    print(f"{args.sheet.name}, {args.rounds} rounds ({took:.0f} s for both runs)")
    print(f"{'after round':>11}  {'used_memory':>12}  {'blobs':>5}  "
          f"{'keep_checkpoints: used_memory':>30}  {'blobs':>5}")
    for (r, mem, blobs), (_, kmem, kblobs) in zip(results[False], results[True], strict=True):
        print(f"{r:>11}  {mem:>12,}  {blobs:>5}  {kmem:>30,}  {kblobs:>5}")
    by_round = {r: mem for r, mem, _ in results[False]}
    ratio = by_round[args.rounds] / by_round[2]
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"used_memory after round {args.rounds} / after round 2: {ratio:.2f} "
          f"(target <= {TARGET:g}: {verdict})")


if __name__ == "__main__":
    main()
