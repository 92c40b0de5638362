"""Deploying a job: the dataset distributor stores every share, then one script call creates the
whole tree (and a second lists it in the server's job registry)."""

from __future__ import annotations

import redis

from hierfl.errors import JobExists
from hierfl.jobtree import ClusterSpec, leaf_client_slots
from hierfl.learning.distributor import plan_dataset, sheet_with_data_shape
from hierfl.protocol import ErrorCode
from hierfl.sheet import JobSheet
from hierfl.store.blobs import BlobStore
from hierfl.store.scripts import Scripts
from hierfl.store.state import job_exists


def deploy_job(client: redis.Redis, sheet: JobSheet) -> list[ClusterSpec]:
    """Create the job tree of `sheet`; returns its clusters in pre-order.

    Refuses (JobExists) before storing anything when the name is taken.
    """
    root = sheet.name
    if job_exists(client, root):
        raise JobExists(ErrorCode.JOB_EXISTS, f"job={root}: a job of this name exists already "
                        f"(hierfl delete {root} removes it)")
    tree = sheet.tree()
    plan = plan_dataset(sheet, leaf_client_slots(tree))
    stored = sheet_with_data_shape(sheet, plan)
    blobs = BlobStore(client, root)
    shares: dict[str, dict[str, str]] = {}
    for (cluster, client_id), data in plan.shares.items():
        shares.setdefault(cluster, {})[client_id] = blobs.put(data)
    testset = blobs.put(plan.test)
    scripts = Scripts(client)
    scripts.deploy(root, tree, stored.to_json(), sheet.rounds, shares, testset)
    scripts.register_job(root)
    return tree
