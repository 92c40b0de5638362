"""How soon `hierfl events --follow` prints an event after the script call that caused it.

Starts a throwaway redis-server, deploys a small job, runs `hierfl events NAME --follow --json`
as a real process, then makes N transitions one at a time and measures, for each, the time from
just before the script call to the moment the follower's line for it arrives on its stdout.
Prints p50 / p99 / max in milliseconds (target: well under 100 ms).

    python benchmarks/event_latency.py [--events 200]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from driver import Driver

from hierfl.store.connection import connect
from hierfl.store.server import EmbeddedServer


def measure(url: str, count: int) -> list[float]:
    client = connect(url)
    d = Driver(client, "bench", sub=[], clients=[count], workers=[1], rounds=1)
    d.deploy()
    env = {**os.environ, "HIERFL_REDIS_URL": url}
    follower = subprocess.Popen([sys.executable, "-m", "hierfl", "events", "bench", "--follow",
                                 "--json"], env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
    selector = selectors.DefaultSelector()
    selector.register(follower.stdout, selectors.EVENT_READ)
    wait_for_line(follower, selector, "deploy")  # the follower is up and caught up
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        d.scripts.ack_jobsheet("bench", "client", f"c{i}")
        wait_for_line(follower, selector, f"client/c{i}")
        latencies.append((time.perf_counter() - started) * 1000)
    follower.kill()
    return latencies


def wait_for_line(proc: subprocess.Popen, selector: selectors.BaseSelector, needle: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            line = proc.stdout.readline()
            if needle in line:
                json.loads(line)
                return
    raise TimeoutError(f"no event line with {needle!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="hfl-bench-", dir="/tmp"))).start()
    try:
        ms = sorted(measure(server.url, args.events))
    finally:
        server.stop()
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{'events':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(f"{len(ms):>8} {statistics.median(ms):>8.2f} {p99:>8.2f} {ms[-1]:>8.2f}")
    print(f"p99 / 100 ms target: {p99 / 100:.3f}")


if __name__ == "__main__":
    main()
