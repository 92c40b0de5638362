"""One notification connection for many waiters in one process.

`hierfl simulate` and `hierfl node --count N` run many nodes as threads of one process. Each
would otherwise hold a subscription (a connection) of its own; here one `NotificationHub` holds
a single pub/sub connection, subscribes each channel once however many waiters watch it, and
hands every notification to the waiters of its channel. A `SharedWaiter` keeps the contract of
`KeyWaiter`: subscribed and confirmed by the server before the caller's first read, woken on
every change, re-reading anyway after its safety timeout.

If the connection is lost, every waiter's next `wait` raises `redis.ConnectionError`, which is
what a node's own subscription would do: the node reconnects and starts a fresh session, whose
new waiter makes the hub connect again.

On a Redis Cluster the hub holds one connection per primary that owns a watched key
(`hierfl.store.shards.ShardedPubSub`), read by the same thread. Losing one of them breaks only
the waiters of that shard's channels (`ShardLost`); their nodes reconnect and resubscribe on
whichever primary owns the slot then. A waiter whose slot moved resubscribes before it waits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from hierfl import keys
from hierfl.errors import RedisUnavailable
from hierfl.store.connection import keyspace_channel
from hierfl.store.shards import AnyRedis, ShardedPubSub, ShardLost, open_pubsub
from hierfl.store.state import ClusterState, Member, decode_map, read_member
from hierfl.store.waiter import CONFIRM_TIMEOUT, SAFETY_TIMEOUT, Waiter

log = logging.getLogger(__name__)

#: How long the reader blocks on the connection before looking whether it should stop. A bound
#: on shutting down, not a polling interval: notifications are handed on as they arrive.
READ_BLOCK = 1.0
#: Most messages already received that the reader takes together: one script that writes a
#: hash three times sends three notifications at once, and its waiters are woken once for all.
BURST = 1024
LOST = (redis.ConnectionError, redis.TimeoutError)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Turns:
    """At most `n` of a process's nodes run at once; a node gives its turn back while it waits.

    A notification wakes every member of a cluster together. A hundred threads that then all
    want the GIL spend more time handing it to each other than running: with a thousand nodes
    in one process, half the CPU went to the kernel's futex calls. Taking turns, a few run (one
    computes while another waits for Redis) and the others stay asleep until it is theirs.
    A node holds its turn for its whole run (`turn`) except while it blocks on a notification,
    a read another node is making for it, or a reconnection backoff (`given_back`).

    An urgent node (a worker: its aggregating and scoring are short and the round, or its
    metric, waits for them) goes before every waiting node that is not: a root worker's score
    of round N no longer queues behind the training of round N+1. A freed turn wakes one
    waiter, never all of them.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"nodes running at once must be at least 1, got {n}")
        self.n = n
        self._lock = threading.Lock()
        self._urgent = threading.Condition(self._lock)
        self._others = threading.Condition(self._lock)
        self._running = 0
        self._urgent_waiting = 0
        self._held = threading.local()  # None, or the turn's urgency while the thread holds it

    @property
    def running(self) -> int:
        """Nodes holding a turn now."""
        with self._lock:
            return self._running

    @contextlib.contextmanager
    def turn(self, urgent: bool = False) -> Iterator[None]:
        self._acquire(urgent)
        self._held.value = urgent
        try:
            yield
        finally:
            self._held.value = None
            self._release()

    @contextlib.contextmanager
    def given_back(self) -> Iterator[None]:
        """Inside, the calling thread's turn (if it holds one) is free for another node."""
        urgent = getattr(self._held, "value", None)
        if urgent is None:
            yield
            return
        self._held.value = None
        self._release()
        try:
            yield
        finally:
            self._acquire(urgent)
            self._held.value = urgent

    def _acquire(self, urgent: bool) -> None:
        with self._lock:
            if urgent:
                self._urgent_waiting += 1
                try:
                    while self._running >= self.n:
                        self._urgent.wait()
                finally:
                    self._urgent_waiting -= 1
            else:
                while self._running >= self.n or self._urgent_waiting:
                    self._others.wait()
            self._running += 1
            self._wake_next()  # a turn still free goes on to the next in line

    def _release(self) -> None:
        with self._lock:
            self._running -= 1
            self._wake_next()

    def _wake_next(self) -> None:
        """(Lock held.) Wake as many waiters as there are free turns, urgent ones first; one
        woken to find its turn taken waits again, so none is lost."""
        free = self.n - self._running
        if free <= 0:
            return
        if self._urgent_waiting:
            self._urgent.notify(min(free, self._urgent_waiting))
        else:
            self._others.notify(free)

    def sleep(self, seconds: float) -> None:
        with self.given_back():
            time.sleep(seconds)


class NotificationHub:
    """A pub/sub connection and the thread that reads it, shared by all waiters of a process.

    Use as a context manager (or `start` / `close`). `waiter(keys)` makes a waiter on it. With
    `turns`, the nodes whose waiters it makes run `turns.n` at a time (`Turns`).
    """

    def __init__(self, client: AnyRedis, turns: Turns | None = None) -> None:
        self.client = client
        self.turns = turns or Turns(1 << 30)
        # Always subscribed (to the job registry's channel), so the connection never drops back
        # to the unsubscribed state in which redis-py would read health-check replies itself.
        self.anchor = keyspace_channel(client, keys.JOBS)
        self._lock = threading.Condition()
        self._waiters: dict[str, set[SharedWaiter]] = {}
        self._confirmed: set[str] = set()
        self._pubsub: redis.client.PubSub | ShardedPubSub | None = None
        self._reader: threading.Thread | None = None
        self._lost: BaseException | None = None
        self._closed = False
        self.notifications = 0  # messages handed on (for tests and benchmarks)
        # Per channel, how many notifications arrived; the connection count starts a new series
        # (notifications may have been missed while the connection was down).
        self._versions: dict[str, int] = {}
        self._connections = 0
        # The process's shared reads, once made (`SharedReads`): through them the hub reads a
        # cluster once for the waiters that wake only for some of its states.
        self.reads: SharedReads | None = None

    def __enter__(self) -> NotificationHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> NotificationHub:
        with self._lock:
            self._connect()
        return self

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pubsub, self._pubsub = self._pubsub, None
            reader = self._reader
        if pubsub is not None:
            pubsub.close()
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=READ_BLOCK + 1)

    def version(self, channel: str) -> tuple[int, int]:
        """Changes notified on `channel` so far: equal versions mean no notification came
        in between (on one connection; a reconnect starts a new series).

        Read without the lock (every node of the process asks on every wake-up): both counts
        only ever grow, so a read torn between two updates can only look newer than a
        snapshot's version, never equal to it after a change.
        """
        return self._connections, self._versions.get(channel, 0)

    def waiter(self, watched: list[str], safety_timeout: float = SAFETY_TIMEOUT) -> SharedWaiter:
        """A waiter on `watched` keys; subscribed when entered (`with hub.waiter(...) as w`)."""
        return SharedWaiter(self, watched, safety_timeout)

    # -- the connection (called with the lock held) -----------------------------------------

    def _connect(self) -> None:
        """Subscribe the anchor and every channel a live waiter watches, then start reading."""
        pubsub = open_pubsub(self.client, anchor=self.anchor)
        channels = [self.anchor, *self._waiters]
        pubsub.subscribe(*channels)
        pending, deadline = set(channels), time.monotonic() + CONFIRM_TIMEOUT
        while pending:  # the reader is not running yet: read the confirmations here
            left = deadline - time.monotonic()
            if left <= 0:
                pubsub.close()
                raise RedisUnavailable(f"the server did not confirm the subscription to "
                                       f"{sorted(pending)}")
            message = pubsub.get_message(timeout=left)
            if message and message["type"] == "subscribe":
                pending.discard(_text(message["channel"]))
        # Only the reader reads this connection, and only `_add`/`_remove` (under the lock)
        # write to it: redis-py's periodic health check would be a second writer. (A cluster's
        # node connections have none.)
        if not isinstance(pubsub, ShardedPubSub):
            pubsub.connection.health_check_interval = 0
        self._pubsub, self._lost = pubsub, None
        self._connections += 1
        self._confirmed = set(channels)
        self._reader = threading.Thread(target=self._read, args=(pubsub,),
                                        name="hierfl-notifications", daemon=True)
        self._reader.start()

    def _ensure_connected(self) -> None:
        if self._closed:
            raise RedisUnavailable("the notification hub is closed")
        if self._pubsub is None:
            self._connect()  # after a lost connection: a fresh subscription for a new session

    # -- waiters (called by SharedWaiter) ----------------------------------------------------

    def _add(self, waiter: SharedWaiter) -> None:
        with self._lock:
            self._ensure_connected()
            new = [c for c in waiter.channels if c not in self._waiters]
            for channel in waiter.channels:
                self._waiters.setdefault(channel, set()).add(waiter)
            if new:
                try:
                    self._pubsub.subscribe(*new)
                except BaseException:
                    self._unregister(waiter)  # its channels were never heard: not kept
                    raise
            self._await_confirmed(waiter.channels)

    def _await_confirmed(self, channels: list[str]) -> None:
        """Until the server confirmed every one of `channels` (lock held)."""
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while not self._confirmed.issuperset(channels):
            if self._lost is not None:
                raise redis.ConnectionError(f"lost the notification connection: {self._lost}")
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(channels) - self._confirmed)
                self._drop(RedisUnavailable("subscription not confirmed"))
                raise RedisUnavailable(f"the server did not confirm the subscription to "
                                       f"{missing}")
            self._lock.wait(left)

    def _follow_moved_slots(self, waiter: SharedWaiter) -> bool:
        """On a cluster: resubscribe `waiter`'s channels whose slot moved to another primary,
        and wake every waiter on them (a change made meanwhile went unheard). True if any."""
        pubsub = self._pubsub  # on a single server: never a lock taken here
        if not isinstance(pubsub, ShardedPubSub) or not pubsub.moved(waiter.channels):
            return False
        with self._lock:
            if self._pubsub is not pubsub or self._lost is not None:
                return False
            moved = [c for c in pubsub.moved(waiter.channels) if c in self._waiters]
            if not moved:
                return False
            self._confirmed.difference_update(moved)
            pubsub.move(moved)
            self._await_confirmed(moved)
            watchers = {w for c in moved for w in self._waiters.get(c, ())}
        for other in watchers:
            other.notify()
        return True

    def _remove(self, waiter: SharedWaiter) -> None:
        with self._lock:
            gone = self._unregister(waiter)
            if gone and self._pubsub is not None and self._lost is None:
                try:
                    self._pubsub.unsubscribe(*gone)
                except LOST as exc:
                    log.debug("unsubscribe failed: %s", exc)  # the reader sees the loss too

    def _unregister(self, waiter: SharedWaiter) -> list[str]:
        """Forget `waiter` (lock held); the channels nobody watches any more."""
        gone = []
        for channel in waiter.channels:
            watchers = self._waiters.get(channel)
            if watchers is None:
                continue
            watchers.discard(waiter)
            if not watchers:
                del self._waiters[channel]
                if channel != self.anchor:  # subscribed for as long as the hub lives
                    self._confirmed.discard(channel)
                    gone.append(channel)
        return gone

    # -- the reader thread -----------------------------------------------------------------

    def _read(self, pubsub: redis.client.PubSub) -> None:
        while True:
            with self._lock:
                if self._closed or self._pubsub is not pubsub:
                    return
            burst: list[dict] = []
            try:
                # Block for the first message, then take those already received with it.
                while len(burst) < BURST and (message := pubsub.get_message(
                        timeout=0 if burst else READ_BLOCK)) is not None:
                    burst.append(message)
            except ShardLost as exc:  # one shard of a cluster: the others are read on
                self._dispatch(burst)
                self._on_shard_lost(pubsub, exc)
                continue
            except (*LOST, ValueError, AttributeError) as exc:  # closed under our feet, or lost
                self._dispatch(burst)
                self._on_lost(pubsub, exc)
                return
            self._dispatch(burst)

    def _dispatch(self, burst: list[dict]) -> None:
        """Count every notification of `burst` and wake each of their waiters once."""
        woken: set[SharedWaiter] = set()
        with self._lock:
            for message in burst:
                kind, channel = message["type"], _text(message["channel"])
                if kind == "message":
                    woken.update(self._waiters.get(channel, ()))
                    self.notifications += 1
                    self._versions[channel] = self._versions.get(channel, 0) + 1
                elif kind == "subscribe":
                    if channel in self._waiters or channel == self.anchor:
                        self._confirmed.add(channel)
                    self._lock.notify_all()
        gated: dict[str, list[SharedWaiter]] = {}
        for waiter in woken:
            if waiter.gate is not None and self.reads is not None:
                gated.setdefault(waiter.gate[0], []).append(waiter)
            else:
                waiter.notify()
        for cluster, waiters in gated.items():
            self._notify_gated(cluster, waiters)

    def _notify_gated(self, cluster: str, waiters: list[SharedWaiter]) -> None:
        """Wake those of `waiters` whose node may act in `cluster` as it reads now (the shared
        snapshot their nodes then reuse); all of them when it cannot be read or is gone (they
        find out why themselves)."""
        try:
            state = self.reads.state(cluster)
        except redis.RedisError as exc:
            log.debug("could not read %s for its waiters (%s); waking them", cluster, exc)
            state = None
        for waiter in waiters:
            if state is None or _may_act(waiter, state):
                waiter.notify()

    def _on_lost(self, pubsub: redis.client.PubSub, error: BaseException) -> None:
        with self._lock:
            if not self._closed and self._pubsub is pubsub:
                log.warning("lost the notification connection: %s", error)
                self._drop(error)

    def _on_shard_lost(self, pubsub: ShardedPubSub, error: ShardLost) -> None:
        """Break the waiters of the lost shard's channels; they resubscribe when their nodes
        start a fresh session (on the slot's owner then)."""
        with self._lock:
            if self._closed or self._pubsub is not pubsub:
                return
            log.warning("%s", error)
            broken: set[SharedWaiter] = set()
            for channel in error.channels:
                broken.update(self._waiters.pop(channel, ()))
                self._confirmed.discard(channel)
        lost = redis.ConnectionError(str(error))
        for waiter in broken:
            waiter.break_with(lost)

    def _drop(self, error: BaseException) -> None:
        """Give up the connection (lock held): every waiter's next wait raises, and the next
        waiter to subscribe connects afresh."""
        pubsub, self._pubsub, self._lost = self._pubsub, None, error
        self._confirmed.clear()
        self._lock.notify_all()
        lost = redis.ConnectionError(f"lost the notification connection: {error}")
        for waiter in {w for ws in self._waiters.values() for w in ws}:
            waiter.break_with(lost)
        if pubsub is not None:
            with contextlib.suppress(*LOST):
                pubsub.close()


def _may_act(waiter: SharedWaiter, state: ClusterState) -> bool:
    try:
        return waiter.gate[1](state)
    except Exception:  # a node's own check failing must not stop the reader thread
        log.exception("a waiter's wake check failed; waking it")
        return True


class SharedWaiter(Waiter):
    """A waiter whose notifications come through a `NotificationHub`."""

    def __init__(self, hub: NotificationHub, watched: list[str],
                 safety_timeout: float = SAFETY_TIMEOUT) -> None:
        self.hub = hub
        self.channels = [keyspace_channel(hub.client, key) for key in watched]
        self.safety_timeout = safety_timeout
        self.wakeups = 0
        self.gate: tuple[str, Callable[[ClusterState], bool]] | None = None  # wake_only_for
        self._changed = threading.Event()
        self._broken: BaseException | None = None
        self._open = False

    def __enter__(self) -> SharedWaiter:
        self.hub._add(self)
        self._open = True
        return self

    def close(self) -> None:
        if self._open:
            self._open = False
            self.hub._remove(self)

    def wake_only_for(self, cluster: str, may_act: Callable[[ClusterState], bool]) -> None:
        self.gate = (cluster, may_act)

    def notify(self) -> None:
        self._changed.set()

    def break_with(self, error: BaseException) -> None:
        self._broken = error
        self._changed.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a watched key changes (True) or the timeout passes (False).

        The flag is cleared before the caller re-reads, so a change notified after that read
        sets it again and is never lost; a burst before it is one wake-up.
        """
        assert self._open, "use the waiter as a context manager"
        if self._broken is None and self.hub._follow_moved_slots(self):
            return True
        limit = self.safety_timeout if timeout is None else timeout
        with self.hub.turns.given_back():
            woke = self._changed.wait(limit)
        self._changed.clear()
        if self._broken is not None:
            raise self._broken
        if woke:
            self.wakeups += 1
        return woke


#: How old a shared snapshot may be and still be handed out; older, it is read afresh, so a
#: waiter's safety re-read (after SAFETY_TIMEOUT without a notification) always reaches Redis.
SNAPSHOT_MAX_AGE = 1.0


@dataclass(frozen=True)
class _Snapshot:
    version: tuple[int, int]
    taken: float  # time.monotonic() just before the read
    fields: dict[str, str]  # the cluster hash as read, decoded (empty: no such cluster)
    server_ms: int  # the server's clock at the read ...
    read_at: float  # ... and time.monotonic() just after it

    def server_now(self) -> int:
        """The server's clock now, carried forward from the read by this process's clock (never
        ahead of it: a deadline never looks due before the server says it is)."""
        return self.server_ms + int((time.monotonic() - self.read_at) * 1000)


@dataclass
class _PendingRead:
    """A read of a cluster's hash under way, at notification `version`."""

    version: tuple[int, int]
    done: threading.Event = field(default_factory=threading.Event)


class SharedReads:
    """One read of a cluster's hash per notification, shared by the nodes of one process.

    Every member of a cluster wakes on the same notification and would re-read the same hash;
    here the first one reads it and the others, arriving before any further notification, reuse
    it. A hash read at notification version v is as fresh as a read of each node's own: a
    change after it bumps the version and wakes them again. Each node still reads its own
    status and uploads itself (its own calls change those without notifying the hash), and
    only when the hash shows a phase in which they could make it act (`wants_own`): a client
    woken by its cluster moving to aggregation reads nothing more. Single server only: on a
    Redis Cluster a moved slot may resubscribe without a notification.
    """

    def __init__(self, client: AnyRedis, hub: NotificationHub) -> None:
        self.client = client
        self.hub = hub
        self.reads = 0  # cluster-hash reads that reached Redis (for tests and benchmarks)
        self._snapshots: dict[str, _Snapshot] = {}
        self._pending: dict[str, _PendingRead] = {}
        self._guard = threading.Lock()
        hub.reads = self  # the hub reads through these for its gated waiters

    def state(self, cluster: str) -> ClusterState | None:
        """`cluster` as the current snapshot shows it, no member's own entries read; None
        when there is no such cluster."""
        snapshot = self._cluster_hash(cluster)
        if not snapshot.fields:
            return None
        return ClusterState(cluster, snapshot.fields, {}, {}, None, None, snapshot.server_now())

    def read(self, cluster: str, member: Member,
             wants_own: Callable[[ClusterState], bool] | None = None) -> ClusterState | None:
        """`member`'s view of `cluster`; its own entries are read unless `wants_own`, given
        the cluster hash, says they cannot matter (see `read_member`)."""
        snapshot = self._cluster_hash(cluster)
        if not snapshot.fields:
            return None
        return read_member(self.client, cluster, member, snapshot.fields,
                           snapshot.server_now(), wants_own)

    def _cluster_hash(self, cluster: str) -> _Snapshot:
        """The current snapshot; without a lock when it is (every member of the cluster asks
        at once after a notification). Otherwise one node reads it and the others that asked
        at the same version wait for that read, all woken together when it lands."""
        channel = keyspace_channel(self.client, keys.job(cluster))
        while True:
            version = self.hub.version(channel)
            hit = self._snapshots.get(cluster)
            if (hit is not None and hit.version == version
                    and time.monotonic() - hit.taken < SNAPSHOT_MAX_AGE):
                return hit
            with self._guard:
                pending = self._pending.get(cluster)
                reader = pending is None or pending.version != version
                if reader:
                    pending = self._pending[cluster] = _PendingRead(version)
            if not reader:
                with self.hub.turns.given_back():
                    pending.done.wait()
                continue  # its snapshot, or (it failed, or it is stale already) a new read
            try:
                snapshot = self._read(cluster, version)
                self._snapshots[cluster] = snapshot
                return snapshot
            finally:
                with self._guard:
                    if self._pending.get(cluster) is pending:
                        del self._pending[cluster]
                pending.done.set()

    def _read(self, cluster: str, version: tuple[int, int]) -> _Snapshot:
        taken = time.monotonic()
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(keys.job(cluster))
        pipe.time()
        fields, (seconds, micros) = pipe.execute()
        with self._guard:
            self.reads += 1
        return _Snapshot(version, taken, decode_map(fields), seconds * 1000 + micros // 1000,
                         time.monotonic())
