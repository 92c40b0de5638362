"""`hierfl events NAME`: the job's event stream, one line (or JSON object) per transition.

Reads `hierfl:{NAME}:events` with XRANGE / XREVRANGE; `--follow` then blocks on XREAD until the
job's root has finished and every node exited (or Ctrl-C).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Annotated

import redis
import typer

from hierfl import keys
from hierfl.cli.common import JsonOption, RedisOption, open_redis, reports_errors
from hierfl.errors import UnknownJob
from hierfl.protocol import (
    TRANSITION_BY_NAME,
    ErrorCode,
    Field,
    NodeStatus,
    Outcome,
    ProcessStage,
)
from hierfl.store.state import job_exists

#: The fields every event has; anything after them is the op's own extra pairs.
BASE_FIELDS = ("cluster", "node", "op", "from", "to", "gen", "round")
#: Ops whose from/to are node statuses, and ops whose from/to are process stages.
STATUS_OPS = frozenset(TRANSITION_BY_NAME) | {"cascade"}
STAGE_OPS = frozenset({"aggregation"})
#: XREAD blocks this long (ms) before re-checking that the job still exists.
BLOCK_MS = 5000
PAGE = 1000
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

Entry = tuple[str, dict[str, str]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: list) -> list[Entry]:
    return [(_text(i), {_text(k): _text(v) for k, v in f.items()}) for i, f in raw]


def read_all(client: redis.Redis, stream: str, after: str = "-") -> Iterator[Entry]:
    """Every entry after `after` (exclusive; "-" for all), page by page with XRANGE."""
    start = after if after == "-" else f"({after}"
    while page := _entries(client.xrange(stream, min=start, max="+", count=PAGE)):
        yield from page
        start = f"({page[-1][0]}"


def read_last(client: redis.Redis, stream: str, count: int) -> list[Entry]:
    """The last `count` entries, oldest first (XREVRANGE)."""
    return list(reversed(_entries(client.xrevrange(stream, max="+", min="-", count=count))))


def root_done(client: redis.Redis, root: str) -> bool:
    """The root finished and every node exited (or the job is gone)."""
    pipe = client.pipeline(transaction=True)
    pipe.hget(keys.job(root), Field.OUTCOME.value)
    pipe.hmget(keys.stages(root), Field.CLIENT_STAGE.value, Field.WORKER_STAGE.value)
    outcome, (cs, ws) = pipe.execute()
    if outcome is None and cs is None:
        return True
    running = _text(outcome or b"") in ("", Outcome.RUNNING.value)
    exited = str(int(NodeStatus.EXITED))
    return not running and _text(cs or b"") == exited and _text(ws or b"") == exited


def follow(client: redis.Redis, root: str, after: str, emit: Callable[[Entry], None]) -> None:
    """Emit new entries as XREAD delivers them until `root_done`."""
    stream = keys.events(root)
    while not root_done(client, root):
        for _, raw in client.xread({stream: after}, count=PAGE, block=BLOCK_MS) or []:
            for entry in _entries(raw):
                emit(entry)
                after = entry[0]
    for entry in read_all(client, stream, after):
        emit(entry)


def _moved(op: str, src: str, dst: str) -> str:
    if not src and not dst:
        return ""
    enum = NodeStatus if op in STATUS_OPS else ProcessStage if op in STAGE_OPS else None
    if enum is not None and src.isdigit() and dst.isdigit():
        return f"{enum(int(src)).name.lower()}→{enum(int(dst)).name.lower()}"
    return f"{src or '-'}→{dst or '-'}"


def _time(entry_id: str) -> datetime:
    return datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, tz=timezone.utc)


def _extra(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in BASE_FIELDS}


def _short(value: str) -> str:
    return f"{value[:12]}…" if _DIGEST.match(value) else value


def format_line(entry: Entry) -> str:
    """`2025-01-01 12:00:00.123  demo#0  client/c0  submit_params  busy→done  gen 1 ...`"""
    entry_id, f = entry
    when = _time(entry_id).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    extra = " ".join(f"{k}={_short(v)}" for k, v in _extra(f).items())
    moved = _moved(f.get("op", ""), f.get("from", ""), f.get("to", ""))
    return (f"{when}  {f.get('cluster', ''):<10} {f.get('node', ''):<16} {f.get('op', ''):<17}"
            f" {moved:<29} gen {f.get('gen', ''):<3} round {f.get('round', ''):<3} {extra}"
            ).rstrip()


def _int_or_none(value: str | None) -> int | str | None:
    if value is None or value == "":
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def to_json(entry: Entry) -> dict:
    entry_id, f = entry
    data: dict = {"id": entry_id, "time": _time(entry_id).isoformat(timespec="milliseconds")}
    data.update({k: f.get(k) for k in ("cluster", "node", "op")})
    data.update({k: _int_or_none(f.get(k)) for k in ("from", "to", "gen", "round")})
    data["extra"] = _extra(f)
    return data


@reports_errors
def events(
    name: Annotated[str, typer.Argument(help="Root job name.")],
    as_json: JsonOption = False,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1,
                                              help="Only the last N events.")] = None,
    follow_: Annotated[bool, typer.Option("--follow", "-f",
                                          help="Keep printing new events until the job "
                                               "ends.")] = False,
    redis_url: RedisOption = None,
) -> None:
    """Print a job's events: time, cluster, node, op, from→to, generation, round, extras."""
    client, _ = open_redis(redis_url)
    if not job_exists(client, name):
        raise UnknownJob(ErrorCode.UNKNOWN_JOB, f"job={name}: no such job")
    try:
        last = show(client, name, count, _printer(as_json))
        if follow_:
            follow(client, name, last, _printer(as_json))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def show(client: redis.Redis, root: str, count: int | None,
         emit: Callable[[Entry], None]) -> str:
    """Emit every entry (or the last `count`); returns the last id shown."""
    stream = keys.events(root)
    last = "0-0"
    for entry in read_last(client, stream, count) if count else read_all(client, stream):
        emit(entry)
        last = entry[0]
    return last


def _printer(as_json: bool) -> Callable[[Entry], None]:
    def emit(entry: Entry) -> None:
        typer.echo(json.dumps(to_json(entry)) if as_json else format_line(entry))

    return emit
