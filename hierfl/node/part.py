"""A tree's nodes spread over several processes: `hierfl simulate --processes N`.

One process runs Python on one core at a time, so on a machine with more cores a large tree
goes faster as several processes, each running its share of the nodes as threads (a
`NodePool`, exactly as `hierfl simulate` runs them all in one). A cluster with clients stays in
one share: its members wake on the same notifications and share each read of their cluster's
hash. The workers of a cluster without clients (the root of a two-level tree) are spread over
the shares instead: they all aggregate at once, while the rest of the tree waits for them.

Each share is a child process, ``python -m hierfl.node.part``, that reads its slots (and the
Redis URL, which may hold a password) as JSON from stdin and logs to its own file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from hierfl.errors import HierflError
from hierfl.jobtree import ClusterSpec
from hierfl.node.pool import CONCURRENCY, POOL_CONNECTIONS, NodePool, logging_to, tree_slots
from hierfl.node.runtime import Slot
from hierfl.protocol import Role
from hierfl.store.connection import connect


def split(tree: list[ClusterSpec], parts: int) -> list[list[Slot]]:
    """The tree's slots in `parts` shares, as even in node count as whole clusters allow
    (largest first, each to the share with the fewest nodes so far); then the workers of the
    clusters without clients, one by one. No share is empty unless there are fewer nodes to
    spread than parts."""
    shares: list[list[Slot]] = [[] for _ in range(parts)]
    whole = [spec for spec in tree if spec.clients]
    for spec in sorted(whole, key=lambda s: -(len(s.clients) + len(s.workers))):
        min(shares, key=len).extend(tree_slots([spec]))
    for slot in tree_slots([spec for spec in tree if not spec.clients]):
        min(shares, key=len).append(slot)
    return [share for share in shares if share]


def start(url: str, shares: list[list[Slot]], concurrency: int, log_dir: Path
          ) -> dict[str, subprocess.Popen]:
    """One child process per share, its output and node log in ``log_dir/nodes-I.log``;
    by label (``share I``), for `hierfl.cli.run.check_nodes` and `stop_nodes`."""
    procs = {}
    for i, share in enumerate(shares):
        log_file = log_dir / f"nodes-{i}.log"
        order = {"url": url, "concurrency": concurrency, "log": str(log_file),
                 "slots": [[s.cluster, s.role.value, s.node] for s in share]}
        with open(log_file, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "hierfl.node.part"],
                                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(order).encode())
        proc.stdin.close()
        procs[f"share {i} ({len(share)} nodes, log {log_file})"] = proc
    return procs


def wait(procs: dict[str, subprocess.Popen], timeout: float) -> None:
    """Until every share's process has exited (their job is over), at most `timeout` seconds
    in all."""
    deadline = time.monotonic() + timeout
    for label, proc in procs.items():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise HierflError(f"node process {label} still running {timeout:g} s after its "
                              "job ended") from None


def run_share(url: str, slots: list[Slot], log_file: Path, concurrency: int = CONCURRENCY
              ) -> int:
    """Run these nodes as threads of this process until their job ends: 0 if every one
    exited 0."""
    client = connect(url, pool_size=POOL_CONNECTIONS)
    with logging_to(log_file), NodePool(client, url, concurrency=concurrency) as pool:
        pool.start_slots(slots)
        code = pool.wait()
    for slot, why in pool.failures().items():
        print(f"{slot} failed: {why}", file=sys.stderr)
    return code


def main() -> int:
    order = json.loads(sys.stdin.read())
    slots = [Slot(cluster, Role(role), node) for cluster, role, node in order["slots"]]
    return run_share(order["url"], slots, Path(order["log"]), order["concurrency"])


if __name__ == "__main__":
    sys.exit(main())
