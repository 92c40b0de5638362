"""Job-tree names and shapes: ``NAME``, ``NAME#0``, ``NAME#0_1``, ...

A `ClusterSpec` describes one cluster job of a tree; `build_tree` lays out a uniform tree from a
topology. The deploy script receives the specs as JSON in pre-order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from hierfl.errors import BadInput

_ROOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CLUSTER_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})(#\d+(?:_\d+)*)?$")
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_root_name(name: str) -> str:
    if not _ROOT_NAME.match(name):
        raise BadInput(
            f"job name {name!r} is not valid: use 1-64 letters, digits, '_', '.', '-' "
            "(no '#', '{', '}' or ':'), starting with a letter or digit"
        )
    return name


def check_cluster_name(name: str) -> str:
    if not _CLUSTER_NAME.match(name):
        raise BadInput(
            f"cluster name {name!r} is not valid: expected NAME, NAME#i or NAME#i_j_... "
            "(for example demo#0_1)"
        )
    return name


def check_node_id(node_id: str) -> str:
    if not _NODE_ID.match(node_id):
        raise BadInput(
            f"node id {node_id!r} is not valid: use 1-64 letters, digits, '_', '.', '-'"
        )
    return node_id


def child_name(parent: str, index: int) -> str:
    """``demo`` -> ``demo#0``; ``demo#0`` -> ``demo#0_1``."""
    return f"{parent}#{index}" if "#" not in parent else f"{parent}_{index}"


def parent_name(cluster: str) -> str | None:
    if "#" not in cluster:
        return None
    head, path = cluster.split("#", 1)
    parts = path.split("_")
    return head if len(parts) == 1 else f"{head}#{'_'.join(parts[:-1])}"


def level_of(cluster: str) -> int:
    return 0 if "#" not in cluster else len(cluster.split("#", 1)[1].split("_"))


@dataclass(frozen=True)
class Tolerance:
    """How a cluster copes with slow or missing members (0 everywhere: wait for everyone)."""

    round_timeout_ms: int = 0  # how long a generation waits for submissions
    min_clients: int = 0  # submissions that suffice at that deadline (0: every member)
    aggregation_timeout_ms: int = 0  # how long aggregation waits for the workers
    quorum: int = 0  # identical aggregates consensus needs (0: a majority of the workers)


@dataclass
class ClusterSpec:
    name: str
    parent: str | None
    level: int
    children: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)  # direct client ids (not sub-clusters)
    workers: list[str] = field(default_factory=list)
    cluster_epochs: int = 1
    tolerance: Tolerance = field(default_factory=lambda: Tolerance())

    def to_json(self) -> dict:
        return asdict(self)


def _tolerance_at(tolerance: Tolerance | Sequence[Tolerance] | None, level: int) -> Tolerance:
    if tolerance is None:
        return Tolerance()
    if isinstance(tolerance, Tolerance):
        return tolerance
    return tolerance[min(level, len(tolerance) - 1)]


def build_tree(
    root: str,
    *,
    sub: list[int],
    clients: list[int],
    workers: list[int],
    cluster_epochs: list[int],
    tolerance: Tolerance | Sequence[Tolerance] | None = None,
) -> list[ClusterSpec]:
    """Lay out a uniform tree in pre-order.

    ``sub[l]`` is the number of sub-clusters of each cluster at level ``l`` (so the depth is
    ``len(sub)``); ``clients[l]``, ``workers[l]`` and ``cluster_epochs[l]`` give the direct
    clients, workers and local rounds of a cluster at level ``l`` (levels ``0..len(sub)``).
    ``tolerance`` is one for every cluster or one per level.
    """
    check_root_name(root)
    depth = len(sub)
    for label, values in (("clients", clients), ("workers", workers),
                          ("cluster_epochs", cluster_epochs)):
        if len(values) != depth + 1:
            raise BadInput(f"topology.{label} needs {depth + 1} values (one per level), "
                           f"got {len(values)}")
    specs: list[ClusterSpec] = []

    def add(name: str, parent: str | None, level: int) -> None:
        n_sub = sub[level] if level < depth else 0
        spec = ClusterSpec(
            name=name,
            parent=parent,
            level=level,
            children=[child_name(name, i) for i in range(n_sub)],
            clients=[f"c{i}" for i in range(clients[level])],
            workers=[f"w{i}" for i in range(workers[level])],
            cluster_epochs=1 if level == 0 else cluster_epochs[level],
            tolerance=_tolerance_at(tolerance, level),
        )
        if not spec.children and not spec.clients:
            raise BadInput(f"cluster {name} (level {level}) would have no clients and no "
                           "sub-clusters: give it clients or sub-clusters")
        if not spec.workers:
            raise BadInput(f"cluster {name} (level {level}) needs at least one worker")
        specs.append(spec)
        for child in spec.children:
            add(child, name, level + 1)

    add(root, None, 0)
    return specs


def leaf_client_slots(specs: list[ClusterSpec]) -> list[tuple[str, str]]:
    """Every (cluster, client id) that trains on data, in pre-order."""
    return [(s.name, c) for s in specs for c in s.clients]
