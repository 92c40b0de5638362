"""Redis ACL rules for hierfl's users: a node confined to one job tree, and an operator.

docs/security.md explains them; `hierfl server acl JOB` prints them. Redis checks every command
a Lua script calls against the calling user too, so the node's rule lists what the scripts run
as well as what the node runs itself (a test keeps `SCRIPT_COMMANDS` in step with lua/).
"""

from __future__ import annotations

from hierfl import keys
from hierfl.jobtree import check_root_name

#: What a node runs itself. PING: connecting and health checks. EVALSHA, and SCRIPT LOAD after
#: a NOSCRIPT reply (a restarted or flushed server): the scripts. GET, HGET, HEXISTS, and HGETALL
#: and HKEYS inside MULTI/EXEC: reading its cluster, the job sheet, its dataset share and blobs.
#: STRLEN: a worker checks a submission's size before downloading it. SET (NX): storing
#: parameter blobs. SUBSCRIBE: waiting on keyspace notifications. HSET and DEL: the check that
#: notifications arrive, on a scratch key inside the tree (the scripts need both anyway).
NODE_COMMANDS = (
    "ping",
    "evalsha",
    "script|load",
    "get",
    "hget",
    "hexists",
    "hgetall",
    "hkeys",
    "multi",
    "exec",
    "set",
    "strlen",
    "subscribe",
    "hset",
    "del",
)

#: What the scripts in lua/ call (``redis.call``), all on keys of the caller's own tree.
SCRIPT_COMMANDS = (
    "del",
    "exists",
    "get",
    "hdel",
    "hexists",
    "hget",
    "hgetall",
    "hincrby",
    "hkeys",
    "hlen",
    "hmget",
    "hset",
    "hsetnx",
    "hvals",
    "lpop",
    "lrange",
    "lrem",
    "rpush",
    "set",
    "time",
    "xadd",
)

#: Placeholder for the password in the documented rule.
PASSWORD_PLACEHOLDER = "PASSWORD"


def node_commands() -> list[str]:
    """Every command a node's user needs, sorted, each once."""
    return sorted(set(NODE_COMMANDS) | set(SCRIPT_COMMANDS))


def node_rule_tokens(job: str, user: str, password: str = PASSWORD_PLACEHOLDER,
                     db: int = 0) -> list[str]:
    """The ACL SETUSER arguments (after the user name) confining `user` to job tree `job`.

    Keys: only ``hierfl:{JOB}:*`` (the hash tag's braces end the job name, so job ``a`` does not
    reach job ``ab``). Channels: only the keyspace channels of those keys, plus that of the
    registry ``hierfl:jobs``, on which `hierfl node --job JOB` waits for the job to appear (the
    registry's contents stay unreadable, so a confined node must name its job).
    """
    root = check_root_name(job)
    tree = f"{keys.PREFIX}:{{{root}}}:*"
    return [
        "reset",
        "on",
        f">{password}",
        f"~{tree}",
        "resetchannels",
        f"&__keyspace@{db}__:{tree}",
        f"&__keyspace@{db}__:{keys.JOBS}",
        "-@all",
        *(f"+{command}" for command in node_commands()),
    ]


def node_rule(job: str, user: str, password: str = PASSWORD_PLACEHOLDER, db: int = 0) -> str:
    """The ``ACL SETUSER`` command line (for redis-cli) confining `user` to job tree `job`."""
    return " ".join(["ACL", "SETUSER", user, *node_rule_tokens(job, user, password, db)])


def node_aclfile_line(job: str, user: str, password: str = PASSWORD_PLACEHOLDER,
                      db: int = 0) -> str:
    """The same rule as a line for an ACL file or redis.conf (``user NAME ...``)."""
    tokens = [t for t in node_rule_tokens(job, user, password, db) if t != "reset"]
    return " ".join(["user", user, *tokens])


def operator_rule(user: str, password: str = PASSWORD_PLACEHOLDER) -> str:
    """A user for `hierfl init-job`, `run`, `status`, `watch`, `events`, `delete`: every hierfl
    key and any channel, every command but the dangerous ones (CONFIG, FLUSHALL, KEYS, ACL,
    SHUTDOWN, DEBUG ...). Not confined to one job: give it to the federation's operator only."""
    return " ".join([
        "ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{keys.PREFIX}:*",
        "allchannels", "+@all", "-@dangerous",
    ])
