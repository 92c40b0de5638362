"""Connect to the Redis that holds hierfl's state, and make sure it can serve hierfl.

hierfl needs Redis >= 6.2 (or Valkey) and keyspace notifications for generic and hash events:
nodes block on their cluster hash's keyspace channel instead of polling. A server that fails
either check is refused up front, with a message that says how to fix it, rather than leaving
nodes waiting forever for notifications that never come.

Credentials and TLS come with the URL (see docs/security.md):

- ``redis://user:password@host:port/db`` (AUTH with an ACL user; no user: ``default``);
- ``rediss://host:port?ssl_ca_certs=CA&ssl_certfile=CERT&ssl_keyfile=KEY`` (TLS; the query
  parameters are redis-py's: also ``ssl_cert_reqs``, ``ssl_check_hostname``, ``ssl_ca_path``);
- for ``rediss://`` URLs, $HIERFL_REDIS_CA, $HIERFL_REDIS_CERT and $HIERFL_REDIS_KEY stand in for
  the three file parameters the URL does not give (the URL wins);
- the embedded server's unix socket needs no credentials, unless it was started with
  ``--listen``: then its password is read from the 0600 file next to the socket.

A ``redis://`` or ``rediss://`` URL of a Redis Cluster node gives a `redis.cluster.RedisCluster`
client (docs/scaling.md): the server says so itself (``INFO cluster``: ``cluster_enabled:1``, or
HELLO's ``mode`` for a user that may not run INFO), and `hierfl --cluster-mode` or
$HIERFL_REDIS_CLUSTER=1 say so when it cannot be asked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import time
import uuid
import weakref
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoPermissionError, RedisClusterException
from redis.retry import Retry

from hierfl import keys
from hierfl.errors import BadInput, RedisUnavailable
from hierfl.store.server import EmbeddedServer, embedded_password
from hierfl.store.shards import AnyRedis, cluster_retry, is_cluster, node_clients, owner_node

log = logging.getLogger(__name__)

MIN_VERSION = (6, 2)
#: Reconnecting after a lost connection: the first pause between attempts, doubling up to the
#: cap, and how long a node keeps trying before it gives up (seconds; `hierfl node
#: --reconnect-timeout`).
RECONNECT_FIRST_DELAY = 0.1
RECONNECT_MAX_DELAY = 5.0
RECONNECT_TIMEOUT = 120.0
#: Every Redis call made while connecting is bounded by this (seconds), unlike the returned
#: client, which blocks as long as a waiter needs.
PROBE_TIMEOUT = 3.0
#: The notification classes hierfl needs: keyspace channel, generic commands, hashes.
REQUIRED_FLAGS = "Kgh"
_QUERY_PASSWORD = re.compile(r"(?i)(^|&)((?:ssl_)?password=)[^&]*")

#: TLS files a ``rediss://`` URL may leave out, and the environment variables that supply them.
TLS_ENV = {
    "ssl_ca_certs": "HIERFL_REDIS_CA",
    "ssl_certfile": "HIERFL_REDIS_CERT",
    "ssl_keyfile": "HIERFL_REDIS_KEY",
}
#: Query parameters naming files that must exist before we try a handshake with them.
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")

#: The job tree a client was connected for (see `connect`'s `job`): `check_server` probes
#: inside that tree when it runs again later on the same client (a node's reconnect).
_PROBE_JOB: weakref.WeakKeyDictionary[AnyRedis, str] = weakref.WeakKeyDictionary()
#: $HIERFL_REDIS_CLUSTER: "1" (also `hierfl --cluster-mode`) forces the cluster client, "0" the
#: single-server one; unset or "auto" asks the server.
CLUSTER_ENV = "HIERFL_REDIS_CLUSTER"
_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


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


def connect(url: str | None = None, *, job: str | None = None,
            pool_size: int | None = None, cluster_mode: bool | None = None) -> AnyRedis:
    """A client for hierfl's Redis, after checking that the server is reachable and usable.

    `job` names the job tree (root name) the caller works on. It only matters for a Redis user
    that may neither read the server's CONFIG nor write outside that tree (an ACL user confined
    to one job, docs/security.md): the check that keyspace notifications arrive then writes its
    scratch key inside the tree, ``hierfl:{JOB}:probe:<random>``, instead of ``hierfl:probe:*``.

    `pool_size`: for a client shared by many threads (`hierfl simulate`), at most this many
    connections (per node, on a cluster), a thread waiting for a free one rather than failing
    (redis-py's own pool refuses the 101st).

    `cluster_mode`: True for a Redis Cluster, False for a single server, None to ask the server
    (or $HIERFL_REDIS_CLUSTER). A cluster gives a `RedisCluster` client, checked on every node.

    Raises RedisUnavailable within a few seconds if not: the checks run on a probe client
    with short timeouts and no retries, because the returned client has no read timeout.
    """
    resolved = resolve_url(url)
    probe = _client(resolved, socket_timeout=PROBE_TIMEOUT, retry=Retry(NoBackoff(), 0))
    try:
        _ping(probe, resolved)
        cluster = _wants_cluster(probe, resolved, cluster_mode)
        if not cluster:
            check_server(probe, resolved, job=job)
    finally:
        probe.close()
    if cluster:
        return _connect_cluster(resolved, job, pool_size)
    client = _client(resolved, socket_timeout=None, pool_size=pool_size)
    _ping(client, resolved)
    if job:
        _PROBE_JOB[client] = job
    return client


def _wants_cluster(probe: redis.Redis, url: str, cluster_mode: bool | None) -> bool:
    """Whether to use the cluster client: as told (argument, then $HIERFL_REDIS_CLUSTER),
    else as the server says. A unix socket is always a single server's."""
    told = cluster_mode if cluster_mode is not None else _cluster_setting()
    if told is not None:
        if told and urlsplit(url).scheme == "unix":
            raise BadInput(f"Redis Cluster needs a redis:// or rediss:// URL, not "
                           f"{url_for_display(url)}")
        return told
    return urlsplit(url).scheme != "unix" and _cluster_enabled(probe, url)


def _cluster_setting() -> bool | None:
    value = os.environ.get(CLUSTER_ENV, "").strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    if value in ("", "auto"):
        return None
    raise BadInput(f"${CLUSTER_ENV} must be 1 (a Redis Cluster), 0 (a single server) or auto, "
                   f"got {value!r}")


def _cluster_enabled(probe: redis.Redis, url: str) -> bool:
    """``INFO cluster`` says ``cluster_enabled:1``; HELLO's ``mode`` for a user that may not
    run INFO (or a server that renamed it away)."""
    try:
        return bool(int(probe.info("cluster").get("cluster_enabled", 0)))
    except redis.ResponseError:  # NOPERM, or an unknown command
        try:
            return _hello_fields(probe).get("mode") == b"cluster"
        except redis.RedisError as exc:
            raise RedisUnavailable(
                f"cannot tell whether Redis at {url_for_display(url)} is a cluster ({exc}): "
                f"say so with `hierfl --cluster-mode` or ${CLUSTER_ENV}=1 (or 0)") from exc
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cannot read INFO cluster from {url_for_display(url)}: "
                               f"{exc}") from exc


def _connect_cluster(url: str, job: str | None, pool_size: int | None) -> RedisCluster:
    """The cluster client, after checking every node (like `connect` on a single server)."""
    probe = _cluster_client(url, socket_timeout=PROBE_TIMEOUT)
    try:
        check_server(probe, url, job=job)
    finally:
        probe.close()
    client = _cluster_client(url, pool_size=pool_size)
    try:
        client.ping()
    except (redis.RedisError, RedisClusterException) as exc:
        raise RedisUnavailable(f"cannot reach the Redis Cluster at {url_for_display(url)}: "
                               f"{exc}") from exc
    if job:
        _PROBE_JOB[client] = job
    return client


def _cluster_client(url: str, pool_size: int | None = None, **overrides: object) -> RedisCluster:
    """A `RedisCluster` from `url`. It follows MOVED and ASK itself; a few client-level retries
    without backoff cover a redirect inside MULTI/EXEC, and every MOVED re-reads the slot table
    (`reinitialize_steps=1`: slots move rarely, and a waiter must learn the new owner)."""
    kwargs: dict[str, object] = {
        "decode_responses": False,
        "socket_connect_timeout": 3,
        "socket_timeout": None,
        "retry_on_timeout": False,
    }
    kwargs.update(connection_options(url))
    kwargs.update(overrides)
    if pool_size is not None:
        kwargs.update(connection_pool_class=redis.BlockingConnectionPool,
                      max_connections=pool_size, timeout=None)
    try:
        return RedisCluster.from_url(url, retry=cluster_retry(), reinitialize_steps=1, **kwargs)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"not a usable Redis Cluster URL: {url_for_display(url)}: {exc}") from exc
    except (redis.RedisError, RedisClusterException) as exc:
        raise RedisUnavailable(f"cannot reach the Redis Cluster at {url_for_display(url)}: "
                               f"{exc}") from exc


def connection_options(url: str) -> dict[str, object]:
    """What `url` itself does not say but hierfl adds: TLS files from the environment (for
    ``rediss://`` only) and the embedded server's password (for its unix socket only).

    These are passed as keyword arguments, which redis-py lets the URL's own parameters
    override, so a URL always wins over the environment.
    """
    parts = urlsplit(url)
    options: dict[str, object] = {}
    if parts.scheme == "rediss":
        for option, env in TLS_ENV.items():
            if value := os.environ.get(env, "").strip():
                options[option] = value
    elif (
        parts.scheme == "unix"
        and parts.password is None
        and "password" not in parts.query
        and (password := embedded_password(unquote(parts.path)))
    ):
        options["password"] = password
    return options


def _client(url: str, pool_size: int | None = None, **overrides: object) -> redis.Redis:
    kwargs: dict[str, object] = {
        "decode_responses": False,
        "socket_connect_timeout": 3,
        "socket_timeout": None,
        "health_check_interval": 30,
        "retry_on_timeout": False,
    }
    kwargs.update(connection_options(url))
    kwargs.update(overrides)
    shown = url_for_display(url)
    try:
        if pool_size is None:
            client = redis.Redis.from_url(url, **kwargs)
        else:
            # Its nodes handle a lost connection themselves (NodeRuntime), so no retries.
            kwargs.setdefault("retry", Retry(NoBackoff(), 0))
            client = redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(
                url, max_connections=pool_size, timeout=None, **kwargs))
    except ValueError as exc:
        raise BadInput(f"not a usable Redis URL: {shown}: {exc}") from exc
    _check_options(client, url)
    return client


def _check_options(client: redis.Redis, url: str) -> None:
    """Refuse parameters redis-py would only choke on at the first command (a TLS file that is
    not there, an unknown query parameter, a TLS parameter on a plain URL)."""
    pool = client.connection_pool
    shown = url_for_display(url)
    for option in _TLS_FILES:
        path = pool.connection_kwargs.get(option)
        if isinstance(path, str) and not os.access(path, os.R_OK):
            source = _tls_source(url, option)
            raise BadInput(
                f"TLS file {path} ({option}, from {source}) for Redis at {shown} does not exist "
                "or cannot be read"
            )
    try:
        pool.connection_class(**pool.connection_kwargs)  # builds, does not connect
    except TypeError as exc:
        unknown = re.search(r"argument '(\w+)'", str(exc))
        name = unknown.group(1) if unknown else str(exc)
        hint = (
            " (TLS parameters need a rediss:// URL)" if name.startswith("ssl_") else
            " (see docs/security.md for the parameters hierfl passes on)"
        )
        raise BadInput(f"not a usable Redis URL: {shown}: unknown parameter {name}{hint}") from exc
    except (redis.RedisError, ValueError, OSError) as exc:
        raise BadInput(f"not a usable Redis URL: {shown}: {exc}") from exc


def _tls_source(url: str, option: str) -> str:
    if option in parse_qs(urlsplit(url).query):
        return "the URL"
    return f"${TLS_ENV[option]}" if option in TLS_ENV else "the URL"


def _ping(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise _auth_failed(client, url, exc) from exc
    except NoPermissionError as exc:
        raise RedisUnavailable(
            f"the Redis user {_user_of(client)} at {url_for_display(url)} may not run PING "
            f"({exc}): grant it +ping (docs/security.md lists what a hierfl user needs)"
        ) from exc
    except (redis.RedisError, OSError) as exc:
        if tls := _tls_failure(exc, url, client.connection_pool.connection_kwargs):
            raise RedisUnavailable(
                f"TLS handshake with Redis at {url_for_display(url)} failed: {tls}"
            ) from exc
        hint = ""
        if urlsplit(url).scheme == "redis" and _looks_like_reset(exc):
            hint = " (if this port expects TLS, use a rediss:// URL)"
        raise RedisUnavailable(
            f"cannot reach Redis at {url_for_display(url)}: {exc}{hint}"
        ) from exc


def _user_of(client: redis.Redis) -> str:
    return str(client.connection_pool.connection_kwargs.get("username") or "default")


def _auth_failed(client: redis.Redis, url: str, exc: Exception) -> RedisUnavailable:
    """"authentication failed for user X at URL", with the server's reason and what to do."""
    kwargs = client.connection_pool.connection_kwargs
    reason = str(exc).rstrip(".")
    if not kwargs.get("password"):
        reason += "; the server wants a password: put it in the URL, redis://USER:PASSWORD@HOST"
        path = kwargs.get("path")
        if isinstance(path, str) and (Path(path).parent / "redis.conf").exists():
            reason += " (the embedded server's own password file was not readable)"
    return RedisUnavailable(
        f"authentication failed for user {_user_of(client)} at {url_for_display(url)}: {reason}"
    )


def _ssl_errors(exc: BaseException) -> list[ssl.SSLError]:
    """The ssl errors in `exc`'s chain (redis-py wraps them in its ConnectionError)."""
    found: list[ssl.SSLError] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _tls_failure(exc: BaseException, url: str, kwargs: dict) -> str | None:
    """What went wrong in a failed TLS handshake, and what to do about it; None if `exc` is
    not a TLS failure. A server that rejects a client may just close the connection (the
    client then sees an EOF or a reset instead of the alert), so for a ``rediss://`` URL that is
    read in the light of whether this client gave a certificate."""
    errors = _ssl_errors(exc)
    text = " ".join(str(e) for e in errors) or (str(exc) if "[SSL" in str(exc) else "")
    if not text:
        if urlsplit(url).scheme != "rediss" or not _looks_like_reset(exc):
            return None
        text = str(exc)
    upper = text.upper()
    give_cert = ("give ssl_certfile=PATH and ssl_keyfile=PATH in the URL, or $HIERFL_REDIS_CERT "
                 "and $HIERFL_REDIS_KEY")
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        if "HOSTNAME MISMATCH" in upper or "IP ADDRESS MISMATCH" in upper:
            advice = ("the server's certificate does not name the host in the URL: connect by a "
                      "name the certificate holds, or add ssl_check_hostname=false to the URL")
        else:
            advice = ("the server's certificate is not signed by a CA this client trusts: give "
                      "the CA that signed it with ssl_ca_certs=PATH in the URL or "
                      "$HIERFL_REDIS_CA")
    elif "CERTIFICATE_REQUIRED" in upper or "CERTIFICATE REQUIRED" in upper:
        advice = f"the server requires a client certificate: {give_cert}"
    elif "UNKNOWN_CA" in upper or "BAD_CERTIFICATE" in upper or "UNKNOWN CA" in upper:
        advice = ("the server refused this client's certificate: it is not signed by a CA the "
                  "server trusts (its tls-ca-cert-file)")
    elif "WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER" in upper or "PACKET_LENGTH" in upper:
        advice = "the server does not speak TLS on this port: use a redis:// URL"
    elif _looks_like_reset(exc) or "EOF" in upper:
        if kwargs.get("ssl_certfile"):
            advice = ("the server closed the connection during the handshake: it probably "
                      "refused this client's certificate (is it signed by a CA in the server's "
                      "tls-ca-cert-file?)")
        else:
            advice = ("the server closed the connection during the handshake and this client "
                      "gave no certificate: if the server requires a client certificate "
                      f"(tls-auth-clients yes), {give_cert}")
    else:
        advice = "check the server's TLS settings and the certificates given"
    return f"{advice} ({text})"


def _looks_like_reset(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(sign in text for sign in ("reset by peer", "closed by server", "connection closed",
                                         "eof occurred", "unexpected eof"))


def check_server(client: AnyRedis, url: str, *, job: str | None = None,
                 key: str | None = None) -> None:
    """Refuse a server that is too old or whose keyspace notifications cannot be turned on.

    `job`: as for `connect` (default: the job the client was connected for, if any). On a
    cluster every node is checked, since each publishes notifications only for its own keys;
    with `key`, only the primary that owns it (a node re-checking its own shard after a
    reconnect, which another shard being down must not hold up).
    """
    job = job or _PROBE_JOB.get(client)
    if is_cluster(client):
        _check_cluster(client, url, job, key)
        return
    _check_version(client, url)
    _check_notifications(client, url, job)


def _check_cluster(client: RedisCluster, url: str, job: str | None, key: str | None) -> None:
    """Version and notifications on every primary, and on the replicas a failover would
    promote (those are best effort: a node re-checks the new primary when it reconnects)."""
    nodes = node_clients(client)
    if key is not None:
        name = owner_node(client, key).name
        nodes = [(node, node_client) for node, node_client in nodes if node.name == name]
    for node, node_client in nodes:
        where = f"{url_for_display(url)} (cluster node {node.name})"
        try:
            _check_version(node_client, where)
            _check_node_notifications(client, node, node_client, where, job)
        except RedisUnavailable as exc:
            if node.server_type == "primary":
                raise
            log.warning("replica %s: %s", node.name, exc)


def _check_node_notifications(client: RedisCluster, node: ClusterNode, node_client: redis.Redis,
                              where: str, job: str | None) -> None:
    """`_check_notifications` on one node. Its fallback probe writes a key that node owns: the
    job's own (a user confined to that job can touch no other shard, so nothing else is
    checked), or one found for the node."""
    if job:
        key = probe_key(job)
        if owner_node(client, key).name != node.name:
            key = None  # not this job's shard: only CONFIG can tell, if it may be read
    else:
        key = _probe_key_on(client, node.name)
    _check_notifications(node_client, where, job, key=key, probe=key is not None)


def _probe_key_on(client: RedisCluster, name: str) -> str | None:
    """A fresh ``hierfl:probe:<random>`` key whose slot node `name` owns (None for a replica)."""
    for _ in range(4096):  # a primary owning a third of the slots is hit within a few tries
        key = probe_key()
        if owner_node(client, key).name == name:
            return key
    return None


def _check_version(client: redis.Redis, url: str) -> None:
    """INFO server; if this ACL user may not run INFO, HELLO (which every user may run)."""
    shown = url_for_display(url)
    try:
        info = client.info("server")
    except NoPermissionError as info_error:
        try:
            server, version = _hello(client)
        except redis.RedisError as exc:
            raise RedisUnavailable(
                f"cannot tell the version of Redis at {shown}: INFO is refused ({info_error}) "
                f"and HELLO failed ({exc}); hierfl needs Redis >= "
                f"{'.'.join(map(str, MIN_VERSION))} or Valkey"
            ) from exc
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cannot read INFO server from {shown}: {exc}") from exc
    else:
        server = "valkey" if "valkey_version" in info else "redis"
        version = str(info.get("redis_version", "0"))
    if server == "valkey":
        return  # every Valkey release descends from Redis 7.2
    if _version_tuple(version) < MIN_VERSION:
        raise RedisUnavailable(
            f"Redis at {shown} is version {version}; hierfl needs Redis >= "
            f"{'.'.join(map(str, MIN_VERSION))} or Valkey"
        )


def _hello(client: redis.Redis) -> tuple[str, str]:
    """(server name, version) from ``HELLO 2``."""
    fields = _hello_fields(client)
    return _as_text(fields.get("server", b"redis")).lower(), _as_text(fields.get("version", b"0"))


def _hello_fields(client: redis.Redis) -> dict[str, object]:
    """``HELLO 2``'s reply as a dict, on a connection of its own that is closed afterwards
    (redis-py's clients track the protocol a connection speaks; this one is not handed back
    to them)."""
    conn = client.connection_pool.make_connection()
    try:
        conn.connect()
        conn.send_command("HELLO", 2)
        reply = conn.read_response()
    finally:
        conn.disconnect()
    if isinstance(reply, (list, tuple)):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    return {_as_text(k): v for k, v in dict(reply).items()}


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


def _check_notifications(client: redis.Redis, url: str, job: str | None = None,
                         key: str | None = None, probe: bool = True) -> None:
    """Turn the needed notifications on if they are off, or explain how to.

    Without CONFIG, a probe (on `key`, default a fresh one) shows whether they arrive anyway;
    `probe=False` (a cluster node outside the caller's job): nothing to refuse on.
    """
    try:
        reply = client.config_get("notify-keyspace-events")
    except redis.ResponseError as exc:
        # CONFIG is disabled (managed Redis) or refused to this ACL user: see whether
        # notifications arrive anyway.
        if probe and not _notifications_arrive(client, url, job, key):
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


def probe_key(job: str | None = None) -> str:
    """A fresh scratch key for the notification probe: inside job tree `job` if given (a user
    confined to that tree may write it), else ``hierfl:probe:<random>``."""
    token = uuid.uuid4().hex
    if job:
        return f"{keys.PREFIX}:{{{keys.root_of(job)}}}:probe:{token}"
    return keys.PROBE.format(token=token)


def _notifications_arrive(client: redis.Redis, url: str, job: str | None = None,
                          key: str | None = None) -> bool:
    """Probe: do an HSET and a DEL on a scratch key publish on its keyspace channel?

    A refusal by ACL (NOPERM) is not an answer: it is reported as such, with what to do.
    """
    key = key or probe_key(job)
    channel = keyspace_channel(client, key)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel)
        if pubsub.get_message(timeout=PROBE_TIMEOUT) is None:  # subscription confirmed
            return False
        client.hset(key, "probe", "1")
        client.delete(key)
        return _events_seen(pubsub, {"hset", "del"}) == {"hset", "del"}
    except NoPermissionError as exc:
        raise _probe_refused(client, url, job, key, channel, exc) from exc
    except redis.RedisError:
        return False
    finally:
        pubsub.close()
        with contextlib.suppress(redis.RedisError):
            client.delete(key)


def _probe_refused(
    client: redis.Redis, url: str, job: str | None, key: str, channel: str, exc: Exception
) -> RedisUnavailable:
    where = f"key {key} and channel {channel}"
    if job:
        advice = (f"its ACL rule must allow the keys hierfl:{{{keys.root_of(job)}}}:* and the "
                  f"channels __keyspace@{db_of(client)}__:hierfl:{{{keys.root_of(job)}}}:*, "
                  "with HSET, DEL and SUBSCRIBE (`hierfl server acl JOB` prints the rule)")
    else:
        advice = ("a user confined to one job tree must say which: `hierfl node --job NAME` "
                  "(or --cluster), so that the probe writes inside that tree")
    return RedisUnavailable(
        f"cannot check keyspace notifications on Redis at {url_for_display(url)}: the Redis "
        f"user {_user_of(client)} may not read CONFIG, and may not use the probe's {where} "
        f"({exc}); {advice}"
    )


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


def db_of(client: AnyRedis) -> int:
    """The database number the client talks to (it names keyspace channels; a cluster has
    only database 0)."""
    if is_cluster(client):
        return 0
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def keyspace_channel(client: AnyRedis, key: str) -> str:
    """The channel on which the server announces changes to `key` (``K`` notifications)."""
    return f"__keyspace@{db_of(client)}__:{key}"
