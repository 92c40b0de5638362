"""Finding a node's slot: the one it names, or the first free one of any job (waiting for a
job with a free slot when there is none yet)."""

from __future__ import annotations

import logging
import os
import socket
import time

import redis

from hierfl import keys
from hierfl.errors import BadInput, HierflError, UnknownJob
from hierfl.jobtree import check_cluster_name, check_node_id
from hierfl.node.runtime import Slot
from hierfl.protocol import ErrorCode, Role
from hierfl.store.scripts import Scripts
from hierfl.store.state import job_exists, list_jobs
from hierfl.store.waiter import SAFETY_TIMEOUT, KeyWaiter, WaiterFactory

log = logging.getLogger(__name__)


def claimant() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_slot(
    client: redis.Redis,
    role: Role,
    job: str | None = None,
    cluster: str | None = None,
    node: str | None = None,
    timeout: float | None = None,
    waiters: WaiterFactory | None = None,
) -> Slot:
    """Claim a slot atomically (the claim_slot script); wait on the job registry if needed
    (with a waiter from `waiters`, by default a `KeyWaiter` of its own)."""
    scripts = Scripts(client)
    if node and not cluster:
        raise BadInput("--id needs --cluster: a node id is only unique within its cluster")
    if cluster:
        check_cluster_name(cluster)
        if job and keys.root_of(cluster) != job:
            raise BadInput(f"cluster {cluster} is not part of job {job}")
        job = keys.root_of(cluster)
    if node:
        check_node_id(node)
    deadline = None if timeout is None else time.monotonic() + timeout
    make_waiter = waiters or (lambda watched, t: KeyWaiter(client, watched, t))
    said = False
    with make_waiter([keys.JOBS], SAFETY_TIMEOUT) as waiter:
        while True:
            slot = _try_claim(scripts, client, role, job, cluster or "", node or "")
            if slot is not None:
                return slot
            if job and job_exists(client, job):
                raise NoFreeSlot(f"job {job} has no free {role.value} slot"
                                 f"{' in ' + cluster if cluster else ''}: every one is taken "
                                 "(restart a lost node with --cluster and --id)")
            # Said once: the loop goes round again on every registry change and on each
            # safety timeout, and a node may wait for its job for hours.
            log.log(logging.DEBUG if said else logging.INFO, "%s; waiting for %s",
                    f"no job {job} yet" if job else f"no free {role.value} slot yet",
                    "it to be deployed" if job else "a job")
            said = True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise NoFreeSlot(f"no free {role.value} slot appeared within {timeout:g} s")
            waiter.wait(left)


class NoFreeSlot(HierflError):
    """There is no slot for this node to take."""


def _try_claim(scripts: Scripts, client: redis.Redis, role: Role, job: str | None,
               cluster: str, node: str) -> Slot | None:
    for root in [job] if job else list_jobs(client):
        try:
            found = scripts.claim_slot(root, role.value, claimant(), cluster, node)
        except UnknownJob as exc:
            if exc.code != ErrorCode.UNKNOWN_JOB or cluster:
                raise  # a named cluster or node that does not exist is an error, not a wait
            continue
        if found is not None:
            return Slot(found[0], role, found[1])
    return None
