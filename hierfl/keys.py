"""Every Redis key hierfl uses, built in one place.

All keys of one job tree carry the hash tag ``{ROOT}`` so that a script can touch the whole tree
and the job works unchanged on Redis Cluster. The Lua side gets the same templates through the
generated constants include (see `hierfl.store.loader`).
"""

from __future__ import annotations

PREFIX = "hierfl"

#: Key templates: ``{root}`` is the root job's name, ``{cluster}`` a cluster job's name.
#: Per-tree keys are named ``hierfl:{ROOT}:<kind>[:<cluster>]``.
TEMPLATES: dict[str, str] = {
    "job": "hierfl:{{{root}}}:job:{cluster}",  # cluster hash: flags, process stage, generation ...
    # client_stage, worker_stage, updated_at: they move whenever a member does, so they live
    # apart from the cluster hash that every member waits on (a change there wakes them all).
    "stages": "hierfl:{{{root}}}:stages:{cluster}",
    "clients": "hierfl:{{{root}}}:clients:{cluster}",  # member id -> status
    "workers": "hierfl:{{{root}}}:workers:{cluster}",  # worker id -> status
    "submissions": "hierfl:{{{root}}}:submissions:{cluster}",  # member id -> params digest
    "samples": "hierfl:{{{root}}}:samples:{cluster}",  # member id -> training sample count
    "aggregates": "hierfl:{{{root}}}:aggregates:{cluster}",  # worker id -> aggregate digest
    "excluded": "hierfl:{{{root}}}:excluded:{cluster}",  # member id -> why its params were bad
    "shares": "hierfl:{{{root}}}:shares:{cluster}",  # client id -> dataset share digest
    "free": "hierfl:{{{root}}}:free:{role}",  # list of unclaimed "cluster/id" slots
    "claims": "hierfl:{{{root}}}:claims",  # "cluster/role/id" -> claimant
    "sheet": "hierfl:{{{root}}}:sheet",  # the job sheet (TOML text)
    "testset": "hierfl:{{{root}}}:testset",  # digest of the held-out test split
    "history": "hierfl:{{{root}}}:history",  # round -> global digest after that round
    "metrics": "hierfl:{{{root}}}:metrics",  # round -> JSON {accuracy, loss}
    # round -> global digest, for each agreed round the job evaluates that has no metric yet:
    # what root workers score next and which checkpoints must live (O(1) a round to read).
    "unscored": "hierfl:{{{root}}}:unscored",
    "events": "hierfl:{{{root}}}:events",  # capped stream of transitions
    "blob": "hierfl:{{{root}}}:blob:{digest}",  # content-addressed safetensors bytes
}

#: The registry of job trees on this server (root name -> creation time). Not tagged: it is an
#: index across trees, written by its own script.
JOBS = "hierfl:jobs"

#: Scratch keys for probing whether keyspace notifications arrive (deleted at once).
PROBE = "hierfl:probe:{token}"


def root_of(cluster: str) -> str:
    """The root job name of a cluster job name (``demo#0_1`` -> ``demo``)."""
    return cluster.split("#", 1)[0]


def job(cluster: str) -> str:
    return TEMPLATES["job"].format(root=root_of(cluster), cluster=cluster)


def stages(cluster: str) -> str:
    return TEMPLATES["stages"].format(root=root_of(cluster), cluster=cluster)


def clients(cluster: str) -> str:
    return TEMPLATES["clients"].format(root=root_of(cluster), cluster=cluster)


def workers(cluster: str) -> str:
    return TEMPLATES["workers"].format(root=root_of(cluster), cluster=cluster)


def members(cluster: str, role: str) -> str:
    return clients(cluster) if role == "client" else workers(cluster)


def submissions(cluster: str) -> str:
    return TEMPLATES["submissions"].format(root=root_of(cluster), cluster=cluster)


def samples(cluster: str) -> str:
    return TEMPLATES["samples"].format(root=root_of(cluster), cluster=cluster)


def aggregates(cluster: str) -> str:
    return TEMPLATES["aggregates"].format(root=root_of(cluster), cluster=cluster)


def excluded(cluster: str) -> str:
    return TEMPLATES["excluded"].format(root=root_of(cluster), cluster=cluster)


def shares(cluster: str) -> str:
    return TEMPLATES["shares"].format(root=root_of(cluster), cluster=cluster)


def free(root: str, role: str) -> str:
    return TEMPLATES["free"].format(root=root, role=role)


def claims(root: str) -> str:
    return TEMPLATES["claims"].format(root=root)


def sheet(root: str) -> str:
    return TEMPLATES["sheet"].format(root=root)


def testset(root: str) -> str:
    return TEMPLATES["testset"].format(root=root)


def history(root: str) -> str:
    return TEMPLATES["history"].format(root=root)


def metrics(root: str) -> str:
    return TEMPLATES["metrics"].format(root=root)


def unscored(root: str) -> str:
    return TEMPLATES["unscored"].format(root=root)


def events(root: str) -> str:
    return TEMPLATES["events"].format(root=root)


def blob(root: str, digest: str) -> str:
    return TEMPLATES["blob"].format(root=root, digest=digest)


def tree_pattern(root: str) -> str:
    """A SCAN pattern matching every key of one job tree."""
    return f"{PREFIX}:{{{root}}}:*"
