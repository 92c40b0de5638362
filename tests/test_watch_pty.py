"""`hierfl watch` in a real pseudo-terminal, following a job the test moves step by step."""

from __future__ import annotations

import io
import itertools
import re
import sys
import threading
import time

import pexpect
import pytest
from driver import Driver
from rich.console import Console

from hierfl.store.connection import connect
from hierfl.tui import watch as tui_watch

#: Generous: each step of the job shows within a fraction of a second in practice.
TIMEOUT = 30.0
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


class Screen:
    """Everything the command wrote to its terminal, escape sequences stripped."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.text = ""
        self.seen = 0  # what was matched already: each wait looks only at newer output

    def read(self, timeout: float) -> None:
        try:
            chunk = self.child.read_nonblocking(size=65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        self.text += _ANSI.sub("", chunk.decode("utf-8", errors="replace"))

    def wait_for(self, needle: str) -> str:
        """Block until `needle` appears in new output; returns the output up to its frame end."""
        deadline = time.monotonic() + TIMEOUT
        while (found := self.text.find(needle, self.seen)) < 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not shown within {TIMEOUT}s; screen tail:\n"
                                     f"{self.text[-3000:]}")
            if not self.child.isalive():
                self.read(0.2)
                if self.text.find(needle, self.seen) < 0:
                    raise AssertionError(f"watch ended before showing {needle!r}:\n"
                                         f"{self.text[-3000:]}")
                continue
            self.read(0.2)
        self.seen = found + len(needle)
        return self.text[found:]

    def drain_to_eof(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = self.child.read_nonblocking(size=65536, timeout=1.0)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return
            self.text += _ANSI.sub("", chunk.decode("utf-8", errors="replace"))
        raise AssertionError(f"watch did not exit within {TIMEOUT}s:\n{self.text[-3000:]}")


@pytest.fixture
def terminal_env(hierfl_env: dict[str, str]) -> dict[str, str]:
    env = dict(hierfl_env, TERM="xterm-256color")
    for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE",
                 "TTY_INTERACTIVE"):
        env.pop(name, None)
    return env


def test_watch_follows_rounds_live_and_exits_0_when_the_job_ends(r, terminal_env):
    d = Driver(r, rounds=3)
    d.setup()
    child = pexpect.spawn(sys.executable, ["-m", "hierfl", "watch", "demo"], env=terminal_env,
                          dimensions=(40, 100), timeout=TIMEOUT)
    try:
        screen = Screen(child)
        screen.wait_for("round 1/3")
        screen.wait_for("events")
        frame = screen.text[screen.text.rfind("demo  running"):]
        for line in ("demo      training     round 1/3  gen 1",
                     "  demo#0  training     round 1/3  epoch 0/1  gen 1",
                     "  demo#1  training     round 1/3  epoch 0/1  gen 1"):
            assert line in frame, frame
        pid = child.pid
        for round_ in (2, 3):
            d.run_round()
            screen.wait_for(f"demo  running  round {round_}/3")
            assert child.isalive() and child.pid == pid  # the same command, redrawn
        d.run_round()
        screen.wait_for("demo  completed  round 3/3")
        time.sleep(0.3)
        assert child.isalive()  # still waiting for the nodes to exit
        started = time.monotonic()
        d.exit_all()
        screen.drain_to_eof()
        took = time.monotonic() - started
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, screen.text[-3000:]
    assert "completed: every node has exited" in screen.text
    assert took < TIMEOUT


def test_redraws_follow_notifications_at_most_ten_a_second(r, redis_url, monkeypatch):
    """In-process: a burst of hundreds of transitions costs a few redraws, 0.1 s apart, and the
    end is seen through a notification (well before the 5 s safety timeout)."""
    d = Driver(r, clients=[0, 40], rounds=2)
    d.setup()
    drawn: list[float] = []
    real_render = tui_watch.render

    def counting_render(snapshot, now):
        drawn.append(time.monotonic())
        return real_render(snapshot, now)

    monkeypatch.setattr(tui_watch, "render", counting_render)
    console = Console(file=io.StringIO(), force_terminal=True, width=100, height=60)
    client = connect(redis_url)
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(last=tui_watch.watch(client, "demo", console)), daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not drawn and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(2):
            d.run_round()
        d.exit_all()
        ended = time.monotonic()
        thread.join(TIMEOUT)
    finally:
        client.close()
    assert not thread.is_alive()
    assert result["last"].finished
    assert drawn[-1] - ended < 2.5  # woken by the last exit, not by the safety timeout
    gaps = [b - a for a, b in itertools.pairwise(drawn)]
    assert gaps and min(gaps) >= 0.095
    assert len(drawn) <= 2 + (drawn[-1] - drawn[0]) / 0.095
