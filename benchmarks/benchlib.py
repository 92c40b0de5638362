"""What every benchmark here shares: a Redis server of its own, the common flags, and output.

Each benchmark is a script run as `python benchmarks/NAME.py`; this module sits beside them,
so it is importable as `benchlib` (the script's directory is first on `sys.path`). Without
`--redis URL` a benchmark starts a throwaway redis-server exactly as `hierfl` does for a user
(`EmbeddedServer`: unix socket, append-only file, keyspace notifications), in a short temp dir,
and stops it at the end, so its figures are those of the server a user gets from `make setup`.
With `--redis URL` it uses that server and touches only keys it created (never FLUSHALL).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from hierfl.store.server import EmbeddedServer


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark has (`--redis`, `--quick`)."""
    text = doc or ""
    p = argparse.ArgumentParser(description=text.splitlines()[0] if text else None)
    p.add_argument("--redis", metavar="URL", default=None,
                   help="use this Redis server instead of starting a throwaway one")
    p.add_argument("--quick", action="store_true", help="a smaller run (under about 30 s)")
    return p


@contextmanager
def redis_url(url: str | None) -> Iterator[str]:
    """`url`, or the URL of a fresh embedded redis-server that is stopped and removed after."""
    if url:
        yield url
        return
    # /tmp, not $TMPDIR: a unix socket path must stay under about 100 bytes.
    home = Path(tempfile.mkdtemp(prefix="hfl-bench-", dir="/tmp"))
    server = EmbeddedServer(home).start()
    # The server runs in a session of its own: a SIGTERM to us must still stop it.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield server.url
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def server_version(client: redis.Redis) -> str:
    return str(client.info("server").get("redis_version", "?"))


def commandstats(client: redis.Redis) -> dict[str, dict[str, float]]:
    """INFO commandstats as {command: {"calls": n, "usec": t, ...}} (names without cmdstat_)."""
    raw = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): stats for name, stats in raw.items()}


def calls_of(stats: dict[str, dict[str, float]], command: str) -> int:
    return int(stats.get(command, {}).get("calls", 0))


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the server has used (system + user, all its threads)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def percentile(values: Sequence[float], share: float) -> float:
    """The `share` percentile (0..1) by nearest rank: p99 of 100 values is the 99th."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain right-aligned text table, as a Markdown table so docs can take it verbatim."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(what: str, ratio: float, target: float, *, at_least: bool = True) -> bool:
    """Print the target line every benchmark ends with; True when the target is met."""
    met = ratio >= target if at_least else ratio <= target
    sign = ">=" if at_least else "<="
    print(f"{what}: {ratio:.3g} (target {sign} {target:g}): {'met' if met else 'MISSED'}")
    return met
