"""What the live view shows, read from Redis in one go and frozen.

`read_snapshot` reads the whole tree one pipeline per level (`hierfl.store.state.read_job`), the
metrics, and the last few events of the job's stream (XREVRANGE). The result never changes, so
`hierfl.tui.render.render` can be a pure function of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from hierfl import keys
from hierfl.cli.events import Entry, read_last
from hierfl.protocol import Field, Outcome
from hierfl.store.state import ClusterState, read_job

#: Events the footer shows.
EVENTS = 6


@dataclass(frozen=True)
class Snapshot:
    root: str
    clusters: tuple[ClusterState, ...]  # pre-order, the root first
    metrics: tuple[dict, ...]  # one per evaluated round, oldest first
    events: tuple[Entry, ...]  # the last few, oldest first
    finished: bool  # the root finished and every node exited

    @property
    def top(self) -> ClusterState:
        return self.clusters[0]

    @property
    def outcome(self) -> str:
        return self.top.outcome or Outcome.RUNNING.value

    @property
    def reason(self) -> str:
        return self.top.fields.get(Field.REASON.value, "")

    @property
    def created_ms(self) -> int | None:
        text = self.top.fields.get(Field.CREATED_AT.value, "")
        return int(text) if text.isdigit() else None

    @property
    def last_event_ms(self) -> int | None:
        return int(self.events[-1][0].split("-")[0]) if self.events else None

    @property
    def latest_metric(self) -> dict | None:
        return self.metrics[-1] if self.metrics else None

    def level_of(self, cluster: ClusterState) -> int:
        text = cluster.fields.get(Field.LEVEL.value, "")
        return int(text) if text.isdigit() else 0


def read_snapshot(client: redis.Redis, root: str, events: int = EVENTS) -> Snapshot | None:
    """The job tree `root` as it is now, or None when there is no such job."""
    job = read_job(client, root)
    if job is None:
        return None
    return Snapshot(
        root=root,
        clusters=tuple(job.clusters.values()),
        metrics=tuple(job.metrics),
        events=tuple(read_last(client, keys.events(root), events)) if events else (),
        finished=job.finished,
    )


def watched_keys(snapshot: Snapshot) -> list[str]:
    """Every key whose change the view shows: each cluster's hash, stages and member hashes, the
    metrics hash and the event stream (streams notify only with the `t` flag, which hierfl does
    not require; every transition also writes a hash, so the hashes alone keep the view live)."""
    found: list[str] = []
    for cluster in snapshot.clusters:
        found += [keys.job(cluster.name), keys.stages(cluster.name), keys.clients(cluster.name),
                  keys.workers(cluster.name)]
    return [*found, keys.metrics(snapshot.root), keys.events(snapshot.root)]
