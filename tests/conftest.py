"""Shared fixtures: an isolated hierfl home and one real redis-server for the whole session.

Tests never touch the user's state directory or a Redis they did not start. Each test that
asks for `redis_url` (or `r`) gets the same server, flushed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import Phase, settings

from hierfl.store.connection import connect
from hierfl.store.server import EmbeddedServer

# Model-check budgets: "ci" by default, `--hypothesis-profile thorough` for thousands.
settings.register_profile("ci", max_examples=200, stateful_step_count=40, deadline=None)
settings.register_profile("thorough", max_examples=3000, stateful_step_count=80, deadline=None)
settings.register_profile("replay", max_examples=200, stateful_step_count=40, deadline=None,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking
settings.load_profile("ci")

#: The checkout root (the directory holding the `hierfl` package), for subprocesses.
ROOT = Path(__file__).resolve().parents[1]
#: Unix socket paths must stay short (about 100 bytes); pytest's temp dirs usually are.
_MAX_DIR = 80


def short_tmp_dir(factory: pytest.TempPathFactory, name: str) -> Path:
    """A fresh temp dir short enough to hold a unix socket."""
    path = factory.mktemp(name)
    if len(str(path)) <= _MAX_DIR:
        return path
    return Path(tempfile.mkdtemp(prefix=f"hfl-{name}-", dir="/tmp"))


@pytest.fixture(scope="session", autouse=True)
def hierfl_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$HIERFL_HOME for the session; no test may reach a user's Redis by accident.

    Anything a test starts there without asking (e.g. a CLI run without a URL) is stopped at
    the end so no redis-server outlives the session.
    """
    home = short_tmp_dir(tmp_path_factory, "home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HIERFL_HOME", str(home))
    patch.delenv("HIERFL_REDIS_URL", raising=False)
    try:
        yield home
    finally:
        EmbeddedServer(home).stop()
        patch.undo()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A real redis-server (the embedded kind) shared by the session."""
    server = EmbeddedServer(short_tmp_dir(tmp_path_factory, "redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedServer) -> str:
    """The session server's URL, after FLUSHALL: every test starts from an empty server."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A hierfl client (bytes replies) on the flushed session server."""
    client = connect(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def hierfl_env(redis_url: str, hierfl_home: Path) -> dict[str, str]:
    """Environment for subprocesses (nodes, the CLI): this checkout first on PYTHONPATH, the
    session's home and the flushed session server."""
    env = dict(os.environ)
    env["HIERFL_HOME"] = str(hierfl_home)
    env["HIERFL_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(ROOT), env.get("PYTHONPATH", "")) if part
    )
    return env


@pytest.fixture
def short_tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `tmp_path`, but guaranteed short enough for a unix socket inside it."""
    return short_tmp_dir(tmp_path_factory, "t")
