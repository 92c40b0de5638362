"""The live loop of `hierfl watch`: redraw when Redis says something changed, never poll.

A `KeyWaiter` subscribes to every hash of the tree (cluster, clients, workers), the metrics hash
and the event stream, then the job is read and drawn. Each notification leads to one re-read and
one redraw, at most `MIN_INTERVAL` apart: notifications that arrive meanwhile are consumed and
covered by the same re-read. Between notifications the frame is redrawn once a `TICK` from the
same snapshot (the elapsed clock moves; Redis is not asked), and re-read after the waiter's
safety timeout in case a notification was lost. The loop ends after drawing the frame in which
every node has exited.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from rich.console import Console
from rich.live import Live

from hierfl.errors import RedisUnavailable, UnknownJob
from hierfl.protocol import ErrorCode
from hierfl.store.waiter import SAFETY_TIMEOUT, KeyWaiter
from hierfl.tui.render import render
from hierfl.tui.snapshot import Snapshot, read_snapshot, watched_keys

#: At most this often (seconds) a redraw follows a notification: 10 frames a second.
MIN_INTERVAL = 0.1
#: Without notifications, the frame (its elapsed clock) is redrawn this often, without a read.
TICK = 1.0


def read_or_fail(client: redis.Redis, root: str) -> Snapshot:
    snapshot = read_snapshot(client, root)
    if snapshot is None:
        raise UnknownJob(ErrorCode.UNKNOWN_JOB, f"job={root}: no such job")
    return snapshot


def watch(client: redis.Redis, root: str, console: Console, *,
          min_interval: float = MIN_INTERVAL, tick: float = TICK,
          safety_timeout: float = SAFETY_TIMEOUT,
          clock: Callable[[], float] = time.time) -> Snapshot:
    """Draw `root` live on `console` until every node has exited; returns the last snapshot.

    Raises UnknownJob when there is no such job (or it disappears while watched).
    """
    try:
        return _watch(client, root, console, min_interval=min_interval, tick=tick,
                      safety_timeout=safety_timeout, clock=clock)
    except redis.ConnectionError as exc:
        raise RedisUnavailable(f"lost the connection to Redis while watching job {root}: "
                               f"{exc}") from exc


def _watch(client: redis.Redis, root: str, console: Console, *, min_interval: float,
           tick: float, safety_timeout: float, clock: Callable[[], float]) -> Snapshot:
    snapshot = read_or_fail(client, root)
    with Live(console=console, auto_refresh=False, redirect_stdout=False,
              redirect_stderr=False) as live:
        while True:
            watched = watched_keys(snapshot)
            with KeyWaiter(client, watched, safety_timeout=safety_timeout) as waiter:
                # Subscribed and confirmed: from here on no change can slip by unseen.
                snapshot = read_or_fail(client, root)
                live.update(render(snapshot, clock()), refresh=True)
                snapshot = _follow(client, root, waiter, live, snapshot, watched,
                                   min_interval=min_interval, tick=tick, clock=clock)
            if snapshot.finished:
                return snapshot
            # The tree changed shape (deleted and deployed anew): subscribe to its keys.


def _follow(client: redis.Redis, root: str, waiter: KeyWaiter, live: Live, snapshot: Snapshot,
            watched: list[str], *, min_interval: float, tick: float,
            clock: Callable[[], float]) -> Snapshot:
    """Redraw on every notification until the job finishes or its keys change."""
    last_draw = last_read = time.monotonic()
    while not snapshot.finished:
        woke = waiter.wait(timeout=min(tick, waiter.safety_timeout))
        if woke or time.monotonic() - last_read >= waiter.safety_timeout:
            pause = last_draw + min_interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
                waiter.wait(timeout=0)  # consume what came meanwhile: one read covers it
            snapshot = read_or_fail(client, root)
            last_read = time.monotonic()
        live.update(render(snapshot, clock()), refresh=True)
        last_draw = time.monotonic()
        if watched_keys(snapshot) != watched:
            break
    return snapshot
