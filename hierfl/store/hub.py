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
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis

from hierfl import keys
from hierfl.errors import RedisUnavailable
from hierfl.store.connection import keyspace_channel
from hierfl.store.waiter import CONFIRM_TIMEOUT, SAFETY_TIMEOUT, Waiter

log = logging.getLogger(__name__)

#: How long the reader blocks on the connection before looking whether it should stop. A bound
#: on shutting down, not a polling interval: notifications are handed on as they arrive.
READ_BLOCK = 1.0
LOST = (redis.ConnectionError, redis.TimeoutError)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NotificationHub:
    """A pub/sub connection and the thread that reads it, shared by all waiters of a process.

    Use as a context manager (or `start` / `close`). `waiter(keys)` makes a waiter on it.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        # Always subscribed (to the job registry's channel), so the connection never drops back
        # to the unsubscribed state in which redis-py would read health-check replies itself.
        self.anchor = keyspace_channel(client, keys.JOBS)
        self._lock = threading.Condition()
        self._waiters: dict[str, set[SharedWaiter]] = {}
        self._confirmed: set[str] = set()
        self._pubsub: redis.client.PubSub | None = None
        self._reader: threading.Thread | None = None
        self._lost: BaseException | None = None
        self._closed = False
        self.notifications = 0  # messages handed on (for tests and benchmarks)

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

    def waiter(self, watched: list[str], safety_timeout: float = SAFETY_TIMEOUT) -> SharedWaiter:
        """A waiter on `watched` keys; subscribed when entered (`with hub.waiter(...) as w`)."""
        return SharedWaiter(self, watched, safety_timeout)

    # -- the connection (called with the lock held) -----------------------------------------

    def _connect(self) -> None:
        """Subscribe the anchor and every channel a live waiter watches, then start reading."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=False)
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
        # write to it: redis-py's periodic health check would be a second writer.
        pubsub.connection.health_check_interval = 0
        self._pubsub, self._lost = pubsub, None
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
                self._pubsub.subscribe(*new)
            deadline = time.monotonic() + CONFIRM_TIMEOUT
            while not self._confirmed.issuperset(waiter.channels):
                if self._lost is not None:
                    raise redis.ConnectionError(f"lost the notification connection: {self._lost}")
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(set(waiter.channels) - self._confirmed)
                    self._drop(RedisUnavailable("subscription not confirmed"))
                    raise RedisUnavailable(f"the server did not confirm the subscription to "
                                           f"{missing}")
                self._lock.wait(left)

    def _remove(self, waiter: SharedWaiter) -> None:
        with self._lock:
            gone = []
            for channel in waiter.channels:
                watchers = self._waiters.get(channel)
                if watchers is None:
                    continue
                watchers.discard(waiter)
                if not watchers:
                    del self._waiters[channel]
                    self._confirmed.discard(channel)
                    gone.append(channel)
            if gone and self._pubsub is not None and self._lost is None:
                try:
                    self._pubsub.unsubscribe(*gone)
                except LOST as exc:
                    log.debug("unsubscribe failed: %s", exc)  # the reader sees the loss too

    # -- the reader thread -----------------------------------------------------------------

    def _read(self, pubsub: redis.client.PubSub) -> None:
        while True:
            with self._lock:
                if self._closed or self._pubsub is not pubsub:
                    return
            try:
                message = pubsub.get_message(timeout=READ_BLOCK)
            except (*LOST, ValueError, AttributeError) as exc:  # closed under our feet, or lost
                self._on_lost(pubsub, exc)
                return
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        kind, channel = message["type"], _text(message["channel"])
        if kind == "message":
            with self._lock:
                watchers = list(self._waiters.get(channel, ()))
                self.notifications += 1
            for waiter in watchers:
                waiter.notify()
        elif kind == "subscribe":
            with self._lock:
                if channel in self._waiters or channel == self.anchor:
                    self._confirmed.add(channel)
                self._lock.notify_all()

    def _on_lost(self, pubsub: redis.client.PubSub, error: BaseException) -> None:
        with self._lock:
            if not self._closed and self._pubsub is pubsub:
                log.warning("lost the notification connection: %s", error)
                self._drop(error)

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


class SharedWaiter(Waiter):
    """A waiter whose notifications come through a `NotificationHub`."""

    def __init__(self, hub: NotificationHub, watched: list[str],
                 safety_timeout: float = SAFETY_TIMEOUT) -> None:
        self.hub = hub
        self.channels = [keyspace_channel(hub.client, key) for key in watched]
        self.safety_timeout = safety_timeout
        self.wakeups = 0
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
        limit = self.safety_timeout if timeout is None else timeout
        woke = self._changed.wait(limit)
        self._changed.clear()
        if self._broken is not None:
            raise self._broken
        if woke:
            self.wakeups += 1
        return woke
