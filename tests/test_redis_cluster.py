"""Redis Cluster: a real 3-master cluster started from the redis-server binary.

Six jobs run at once, two on every master (their names are picked by hash slot); every node's
waiter must hear the shard that owns its job. The cluster starts with keyspace notifications
off, so hierfl must turn them on on every primary itself. Waiters of both kinds are also checked
against every shard with a safety timeout far longer than the test allows (only a notification
can wake them in time), and against a slot that moves to another master.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from hierfl import keys
from hierfl.cli.ls import read_rows
from hierfl.errors import RedisUnavailable, UnknownJob
from hierfl.lifecycle import delete_job
from hierfl.store.connection import CLUSTER_ENV, connect, notifications_sufficient
from hierfl.store.hub import NotificationHub
from hierfl.store.local_cluster import LocalCluster, _ephemeral_low, find_redis_cli, free_ports
from hierfl.store.scripts import Scripts
from hierfl.store.server import find_redis_server
from hierfl.store.shards import owner_node
from hierfl.store.waiter import KeyWaiter

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

#: Far longer than any wait below may take: a waiter woken in time was woken by a notification.
NEVER = 60.0
JOBS_PER_MASTER = 2
SHEET = """
[job]
name = "cl"
rounds = 2
seed = 0

[topology]
sub = [1]
clients = [0, 2]
workers = [1, 1]

[model]
name = "mlp"
hidden = [32]

[training]
lr = 0.1
local_epochs = 5
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    try:
        find_redis_cli(find_redis_server())
    except RedisUnavailable as exc:
        pytest.skip(f"no redis-server/redis-cli binary to start a Redis Cluster: {exc}")
    with LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3) as started:
        yield started


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[RedisCluster]:
    connected = connect(cluster.url)
    try:
        yield connected
    finally:
        connected.close()


def names_by_master(client: RedisCluster, per_master: int) -> dict[str, list[str]]:
    """Job names whose trees' slots land `per_master` on every master."""
    wanted = {node.name: [] for node in client.get_primaries()}
    for i in range(10_000):
        name = f"cl{i}"
        chosen = wanted[owner_node(client, keys.job(name)).name]
        if len(chosen) < per_master:
            chosen.append(name)
        if all(len(names) == per_master for names in wanted.values()):
            return wanted
    raise AssertionError(f"no names for every master: {wanted}")


def simulate(name: str, sheet: Path, url: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hierfl", "simulate", str(sheet), "--name", name, "--redis", url,
         "--json", "--timeout", "90", "--runs-dir", str(sheet.parent / "runs")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen) -> dict:
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{proc.args} did not finish:\n{out}")
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{out}"
    return json.loads(out[out.index("{"):])


def test_node_ports_and_their_bus_ports_lie_below_the_ephemeral_range():
    # An outgoing connection took a node's bus port in a full-suite run once: the node could
    # not bind it and exited. Ports below the ephemeral range are never a source port.
    low = _ephemeral_low()
    ports = free_ports(3)
    assert len(set(ports)) == 3
    assert all(port >= 10000 and port + 10000 < low for port in ports)


def test_connect_gives_the_cluster_client_and_turns_notifications_on_everywhere(cluster):
    for port in cluster.ports:  # the cluster was started with notifications off
        with cluster.node_client(port) as node:
            node.config_set("notify-keyspace-events", "")
    client = connect(cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        assert len(client.get_primaries()) == 3
    finally:
        client.close()
    for port in cluster.ports:
        with cluster.node_client(port) as node:
            flags = node.config_get("notify-keyspace-events")["notify-keyspace-events"]
        assert notifications_sufficient(flags), (port, flags)


def test_the_single_server_client_when_told(cluster, monkeypatch):
    monkeypatch.setenv(CLUSTER_ENV, "0")
    client = connect(cluster.url)
    try:
        assert type(client) is redis.Redis
    finally:
        client.close()


def test_scripts_load_again_on_every_master_after_a_flush(client):
    scripts = Scripts(client)
    assert scripts.register_job("flushed") is True  # on the registry's master
    for node in client.get_primaries():
        client.get_redis_connection(node).script_flush()
    assert scripts.unregister_job("flushed") is True  # NOSCRIPT, SCRIPT LOAD, EVALSHA again
    with pytest.raises(UnknownJob):  # a tree's script runs on the tree's master
        scripts.cancel_job(names_by_master(client, 1).popitem()[1][0])


def test_six_jobs_at_once_two_on_every_master(cluster, client, hierfl_home, tmp_path):
    by_master = names_by_master(client, JOBS_PER_MASTER)
    sheet = tmp_path / "cl.toml"
    sheet.write_text(SHEET)
    env = {**os.environ, "HIERFL_HOME": str(hierfl_home), "PYTHONPATH": str(ROOT)}
    env.pop("HIERFL_REDIS_URL", None)
    names = [name for group in by_master.values() for name in group]
    started = time.monotonic()
    procs = {name: simulate(name, sheet, cluster.url, env) for name in names}
    results = {name: finished(proc) for name, proc in procs.items()}
    elapsed = time.monotonic() - started
    for name, data in results.items():
        assert data["job"] == name and data["outcome"] == "completed", data
        assert [m["round"] for m in data["metrics"]] == [0, 1, 2], name
        assert data["metrics"][-1]["accuracy"] >= 0.85, (name, data["metrics"])
    # Each tree is one slot: all its keys on its master, none anywhere else.
    for master, group in by_master.items():
        for port in cluster.ports:
            with cluster.node_client(port) as node:
                for name in group:
                    found = list(node.scan_iter(match=keys.tree_pattern(name), count=1000))
                    assert bool(found) == (master == f"127.0.0.1:{port}"), (name, port)
    rows = {row.name: row for row in read_rows(client)}
    assert {name: rows[name].outcome for name in names} == dict.fromkeys(names, "completed")
    assert delete_job(client, names[0]) > 0
    assert client.exists(keys.job(names[0])) == 0
    assert names[0] not in {row.name for row in read_rows(client)}
    print(f"six jobs on a 3-master cluster finished in {elapsed:.1f} s")


@pytest.mark.parametrize("kind", ["own", "hub"])
def test_waiters_hear_the_shard_that_owns_their_key(client, kind):
    watched = [keys.job(name) for group in names_by_master(client, 1).values()
               for name in group]
    with NotificationHub(client) as hub:
        waiters = [KeyWaiter(client, [key], NEVER) if kind == "own" else hub.waiter([key], NEVER)
                   for key in watched]
        for waiter in waiters:
            waiter.__enter__()
        try:
            for key, waiter in zip(watched, waiters, strict=True):
                timer = threading.Timer(0.1, client.hset, args=(key, "probe", "1"))
                timer.start()
                started = time.monotonic()
                assert waiter.wait(timeout=10) is True, key
                assert time.monotonic() - started < 5, f"{key}: not woken by its shard"
                timer.join()
        finally:
            for waiter in waiters:
                waiter.close()
            client.delete(*watched)


def move_slot(cluster: LocalCluster, client: RedisCluster, key: str, to: str) -> None:
    """Migrate `key`'s slot to master `to` (``host:port``) the way redis-cli reshards."""
    slot = client.keyslot(key)
    source, target = owner_node(client, key).port, int(to.rsplit(":", 1)[1])
    with cluster.node_client(source) as src, cluster.node_client(target) as dst:
        src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while moving := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *moving)
    for port in cluster.ports:
        with cluster.node_client(port) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


@pytest.mark.parametrize("kind", ["own", "hub"])
def test_a_waiter_follows_its_slot_to_another_master(cluster, client, kind):
    name = f"moving-{kind}"
    key = keys.job(name)
    client.hset(key, "probe", "0")
    source = owner_node(client, key).name
    target = next(n.name for n in client.get_primaries() if n.name != source)
    with NotificationHub(client) as hub, (
            KeyWaiter(client, [key], NEVER) if kind == "own" else hub.waiter([key], NEVER)
    ) as waiter:
        move_slot(cluster, client, key, target)
        assert client.hget(key, "probe") == b"0"  # the read that meets MOVED
        assert owner_node(client, key).name == target
        assert waiter.wait(timeout=10) is True  # resubscribed on the new owner: re-read
        timer = threading.Timer(0.1, client.hset, args=(key, "probe", "1"))
        timer.start()
        started = time.monotonic()
        assert waiter.wait(timeout=10) is True
        assert time.monotonic() - started < 5, "not woken by the slot's new owner"
        timer.join()
    client.delete(key)


def test_a_lost_shard_breaks_only_the_waiters_on_it(tmp_path):
    # A cluster of its own: one of its masters is killed.
    with LocalCluster(tmp_path / "doomed", masters=3) as doomed:
        client = connect(doomed.url)
        try:
            watched = [keys.job(names[0]) for names in names_by_master(client, 1).values()]
            victim = owner_node(client, watched[0])
            with NotificationHub(client) as hub:
                waiters = [hub.waiter([key], NEVER) for key in watched]
                for waiter in waiters:
                    waiter.__enter__()
                process = doomed.processes[doomed.ports.index(victim.port)]
                process.kill()
                process.wait()
                with pytest.raises(redis.ConnectionError, match=victim.name):
                    waiters[0].wait(timeout=10)
                timer = threading.Timer(0.1, client.hset, args=(watched[1], "probe", "1"))
                timer.start()
                assert waiters[1].wait(timeout=10) is True  # the other shards read on
                timer.join()
                assert waiters[2].wait(timeout=0.2) is False
                for waiter in waiters:
                    waiter.close()
        finally:
            client.close()
