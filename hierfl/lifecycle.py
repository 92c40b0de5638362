"""A job's life: deploy (the dataset distributor stores every share, then one script call
creates the whole tree), cancel (one script call stops every cluster) and delete (one script
call removes the state, then the blobs and the registry entry go).

The registry, `hierfl:jobs`, has no hash tag and may sit on another shard of a Redis Cluster
than the tree: it is written by its own script call, never together with the tree's keys.
"""

from __future__ import annotations

import redis

from hierfl import keys
from hierfl.errors import JobExists
from hierfl.jobtree import ClusterSpec, leaf_client_slots
from hierfl.learning.distributor import plan_dataset, sheet_with_data_shape
from hierfl.protocol import ErrorCode
from hierfl.sheet import JobSheet
from hierfl.store.blobs import BlobStore
from hierfl.store.scripts import Scripts
from hierfl.store.shards import AnyRedis, owner
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
    if stored.model.name != "mlp":  # a user's factory fails here, not later on every node
        from hierfl.learning.models import build_model

        build_model(stored.model, plan.n_features, plan.n_classes, stored.seed)
    blobs = BlobStore(client, root)
    shares: dict[str, dict[str, str]] = {}
    for (cluster, client_id), data in plan.shares.items():
        shares.setdefault(cluster, {})[client_id] = blobs.put(data)
    testset = blobs.put(plan.test)
    scripts = Scripts(client)
    scripts.deploy(root, tree, stored.to_json(), sheet.rounds, shares, testset,
                   sheet.keep_checkpoints, sheet.evaluate_every)
    scripts.register_job(root)
    return tree


def cancel_job(client: redis.Redis, root: str, reason: str = "") -> int:
    """Stop a running job; every node exits cleanly. Returns the clusters stopped."""
    return Scripts(client).cancel_job(root, reason)


def delete_job(client: AnyRedis, root: str, force: bool = False) -> int:
    """Remove every key of the tree. Refused while nodes are live, unless `force`.

    The tree is one slot: on a Redis Cluster only the shard that owns it is scanned, and each
    batch of keys is unlinked there in one command.
    """
    scripts = Scripts(client)
    deleted = scripts.delete_job(root, force)
    batch: list[bytes] = []
    shard = owner(client, keys.job(root))
    for key in shard.scan_iter(match=keys.tree_pattern(root), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    scripts.unregister_job(root)
    return deleted
