"""Connect to the Redis that holds hierfl's state, and make sure it can serve hierfl.

hierfl needs Redis >= 6.2 (or Valkey) and keyspace notifications for generic and hash events:
nodes block on their cluster hash's keyspace channel instead of polling. A server that fails
either check is refused up front, with a message that says how to fix it, rather than leaving
nodes waiting forever for notifications that never come.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hierfl import keys
from hierfl.errors import BadInput, RedisUnavailable
from hierfl.store.server import EmbeddedServer

MIN_VERSION = (6, 2)
#: Every Redis call made while connecting is bounded by this (seconds), unlike the returned
#: client, which blocks as long as a waiter needs.
PROBE_TIMEOUT = 3.0
#: The notification classes hierfl needs: keyspace channel, generic commands, hashes.
REQUIRED_FLAGS = "Kgh"
_QUERY_PASSWORD = re.compile(r"(?i)(^|&)(password=)[^&]*")


def url_for_display(url: str) -> str:
    """`url` with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return re.sub(r"://[^@/]*@", "://***@", url)
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = _QUERY_PASSWORD.sub(r"\1\2***", parts.query)
    # Built by hand: urlunsplit would turn unix:///path into unix:/path.
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def resolve_url(url: str | None = None) -> str:
    """The Redis to use: `url`, else $HIERFL_REDIS_URL, else the embedded server (started or
    reused)."""
    if url and url.strip():
        return url.strip()
    if env := os.environ.get("HIERFL_REDIS_URL", "").strip():
        return env
    return EmbeddedServer().start().url


def connect(url: str | None = None) -> redis.Redis:
    """A client for hierfl's Redis, after checking that the server is reachable and usable.

    Raises RedisUnavailable within a few seconds if not: the checks run on a probe client
    with short timeouts and no retries, because the returned client has no read timeout.
    """
    resolved = resolve_url(url)
    probe = _client(resolved, socket_timeout=PROBE_TIMEOUT, retry=Retry(NoBackoff(), 0))
    try:
        _ping(probe, resolved)
        check_server(probe, resolved)
    finally:
        probe.close()
    client = _client(resolved, socket_timeout=None)
    _ping(client, resolved)
    return client


def _client(url: str, **overrides: object) -> redis.Redis:
    kwargs: dict[str, object] = {
        "decode_responses": False,
        "socket_connect_timeout": 3,
        "socket_timeout": None,
        "health_check_interval": 30,
        "retry_on_timeout": False,
    }
    kwargs.update(overrides)
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise BadInput(f"not a usable Redis URL: {url_for_display(url)}: {exc}") from exc


def _ping(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {url_for_display(url)}: {exc}") from exc


def check_server(client: redis.Redis, url: str) -> None:
    """Refuse a server that is too old or whose keyspace notifications cannot be turned on."""
    _check_version(client, url)
    _check_notifications(client, url)


def _check_version(client: redis.Redis, url: str) -> None:
    try:
        info = client.info("server")
    except redis.RedisError as exc:
        raise RedisUnavailable(
            f"cannot read INFO server from {url_for_display(url)}: {exc}"
        ) from exc
    if "valkey_version" in info:
        return  # every Valkey release descends from Redis 7.2
    version = str(info.get("redis_version", "0"))
    if _version_tuple(version) < MIN_VERSION:
        raise RedisUnavailable(
            f"Redis at {url_for_display(url)} is version {version}; hierfl needs Redis >= "
            f"{'.'.join(map(str, MIN_VERSION))} or Valkey"
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"6.2.14"`` -> ``(6, 2, 14)``; unparsable parts count as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:3])


def notifications_sufficient(flags: str) -> bool:
    """Whether `notify-keyspace-events` flags publish hash and generic events on keyspace
    channels (``A`` stands for all event classes)."""
    return "K" in flags and ("A" in flags or ("g" in flags and "h" in flags))


def _missing_flags(flags: str) -> str:
    if "A" in flags:
        return "" if "K" in flags else "K"
    return "".join(flag for flag in REQUIRED_FLAGS if flag not in flags)


def _check_notifications(client: redis.Redis, url: str) -> None:
    """Turn the needed notifications on if they are off, or explain how to."""
    try:
        reply = client.config_get("notify-keyspace-events")
    except redis.ResponseError as exc:
        # CONFIG is disabled (managed Redis, ACL): see whether notifications arrive anyway.
        if not _notifications_arrive(client):
            raise _notifications_off(url, None, f"CONFIG is not available ({exc})") from exc
        return
    flags = _as_text(next(iter(reply.values()), b""))
    if notifications_sufficient(flags):
        return
    wanted = flags + _missing_flags(flags)
    try:
        client.config_set("notify-keyspace-events", wanted)
    except redis.ResponseError as exc:
        raise _notifications_off(url, flags, str(exc)) from exc


def _notifications_off(url: str, flags: str | None, reason: str) -> RedisUnavailable:
    """The refusal, saying exactly which setting to change (`flags` None: CONFIG unreadable)."""
    wanted = (flags or "") + _missing_flags(flags or "")
    current = "unknown" if flags is None else repr(flags)
    return RedisUnavailable(
        f"keyspace notifications are off on Redis at {url_for_display(url)} "
        f"(notify-keyspace-events is {current}) and hierfl cannot turn them on: {reason}. "
        "hierfl's nodes wait on them. Enable them with the line "
        f"`notify-keyspace-events {wanted}` in redis.conf, or run "
        f"`redis-cli CONFIG SET notify-keyspace-events {wanted}` "
        "(on a managed Redis, set its notify-keyspace-events parameter to include K, g and h)."
    )


def _notifications_arrive(client: redis.Redis) -> bool:
    """Probe: do an HSET and a DEL on a scratch key publish on its keyspace channel?"""
    key = keys.PROBE.format(token=uuid.uuid4().hex)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(keyspace_channel(client, key))
        if pubsub.get_message(timeout=PROBE_TIMEOUT) is None:  # subscription confirmed
            return False
        client.hset(key, "probe", "1")
        client.delete(key)
        return _events_seen(pubsub, {"hset", "del"}) == {"hset", "del"}
    except redis.RedisError:
        return False
    finally:
        pubsub.close()
        with contextlib.suppress(redis.RedisError):
            client.delete(key)


def _events_seen(pubsub: redis.client.PubSub, wanted: set[str]) -> set[str]:
    """The wanted events that arrive within a second (they follow the commands at once)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 1.0
    while seen != wanted and (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=left)
        if message and message.get("type") == "message":
            seen.add(_as_text(message["data"]))
    return seen & wanted


def _as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def db_of(client: redis.Redis) -> int:
    """The database number the client talks to (it names keyspace channels)."""
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def keyspace_channel(client: redis.Redis, key: str) -> str:
    """The channel on which the server announces changes to `key` (``K`` notifications)."""
    return f"__keyspace@{db_of(client)}__:{key}"
