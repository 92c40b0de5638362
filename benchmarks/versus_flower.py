"""Seconds per no-op round: hierfl against Flower in its deployment mode, on this machine.

The same job on both: `--clients` clients that train nothing and return the global model
unchanged (hierfl's `local_epochs = 0`), a model of about 100,000 float32 parameters, FedAvg,
`--rounds` rounds after a warm-up round (setup excluded on both sides).

- hierfl: one cluster of the clients and `--workers` workers, every node a thread of one
  process (`hierfl simulate`'s machinery, via benchmarks/round_overhead.py); seconds per round
  from the job's event stream.
- Flower: a SuperLink and one SuperNode process per client on loopback (insecure, ports picked
  free), the Flower App in benchmarks/flower_app (FedAvg with `fraction_evaluate = 0`, a
  ClientApp that returns the arrays it got), started with `flwr run`; seconds per round from
  the ServerApp's own timestamps (the strategy's configure_train to aggregate_train).

Target: hierfl at least 100 times faster per round. Flower cannot share hierfl's virtual
environment (every flwr release caps typer and rich below the versions constraints.txt pins),
so it runs from its own: `--flower-venv` (default `.venv-flower` at the checkout's top, made by
`python3 -m venv .venv-flower && .venv-flower/bin/pip install -r
benchmarks/requirements-flower.txt`), or this interpreter's if it can import flwr. Without
either it runs the hierfl half, says how to install Flower and exits 0.

    python benchmarks/versus_flower.py [--clients 10] [--rounds 5] [--quick]
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import benchlib
import round_overhead

CHECKOUT = Path(__file__).resolve().parents[1]
APP_DIR = Path(__file__).resolve().parent / "flower_app"
INSTALL_HINT = ("python3 -m venv .venv-flower && .venv-flower/bin/pip install -r "
                "benchmarks/requirements-flower.txt")
TARGET = 100.0
START_TIMEOUT = 60.0
RUN_TIMEOUT = 1800.0
FLOATS = 100_000


def flower_bin(venv: Path) -> Path | None:
    """The bin directory holding flower-superlink: this interpreter's if it has flwr, else
    `venv`'s; None when neither has it."""
    if importlib.util.find_spec("flwr") is not None:
        here = Path(sys.executable).parent
        if (here / "flower-superlink").exists():
            return here
    candidate = venv / "bin"
    return candidate if (candidate / "flower-superlink").exists() else None


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (held open together so that they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    """Until something accepts connections on `port` (a bounded wait for a process start)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on port {port} within {START_TIMEOUT:g} s")


@contextmanager
def deployment(bin_dir: Path, home: Path, clients: int) -> Iterator[tuple[int, dict]]:
    """A SuperLink and `clients` SuperNodes; yields the SuperLink's port and the env to use.

    Since flwr 1.42 the SuperLink serves its Fleet, Control and Runtime APIs over one HTTP
    port; each SuperNode has a port of its own for its apps.
    """
    link_port, *node_ports = free_ports(1 + clients)
    # The SuperLink and SuperNodes start flower-superexec and the apps by name: PATH first.
    env = {**os.environ, "FLWR_HOME": str(home),
           "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []

    def spawn(name: str, args: list[str]) -> subprocess.Popen:
        with open(logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    try:
        link = spawn("superlink", [
            str(bin_dir / "flower-superlink"), "--insecure",
            "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(link_port)])
        wait_for_port(link_port, link, "flower-superlink")
        for i, port in enumerate(node_ports):
            spawn(f"supernode-{i}", [
                str(bin_dir / "flower-supernode"), "--insecure",
                "--superlink", f"127.0.0.1:{link_port}",
                "--node-config", f"partition-id={i} num-partitions={clients}",
                "--host", "127.0.0.1", "--port", str(port)])
        yield link_port, env
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def write_connection(home: Path, port: int) -> None:
    """The `flwr` CLI's config: one SuperLink connection, named "bench", on loopback."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "bench"\n\n'
        f'[superlink.bench]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')


def flower_rounds(bin_dir: Path, clients: int, rounds: int) -> list[dict[str, float]]:
    """Run the no-op Flower App in deployment mode; its per-round timestamps."""
    home = Path(tempfile.mkdtemp(prefix="hfl-bench-flwr-"))
    timings = home / "timings.json"
    app = home / "app"
    shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        with deployment(bin_dir, home, clients) as (port, env):
            write_connection(home, port)
            config = (f"num-server-rounds={rounds} num-supernodes={clients} floats={FLOATS} "
                      f"timings-file='{timings}'")
            with open(home / "logs" / "flwr-run.log", "wb") as log:
                subprocess.run([str(bin_dir / "flwr"), "run", str(app), "bench", "--stream",
                                "--run-config", config], env=env, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               timeout=RUN_TIMEOUT, check=True)
        if not timings.exists():
            raise RuntimeError(f"the Flower run recorded no rounds; see {home / 'logs'}")
        recorded = json.loads(timings.read_text())
    except BaseException:
        print(f"Flower's logs are kept in {home / 'logs'}", file=sys.stderr)
        raise
    shutil.rmtree(home, ignore_errors=True)
    return recorded


def hierfl_seconds(url: str, clients: int, workers: int, rounds: int) -> list[float]:
    """Seconds of each measured hierfl round (one cluster: the same flat job as Flower's)."""
    log_dir = Path(tempfile.mkdtemp(prefix="hfl-bench-logs-"))
    result = round_overhead.measure(url, clients, 1, workers, rounds, "mlp", [1333], log_dir)
    shutil.rmtree(log_dir, ignore_errors=True)
    return result.spans


def main() -> None:
    p = benchlib.parser(__doc__)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (after a warm-up)")
    p.add_argument("--workers", type=int, default=3, help="hierfl workers in the cluster")
    p.add_argument("--flower-venv", type=Path, default=CHECKOUT / ".venv-flower")
    args = p.parse_args()
    rounds = 1 if args.quick else args.rounds
    if args.clients not in (10, 100, 1000):
        p.error("--clients must be 10, 100 or 1000 (the shapes round_overhead.py knows)")
    with benchlib.redis_url(args.redis) as url:
        ours = hierfl_seconds(url, args.clients, args.workers, rounds)
    hierfl_s = sum(ours) / len(ours)
    rows = [("hierfl (threads of one process, Redis)", args.clients, len(ours), hierfl_s,
             benchlib.median(ours))]
    bin_dir = flower_bin(args.flower_venv)
    if bin_dir is None:
        print(benchlib.table(HEADERS, rows))
        print(f"Flower is not installed (no flwr here nor in {args.flower_venv}): only the "
              f"hierfl half ran. To compare, install it in its own venv:\n  {INSTALL_HINT}")
        return
    version = subprocess.run([str(bin_dir / "flwr"), "--version"], capture_output=True,
                             text=True, check=False).stdout.strip()
    recorded = flower_rounds(bin_dir, args.clients, rounds + 1)
    theirs = [r["end"] - r["start"] for r in recorded if r["round"] > 1]
    flower_s = sum(theirs) / len(theirs)
    rows.append((f"Flower {version.split()[-1] if version else ''} deployment (SuperLink + "
                 f"{args.clients} SuperNodes)", args.clients, len(theirs), flower_s,
                 benchlib.median(theirs)))
    print(f"no-op rounds, about {FLOATS:,} float32 parameters, FedAvg; hierfl: 1 cluster, "
          f"{args.workers} workers; round 1 (warm-up) and setup excluded on both sides")
    print(benchlib.table(HEADERS, rows))
    benchlib.verdict("Flower s/round / hierfl s/round", flower_s / hierfl_s, TARGET)


HEADERS = ["system", "clients", "rounds", "s/round (mean)", "s/round (p50)"]


if __name__ == "__main__":
    main()
