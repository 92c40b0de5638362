"""Waiting on keyspace notifications, not on a timer."""

from __future__ import annotations

import threading
import time

from driver import Driver

from hierfl import keys
from hierfl.store.state import read_cluster
from hierfl.store.waiter import KeyWaiter


def test_waiter_wakes_on_a_script_change_well_before_its_safety_timeout(r):
    d = Driver(r, sub=[], clients=[1], workers=[1])
    d.deploy()
    with KeyWaiter(r, [keys.job("demo")], safety_timeout=30.0) as waiter:
        timer = threading.Timer(0.2, d.ack_all_jobsheets)
        started = time.monotonic()
        timer.start()
        state = waiter.until(lambda: read_cluster(r, "demo"), lambda s: s.dataset_flag)
        elapsed = time.monotonic() - started
        timer.join()
    assert state.dataset_flag
    assert elapsed < 5.0, f"woke after {elapsed:.2f} s: not by notification"
    assert waiter.wakeups >= 1


def test_wait_returns_false_after_the_timeout_when_nothing_changes(r):
    with KeyWaiter(r, [keys.job("quiet")], safety_timeout=0.2) as waiter:
        started = time.monotonic()
        assert waiter.wait() is False
        assert 0.15 < time.monotonic() - started < 3.0
    assert waiter.wakeups == 0


def test_a_burst_of_changes_is_one_wakeup(r):
    d = Driver(r, sub=[], clients=[3], workers=[1])
    d.deploy()
    with KeyWaiter(r, [keys.job("demo")], safety_timeout=5.0) as waiter:
        d.ack_all_jobsheets()  # several writes to the cluster hash
        time.sleep(0.1)  # let every notification arrive before we look
        assert waiter.wait() is True
        assert waiter.wait(timeout=0.2) is False


def test_until_gives_up_at_its_deadline(r):
    import pytest

    with (KeyWaiter(r, [keys.job("never")], safety_timeout=0.1) as waiter,
          pytest.raises(TimeoutError)):
        waiter.until(lambda: None, lambda s: s is not None, deadline=time.monotonic() + 0.3)
