"""Waiting without polling: block on keyspace notifications, re-read the truth when woken.

Order matters: subscribe, wait for the server's confirmation, and only then read the state, so
a change made between the read and the wait still wakes us. Notifications are hints and the
hash is the truth: the caller re-reads on every wake-up, and a bounded safety timeout covers a
notification lost to a reconnect.

On a Redis Cluster the subscription is made on the primary that owns each watched key
(`hierfl.store.shards`), and a waiter whose key's slot has moved resubscribes on the new owner
before it waits again, then has its caller re-read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import redis

from hierfl.errors import RedisUnavailable
from hierfl.store.connection import keyspace_channel
from hierfl.store.shards import AnyRedis, ShardedPubSub, open_pubsub

if TYPE_CHECKING:
    from hierfl.store.state import ClusterState

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a waiter blocks before re-reading anyway (a lost notification costs at most this).
SAFETY_TIMEOUT = 5.0
#: Seconds past a state's own wake-up time (a deadline) before re-reading, so that the server's
#: clock has surely passed it too.
WAKE_MARGIN = 0.005
#: How long the server may take to confirm a subscription.
CONFIRM_TIMEOUT = 5.0


class Waiter:
    """What a node needs of a waiter: `wait` for a change, `until` a state is ready.

    Two kinds: `KeyWaiter` has its own subscription; `hierfl.store.hub.SharedWaiter` shares
    one connection with every other waiter of its process.
    """

    safety_timeout: float
    wakeups: int

    def __enter__(self) -> Waiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a watched key changes (True) or the timeout passes (False)."""
        raise NotImplementedError

    def wake_only_for(self, cluster: str, may_act: Callable[[ClusterState], bool]) -> None:
        """A hint: a change of `cluster`'s hash need not wake this waiter when the hash, read
        after it (the members' own entries unread), shows a state in which `may_act` is
        False. A waiter with a subscription of its own ignores it (its caller reads anyway);
        a hub's waiter lets the hub read once for all its waiters (`SharedWaiter`). The safety
        timeout still wakes it."""

    def until(
        self,
        read: Callable[[], T],
        ready: Callable[[T], bool],
        deadline: float | None = None,
        wake_in: Callable[[T], float | None] | None = None,
    ) -> T:
        """Re-read on every wake-up until `ready(read())`; returns that state.

        `deadline` (a `time.monotonic()` value) bounds the whole wait: TimeoutError after it.
        `wake_in(state)`, seconds from now or None, is a moment the state itself names (a round's
        deadline): the wait ends then even if no key changes, so `ready` can see it has come.
        """
        while True:
            state = read()
            if ready(state):
                return state
            timeout = self.safety_timeout
            if wake_in is not None and (due := wake_in(state)) is not None:
                timeout = min(timeout, max(due, 0.0) + WAKE_MARGIN)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the awaited state did not come in time")
                timeout = min(timeout, left)
            self.wait(timeout)


#: Makes a waiter on some keys with a safety timeout (`KeyWaiter`, or a hub's `waiter`).
WaiterFactory = Callable[[list[str], float], Waiter]


class KeyWaiter(Waiter):
    """Wakes when any of the watched keys changes, on a subscription of its own. Use as a
    context manager."""

    def __init__(
        self, client: AnyRedis, watched: list[str], safety_timeout: float = SAFETY_TIMEOUT
    ) -> None:
        self.client = client
        self.channels = [keyspace_channel(client, key) for key in watched]
        self.safety_timeout = safety_timeout
        self.pubsub: redis.client.PubSub | ShardedPubSub | None = None
        self.wakeups = 0  # notifications received (for tests and benchmarks)

    def __enter__(self) -> KeyWaiter:
        self.pubsub = open_pubsub(self.client)
        try:
            self.pubsub.subscribe(*self.channels)
            self._await_confirmations(self.channels)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None

    def _await_confirmations(self, channels: list[str]) -> None:
        pending = set(channels)
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RedisUnavailable(f"the server did not confirm the subscription to {pending}")
            message = self.pubsub.get_message(timeout=left)
            if message and message["type"] == "subscribe":
                channel = message["channel"]
                pending.discard(channel.decode() if isinstance(channel, bytes) else channel)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a watched key changes (True) or the timeout passes (False).

        Every notification already queued is consumed too, so one re-read covers a burst.
        """
        assert self.pubsub is not None, "use KeyWaiter as a context manager"
        if self._follow_moved_slots():
            return True
        limit = self.safety_timeout if timeout is None else timeout
        message = self.pubsub.get_message(timeout=limit)
        woke = bool(message and message["type"] == "message")
        while message is not None:
            message = self.pubsub.get_message(timeout=0)
            woke = woke or bool(message and message["type"] == "message")
        if woke:
            self.wakeups += 1
        return woke

    def _follow_moved_slots(self) -> bool:
        """On a cluster: resubscribe the channels whose slot moved to another primary (the
        client learnt it from a MOVED reply to the caller's last read). True when it did: a
        change made before the new subscription was confirmed went unheard, so re-read."""
        if not isinstance(self.pubsub, ShardedPubSub):
            return False
        moved = self.pubsub.moved(self.channels)
        if not moved:
            return False
        self.pubsub.move(moved)
        self._await_confirmations(moved)
        return True
