"""Redis Cluster: which shard owns a key, and keyspace notifications from the owning shard.

Every key of a job tree carries the hash tag ``{ROOT}`` (`hierfl.keys`), so the whole tree lives
in one hash slot: one primary holds a job's coordination state and runs every script for it,
and different jobs spread over the shards. Keyspace notifications, however, are published only
by the node that holds the key, never forwarded over the cluster bus. A waiter must therefore
listen on the primary that owns its keys' slot, and follow the slot when it moves.

`ShardedPubSub` does that for the waiters (`KeyWaiter`, `NotificationHub`): one pub/sub
connection per primary that owns a subscribed channel's key, read together with `select`, so a
waiter still blocks on the server's push and never polls. Ownership comes from redis-py's slot
table, which a MOVED reply to any read updates; `moved` then names the channels to resubscribe
on their new owner. A lost shard connection raises `ShardLost` naming only that shard's
channels, so one failed shard does not disturb waiters on the others.

On a single server none of this is used: `open_pubsub` returns redis-py's own `PubSub`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import ssl
import threading
import time
from collections.abc import Iterable

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

log = logging.getLogger(__name__)

#: A client of either kind.
AnyRedis = redis.Redis | RedisCluster
#: Client-level retries of a cluster client: enough to follow a slot's MOVED or ASK inside a
#: MULTI/EXEC (redis-py retries those at this level), without backoff, so that an unreachable
#: shard is still reported at once to the node, which reconnects with its own backoff.
CLUSTER_RETRIES = 3
#: What a lost shard or a cluster in the middle of a failover looks like to a command.
CLUSTER_LOST = (redis.exceptions.ClusterDownError, redis.exceptions.SlotNotCoveredError,
                RedisClusterException)
_LINK_LOST = (redis.ConnectionError, redis.TimeoutError, OSError)


def is_cluster(client: object) -> bool:
    """Whether `client` talks to a Redis Cluster (redis-py's `RedisCluster`)."""
    return isinstance(client, RedisCluster)


def cluster_retry() -> Retry:
    return Retry(NoBackoff(), CLUSTER_RETRIES)


def key_of_channel(channel: str) -> str:
    """``__keyspace@0__:KEY`` -> ``KEY``."""
    return channel.split("__:", 1)[1]


def owner_node(client: RedisCluster, key: str) -> ClusterNode:
    """The primary that owns `key`'s slot, as far as the client's slot table knows."""
    return client.get_node_from_key(key)


def owner(client: AnyRedis, key: str) -> redis.Redis:
    """A plain client of the server that holds `key` (the client itself on a single server)."""
    if not is_cluster(client):
        return client
    return client.get_redis_connection(owner_node(client, key))


def node_clients(client: RedisCluster) -> list[tuple[ClusterNode, redis.Redis]]:
    """Every node of the cluster with a plain client of it, primaries first."""
    nodes = [*client.get_primaries(), *client.get_replicas()]
    return [(node, client.get_redis_connection(node)) for node in nodes]


def refresh(client: AnyRedis) -> None:
    """Re-read the cluster's topology (after a lost connection: a failover may have promoted a
    replica, or the slot moved). Nothing on a single server."""
    if is_cluster(client):
        client.nodes_manager.initialize()


def drop_idle_connections(client: AnyRedis) -> None:
    """Close idle (maybe dead) sockets; those in use by other threads find out themselves."""
    if not is_cluster(client):
        client.connection_pool.disconnect(inuse_connections=False)
        return
    for node in client.get_nodes():
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect(inuse_connections=False)


def ping_owner(client: AnyRedis, key: str) -> None:
    """PING the server that holds `key` (on a cluster, after re-reading the topology)."""
    refresh(client)
    owner(client, key).ping()


def open_pubsub(client: AnyRedis, anchor: str | None = None) -> PubSub | ShardedPubSub:
    """A pub/sub for keyspace channels: redis-py's own on a single server, a `ShardedPubSub`
    on a cluster (`anchor`: a channel every shard connection stays subscribed to)."""
    if is_cluster(client):
        return ShardedPubSub(client, anchor)
    return client.pubsub(ignore_subscribe_messages=False)


class ShardLost(redis.ConnectionError):
    """The connection to one shard is gone; `channels` were subscribed there."""

    def __init__(self, node: str, channels: list[str], error: BaseException) -> None:
        super().__init__(f"lost the notification connection to shard {node}: {error}")
        self.node = node
        self.channels = channels


class ShardedPubSub:
    """Keyspace channels subscribed on the primaries that own their keys.

    The subset of redis-py's `PubSub` the waiters use: `subscribe`, `unsubscribe`,
    `get_message` and `close`; plus `moved` and `move` to follow a slot to its new owner.
    Subscribing may happen from one thread while another reads (the hub's reader): a new shard
    connection wakes the reader through a pipe so that it is read at once.
    """

    def __init__(self, client: RedisCluster, anchor: str | None = None) -> None:
        self.client = client
        self.anchor = anchor
        self._links: dict[str, PubSub] = {}  # node name -> pub/sub on that node
        self._where: dict[str, str] = {}  # channel -> node name it is subscribed on
        self._lock = threading.RLock()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._turn = 0  # which link is read first, in turn, so none is starved
        self._closed = False

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, *channels: str) -> None:
        """Subscribe each channel on the primary that owns its key."""
        with self._lock:
            for name, (node, group) in self._by_owner(channels).items():
                if name in self._links:
                    self._links[name].subscribe(*group)  # confirmed again if subscribed
                else:
                    self._open_link(node, group)
                self._where.update((c, name) for c in group)

    def unsubscribe(self, *channels: str) -> None:
        with self._lock:
            by_node: dict[str, list[str]] = {}
            for channel in channels:
                if (name := self._where.pop(channel, None)) is not None:
                    by_node.setdefault(name, []).append(channel)
            for name, group in by_node.items():
                self._links[name].unsubscribe(*group)
                self._close_if_idle(name)

    def moved(self, channels: Iterable[str]) -> list[str]:
        """Channels whose key's slot now belongs to another primary than the one they are
        subscribed on (the client learns a move from the MOVED reply to a read)."""
        with self._lock:
            return [c for c in channels if c in self._where
                    and self._where[c] != owner_node(self.client, key_of_channel(c)).name]

    def move(self, channels: list[str]) -> None:
        """Resubscribe `channels` on their keys' current owners."""
        with self._lock:
            self.unsubscribe(*channels)
            self.subscribe(*channels)

    def _by_owner(self, channels: Iterable[str]) -> dict[str, tuple[ClusterNode, list[str]]]:
        groups: dict[str, tuple[ClusterNode, list[str]]] = {}
        for channel in channels:
            node = owner_node(self.client, key_of_channel(channel))
            groups.setdefault(node.name, (node, []))[1].append(channel)
        return groups

    def _open_link(self, node: ClusterNode, channels: list[str]) -> None:
        """A pub/sub connection to `node`, subscribed to the anchor (the hub counts on it never
        falling back to the unsubscribed state) and `channels`; kept only once subscribed."""
        link = self.client.get_redis_connection(node).pubsub(ignore_subscribe_messages=False)
        anchor = [self.anchor] if self.anchor and self.anchor not in channels else []
        try:
            link.subscribe(*anchor, *channels)
        except _LINK_LOST:
            with contextlib.suppress(*_LINK_LOST):
                link.close()
            raise
        self._links[node.name] = link
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b".")  # a reader blocked in select must read it too

    def _close_if_idle(self, name: str) -> None:
        if self.anchor is None and name not in self._where.values():
            link = self._links.pop(name)
            with contextlib.suppress(*_LINK_LOST):
                link.close()

    # -- reading ---------------------------------------------------------------------------

    def get_message(self, timeout: float = 0.0) -> dict | None:
        """The next message from any shard, waiting up to `timeout` seconds for one.

        Raises `ShardLost` when a shard's connection is gone (its channels are dropped).
        """
        deadline = time.monotonic() + timeout
        while not self._closed:
            links = self._snapshot()
            if (message := self._next_buffered(links)) is not None:
                return message
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._select(links, left)
        return None

    def _snapshot(self) -> list[tuple[str, PubSub]]:
        with self._lock:
            links = list(self._links.items())
        if links:
            self._turn = (self._turn + 1) % len(links)
            links = links[self._turn:] + links[:self._turn]
        return links

    def _next_buffered(self, links: list[tuple[str, PubSub]]) -> dict | None:
        """A message some link already has (read without blocking), or None."""
        for name, link in links:
            try:
                message = link.get_message(timeout=0)
            except _LINK_LOST as exc:
                raise self._lost(name, link, exc) from exc
            if message is not None:
                return message
        return None

    def _select(self, links: list[tuple[str, PubSub]], timeout: float) -> None:
        """Block until a link's socket or the wake-up pipe is readable, or `timeout`."""
        sockets = [sock for _, link in links
                   if link.connection is not None and (sock := link.connection._sock)]
        if any(isinstance(s, ssl.SSLSocket) and s.pending() for s in sockets):
            return  # decrypted bytes wait inside the TLS layer, invisible to select
        try:
            readable, _, _ = select.select([*sockets, self._wake_read], [], [], timeout)
        except (OSError, ValueError):
            return  # a link closed under us (moved or closed): take a fresh snapshot
        if self._wake_read in readable:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_read, 4096)

    def _lost(self, name: str, link: PubSub, error: BaseException) -> ShardLost:
        """Forget a shard whose connection is gone; the error naming its channels."""
        channels: list[str] = []
        with self._lock:
            if self._links.get(name) is link:  # not already replaced by a newer connection
                del self._links[name]
                channels = [c for c, where in self._where.items() if where == name]
                for channel in channels:
                    del self._where[channel]
        with contextlib.suppress(*_LINK_LOST):
            link.close()
        return ShardLost(name, channels, error)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            links, self._links = list(self._links.values()), {}
            self._where.clear()
        for link in links:
            with contextlib.suppress(*_LINK_LOST):
                link.close()
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b".")  # a reader in select returns and sees it closed
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
