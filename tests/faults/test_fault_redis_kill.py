"""redis-server SIGKILLed mid-round and restarted on the same socket and directory.

The nodes lose their connections, back off, reconnect, re-subscribe, re-read, and redo whatever
Redis does not show as done; the job ends with the same final digest as the undisturbed run.

A SIGKILL of redis-server alone loses no acknowledged write: Redis hands every write to the
kernel (write(2) to the append-only file) before it replies, and the kernel keeps it when the
process dies. What `appendfsync everysec` can lose is what the kernel had not yet flushed to the
disk when the *machine* crashed: up to about the last second of writes. The second test
reproduces exactly that: it cuts the append-only file back to where it stood a second before
the kill, so the restarted server has forgotten the last second of the job, and the nodes
re-apply it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import wait_for

from hierfl import keys
from hierfl.store import server as server_module
from hierfl.store.connection import connect
from hierfl.store.server import EmbeddedServer

pytestmark = pytest.mark.e2e

#: How long the server stays down (the nodes back off meanwhile).
DOWN = 2.0
#: The loss window of appendfsync everysec that the second test reproduces.
LOST_WINDOW = 1.0


def aof_path(home: Path) -> Path:
    """The append-only file that receives new writes (Redis 7 keeps several in a directory)."""
    multi = sorted((home / "appendonlydir").glob("*.incr.aof"),
                   key=lambda p: int(p.name.split(".")[-3]))
    return multi[-1] if multi else home / "appendonly.aof"


def last_boundary(data: bytes, limit: int) -> int:
    """The largest offset <= `limit` that ends a whole command outside MULTI/EXEC (the AOF is
    RESP arrays; a script's effects are one MULTI ... EXEC block)."""
    pos, best, in_multi = 0, 0, False
    while pos < limit:
        assert data[pos:pos + 1] == b"*", f"not a RESP array at offset {pos}"
        end = data.index(b"\r\n", pos)
        count, pos = int(data[pos + 1:end]), end + 2
        name = b""
        for i in range(count):
            end = data.index(b"\r\n", pos)
            size, pos = int(data[pos + 1:end]), end + 2
            if i == 0:
                name = data[pos:pos + size].upper()
            pos += size + 2
        in_multi = name == b"MULTI" or (in_multi and name != b"EXEC")
        if pos <= limit and not in_multi:
            best = pos
    return best


def event_ids(client, root: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in entry_id.decode().split("-"))
            for entry_id, _ in client.xrange(keys.events(root))]


def kill_server(server: EmbeddedServer) -> int:
    pid = server.status()["pid"]
    os.kill(pid, signal.SIGKILL)
    launched = server_module._LAUNCHED.pop(pid, None)  # our child: reap it
    if launched is not None:
        launched.wait(timeout=10)
    return pid


@pytest.mark.parametrize("lose_last_second", [False, True],
                         ids=["sigkill", "sigkill-and-last-second-lost"])
def test_redis_killed_mid_round_and_restarted(new_job, short_tmp_path, undisturbed,
                                              lose_last_second):
    home = short_tmp_path / "srv"
    server = EmbeddedServer(home).start()
    assert server.status()["appendonly"] is True
    try:
        job = new_job("crash", url=server.url).start_all()
        client = connect(server.url)
        wait_for(client, "crash", lambda s: s.round >= 2)
        if lose_last_second:
            # What a crash up to a second from now keeps; crash once round 3 has begun (or the
            # second is up), so the loss spans the end of round 2 and the start of round 3.
            fsynced = aof_path(home).stat().st_size
            with contextlib.suppress(TimeoutError):
                wait_for(client, "crash", lambda s: s.round >= 3, timeout=LOST_WINDOW)
        before = event_ids(client, "crash")
        client.close()
        kill_server(server)
        killed = time.monotonic()
        if lose_last_second:
            aof = aof_path(home)
            data = aof.read_bytes()
            cut = last_boundary(data, fsynced)
            aof.write_bytes(data[:cut])
            print(f"\nAOF cut from {len(data)} to {cut} bytes")
        time.sleep(DOWN)
        EmbeddedServer(home).start()
        client = connect(server.url)
        after = event_ids(client, "crash")
        client.close()
        lost = sum(1 for entry in before if entry > after[-1])

        outcome = job.wait_all()
        total = time.monotonic() - killed
        reconnects = {slot: re.findall(r"reconnected to Redis at \S+ after ([\d.]+) s",
                                       job.log(slot)) for slot in job.procs}
    finally:
        server.stop()

    assert all(reconnects.values()), f"nodes that never reconnected: {reconnects}"
    if lose_last_second:
        assert lost > 0, "the cut lost no event: nothing to re-apply"
    assert outcome.outcome == "completed" and outcome.rounds == undisturbed.rounds
    assert outcome.digest == undisturbed.digest
    slowest = max(float(t[-1]) for t in reconnects.values())
    print(f"\nredis kill (lose_last_second={lose_last_second}): {lost} events lost; nodes "
          f"reconnected within {slowest:.1f} s of the first failure (server down {DOWN:.0f} s); "
          f"job done {total:.1f} s after the kill; {outcome}")


def test_embedded_server_appendfsync_always(short_tmp_path):
    server = EmbeddedServer(short_tmp_path / "always", appendfsync="always").start()
    try:
        assert server.status()["appendfsync"] == "always"
    finally:
        server.stop()
    default = EmbeddedServer(short_tmp_path / "default").start()
    try:
        assert default.status()["appendfsync"] == "everysec"
    finally:
        default.stop()


def test_node_gives_up_when_redis_stays_away(new_job, short_tmp_path):
    server = EmbeddedServer(short_tmp_path / "gone").start()
    try:
        job = new_job("gone", url=server.url)
        slot = ("gone", "worker", "w0")
        proc = job.start(slot, {"HIERFL_RECONNECT_TIMEOUT": "2"})
        client = connect(server.url)
        wait_for(client, "gone", lambda s: s.status_of("worker", "w0") == 1)  # sheet ACKed
        client.close()
        kill_server(server)
        killed = time.monotonic()
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - killed
    finally:
        server.stop()
    log = " ".join(job.log(slot).split())  # the error is wrapped to the console's width
    assert code == 1, log
    assert f"lost the connection to Redis at {server.url} and could not reconnect within 2 s" in log
    assert "restart with --cluster gone --id w0 to resume" in log
    assert 2 <= elapsed < 10, f"gave up after {elapsed:.1f} s"
    print(f"\ngave up {elapsed:.1f} s after the server died (--reconnect-timeout 2)")
