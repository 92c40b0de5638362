"""Many nodes in one process: a thread per node, one notification connection for all.

The nodes are the same `ClientNode` and `WorkerNode` that `hierfl node` runs, calling the same
scripts on the same server; only their waiters share a `NotificationHub`, their reads of a
cluster after a notification share one snapshot (`SharedReads`), they download each blob once
for all (`BlobCache`), and their Redis client shares one connection pool. `hierfl simulate`
runs a whole tree this way and `hierfl node --count N` runs N nodes of one role.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from hierfl.errors import HierflError
from hierfl.jobtree import ClusterSpec
from hierfl.node.claim import claim_slot
from hierfl.node.client import ClientNode
from hierfl.node.logs import node_handler
from hierfl.node.runtime import NodeRuntime, Slot
from hierfl.node.worker import WorkerNode
from hierfl.protocol import Role
from hierfl.store.blobs import BlobCache
from hierfl.store.hub import NotificationHub, SharedReads, Turns
from hierfl.store.shards import is_cluster
from hierfl.store.waiter import SAFETY_TIMEOUT

log = logging.getLogger(__name__)

#: Connections a pool's shared client may open (`connect(pool_size=...)`). A node holds one only
#: while a command runs, not while it waits, so a few dozen serve a thousand nodes.
POOL_CONNECTIONS = 32
#: Nodes of one process that run at once by default (`Turns`; `hierfl simulate
#: --concurrency`): one per core. A node waiting for a notification does not count. More than
#: the cores only adds contention: at 1,000 no-op clients on 2 cores, a round took 1.1 s with
#: 2 at once, 1.3 s with 4, 1.8 s with 16 and 2.5 s with no limit.
CONCURRENCY = os.cpu_count() or 2


class NodePool:
    """Runs nodes as threads of this process until each one's job ends. A context manager.

    `client` is shared by every node: make it with `connect(pool_size=POOL_CONNECTIONS)`.
    """

    def __init__(self, client: redis.Redis, url: str | None = None,
                 safety_timeout: float = SAFETY_TIMEOUT, concurrency: int = CONCURRENCY) -> None:
        self.client = client
        self.url = url
        self.safety_timeout = safety_timeout
        self.turns = Turns(concurrency)
        self.hub = NotificationHub(client, self.turns)
        # One read per notification for all the nodes of a cluster (single server only).
        self.shared_reads = None if is_cluster(client) else SharedReads(client, self.hub)
        # Each blob downloaded once for all the nodes (the same global model, read by every
        # worker of a cluster and every client).
        self.blob_cache = BlobCache.from_env()
        self.exit_codes: dict[Slot, int] = {}
        self.errors: dict[Slot, BaseException] = {}
        self._threads: dict[Slot, threading.Thread] = {}
        self._done: queue.Queue[Slot] = queue.Queue()

    def __enter__(self) -> NodePool:
        self.hub.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hub.close()

    def node(self, slot: Slot, data: Path | None = None) -> NodeRuntime:
        options = {"url": self.url, "safety_timeout": self.safety_timeout,
                   "waiters": self.hub.waiter, "sleep": self.turns.sleep,
                   "reader": self.shared_reads.read if self.shared_reads else None,
                   "blob_cache": self.blob_cache}
        if slot.role == Role.CLIENT:
            return ClientNode(self.client, slot, data=data, **options)
        return WorkerNode(self.client, slot, **options)

    def start_slots(self, slots: list[Slot]) -> None:
        """Claim each of these slots (by name) and start its node."""
        for slot in slots:
            self.start(claim_slot(self.client, slot.role, cluster=slot.cluster, node=slot.node,
                                  waiters=self.hub.waiter))

    def start(self, slot: Slot, data: Path | None = None) -> None:
        runtime = self.node(slot, data)
        thread = threading.Thread(target=self._run, args=(slot, runtime), name=str(slot),
                                  daemon=True)  # a stopped process abandons them, like SIGTERM
        self._threads[slot] = thread
        thread.start()

    def _run(self, slot: Slot, runtime: NodeRuntime) -> None:
        try:
            with self.turns.turn(urgent=slot.role == Role.WORKER):
                self.exit_codes[slot] = runtime.run()
        except BaseException as exc:  # reported by `wait`, not lost with the thread
            self.errors[slot] = exc
            self.exit_codes[slot] = 1
            runtime.log.error("failed: %s", exc)
        finally:
            self._done.put(slot)

    @property
    def running(self) -> int:
        return len(self._threads) - len(self.exit_codes)

    def failures(self) -> dict[Slot, str]:
        """Nodes that ended with a non-zero exit code, and why."""
        return {slot: str(self.errors.get(slot, f"exit {code}"))
                for slot, code in self.exit_codes.items() if code != 0}

    def check(self) -> None:
        """Raise if a node failed (`hierfl simulate` stops the job then)."""
        if failed := self.failures():
            shown = ", ".join(f"{slot} ({why})" for slot, why in sorted(
                failed.items(), key=lambda item: str(item[0]))[:5])
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise HierflError(f"nodes failed: {shown}{more}")

    def wait(self, timeout: float | None = None) -> int:
        """Until every node has ended: 0 when all exited 0, else 1."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise HierflError(f"{self.running} nodes still running after {timeout:g} s")
            try:
                self._done.get(timeout=left)
            except queue.Empty:
                continue
        return 0 if not self.failures() else 1


def tree_slots(tree: list[ClusterSpec]) -> list[Slot]:
    """Every node of the tree: workers first, cluster by cluster in pre-order."""
    return [Slot(spec.name, role, node)
            for spec in tree
            for role, ids in ((Role.WORKER, spec.workers), (Role.CLIENT, spec.clients))
            for node in ids]


@contextmanager
def logging_to(path: Path, level: int = logging.INFO) -> Iterator[None]:
    """Send the nodes' log records to `path` instead of the terminal."""
    handler = node_handler(logging.FileHandler(path, encoding="utf-8"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()
