"""Many waiters, one notification connection: the hub behind `hierfl simulate` and
`hierfl node --count`."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from driver import Driver

from hierfl import keys
from hierfl.store.hub import NotificationHub, Turns
from hierfl.store.state import read_cluster


def subscribed_connections(r: redis.Redis) -> int:
    return sum(1 for c in r.client_list() if int(c.get("sub", 0)) > 0)


def test_fifty_waiters_share_one_subscribed_connection(r):
    before = subscribed_connections(r)
    with NotificationHub(r) as hub:
        waiters = [hub.waiter([keys.job(f"job{i % 5}")]) for i in range(50)]
        for waiter in waiters:
            waiter.__enter__()
        assert subscribed_connections(r) == before + 1
        for waiter in waiters:
            waiter.close()
    assert subscribed_connections(r) == before


def test_a_shared_waiter_wakes_on_a_script_change_well_before_its_safety_timeout(r):
    d = Driver(r, sub=[], clients=[1], workers=[1])
    d.deploy()
    with NotificationHub(r) as hub, hub.waiter([keys.job("demo")], 30.0) as waiter, \
            hub.waiter([keys.job("other")], 30.0) as bystander:
        timer = threading.Timer(0.2, d.ack_all_jobsheets)
        started = time.monotonic()
        timer.start()
        state = waiter.until(lambda: read_cluster(r, "demo"), lambda s: s.dataset_flag)
        elapsed = time.monotonic() - started
        timer.join()
        assert bystander.wait(timeout=0.2) is False  # only the changed key's waiters wake
    assert state.dataset_flag
    assert elapsed < 5.0, f"woke after {elapsed:.2f} s: not by notification"
    assert waiter.wakeups >= 1


def test_every_waiter_of_a_key_wakes_and_a_burst_is_one_wakeup(r):
    d = Driver(r, sub=[], clients=[3], workers=[1])
    d.deploy()
    with (NotificationHub(r) as hub, hub.waiter([keys.job("demo")]) as first,
          hub.waiter([keys.job("demo")]) as second):
        d.ack_all_jobsheets()  # several writes to the cluster hash
        time.sleep(0.1)  # let every notification arrive before we look
        assert first.wait(timeout=5) is True and second.wait(timeout=5) is True
        assert first.wait(timeout=0.2) is False


def test_a_lost_connection_breaks_every_waiter_and_the_next_one_reconnects(r):
    with NotificationHub(r) as hub:
        with hub.waiter([keys.job("a")]) as a, hub.waiter([keys.job("b")]) as b:
            r.client_kill_filter(_type="pubsub")
            with pytest.raises(redis.ConnectionError, match="lost the notification"):
                a.wait(timeout=5)
            with pytest.raises(redis.ConnectionError):
                b.wait(timeout=5)
        with hub.waiter([keys.job("a")], 30.0) as again:  # a node's next session
            r.hset(keys.job("a"), "probe", 1)
            assert again.wait(timeout=5) is True


def test_a_waiter_on_the_job_registry_leaves_the_hubs_anchor_subscribed(r):
    # A node claiming a slot waits on hierfl:jobs, the channel that keeps the hub's connection
    # subscribed; closing that waiter must not unsubscribe it.
    with NotificationHub(r) as hub:
        with hub.waiter([keys.JOBS]):
            pass
        time.sleep(0.1)  # an unsubscribe would have been processed by now
        assert hub.anchor.encode() in r.pubsub_channels()
        with hub.waiter([keys.job("demo")], 30.0) as waiter:
            r.hset(keys.job("demo"), "probe", 1)
            assert waiter.wait(timeout=5) is True


def test_shared_reads_read_the_cluster_hash_once_per_notification_and_own_entries_fresh(r):
    from hierfl.protocol import NodeStatus, ProcessStage
    from hierfl.store.hub import SharedReads

    d = Driver(r, sub=[], clients=[3], workers=[1])
    d.setup()
    gen = d.cluster("demo").generation
    with NotificationHub(r) as hub, hub.waiter([keys.job("demo")], 30.0) as waiter:
        reads = SharedReads(r, hub)
        first = [reads.read("demo", ("client", c)) for c in ("c0", "c1", "c2")]
        assert reads.reads == 1 and all(s.generation == gen for s in first)
        # A member's own call changes its own entries and the cluster's stages, not the
        # cluster hash: no notification, no other member woken, the hash is reused, and the
        # member sees its own new status all the same.
        d.scripts.start_training("demo", "client", "c0", gen)
        mine = reads.read("demo", ("client", "c0"))
        assert mine.status_of("client", "c0") == NodeStatus.BUSY and reads.reads == 1
        for c in ("c1", "c2"):
            d.scripts.start_training("demo", "client", c, gen)
        assert d.cluster("demo").client_stage == NodeStatus.BUSY  # moved, in the stages hash
        assert waiter.wait(timeout=0.5) is False
        d.train_cluster("demo")  # every client submits: the cluster hash moves to aggregating
        assert waiter.wait(timeout=5) is True
        assert reads.read("demo", ("client", "c1")).process_stage == ProcessStage.AGGREGATING
        assert reads.reads == 2  # the notified change is read once ...
        reads.read("demo", ("client", "c2"))
        assert reads.reads == 2  # ... and shared


def test_a_waiter_woken_only_for_some_states_sleeps_through_the_others(r):
    from hierfl.protocol import ProcessStage
    from hierfl.store.hub import SharedReads

    d = Driver(r, sub=[], clients=[2], workers=[1])
    d.setup()  # the cluster is training
    with (NotificationHub(r) as hub, hub.waiter([keys.job("demo")], 30.0) as worker,
          hub.waiter([keys.job("demo")], 30.0) as client):
        reads = SharedReads(r, hub)
        worker.wake_only_for("demo", lambda s: s.process_stage == ProcessStage.AGGREGATING)
        r.hset(keys.job("demo"), "probe", 1)  # a change while the cluster trains
        assert client.wait(timeout=5) is True  # not gated: woken by every change
        assert worker.wait(timeout=0.3) is False
        assert reads.reads == 1  # the hub read it once, for its gated waiter

        d.train_cluster("demo")  # every client submits: the cluster aggregates
        assert worker.wait(timeout=5) is True
        before = reads.reads
        assert reads.read("demo", ("worker", "w0")).process_stage == ProcessStage.AGGREGATING
        assert reads.reads == before  # the node reads what the hub read to wake it

        worker.wake_only_for("demo", lambda s: 1 / 0)  # a failing check wakes it
        r.hset(keys.job("demo"), "probe", 2)
        assert worker.wait(timeout=5) is True
        worker.wake_only_for("demo", lambda s: False)
        r.delete(keys.job("demo"))  # gone: woken, to find out for itself
        assert worker.wait(timeout=5) is True


def test_nodes_taking_turns_run_at_most_n_at_once():
    turns, lock = Turns(2), threading.Lock()
    active, most = [0], [0]

    def node() -> None:
        with turns.turn():
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.05)  # busy (training, say) while holding the turn
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=node) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert most[0] == 2 and active[0] == 0


def test_an_urgent_node_goes_before_the_others_waiting_for_a_turn():
    # A root worker's score of a round must not queue behind the next round's training.
    turns, order, queued = Turns(1), [], threading.Semaphore(0)

    def node(name: str, urgent: bool) -> None:
        queued.release()
        with turns.turn(urgent=urgent):
            order.append(name)

    with turns.turn():  # the only turn is taken while they line up
        threads = [threading.Thread(target=node, args=(f"client {i}", False)) for i in range(3)]
        threads.append(threading.Thread(target=node, args=("worker", True)))
        for t in threads:
            t.start()
            assert queued.acquire(timeout=5)
        time.sleep(0.2)  # let each of them block on its turn
    for t in threads:
        t.join(timeout=10)
    assert order[0] == "worker" and sorted(order[1:]) == ["client 0", "client 1", "client 2"]


def test_a_node_waiting_for_a_notification_gives_its_turn_to_the_node_that_sends_it(r):
    d = Driver(r, sub=[], clients=[1], workers=[1])
    d.deploy()
    turns = Turns(1)
    woke: list[bool] = []
    with NotificationHub(r, turns) as hub:

        def waiting_node() -> None:
            with turns.turn(), hub.waiter([keys.job("demo")], 30.0) as waiter:
                woke.append(waiter.wait(timeout=10))

        waiting = threading.Thread(target=waiting_node)
        waiting.start()
        time.sleep(0.2)  # let it take the only turn and block on its waiter
        # The only turn is free again: the waiting node gave it back while it waits.
        assert turns.running == 0, "the waiting node kept its turn"
        with turns.turn():  # ... so this node can take it and send the notification
            d.ack_all_jobsheets()
        waiting.join(timeout=10)
    assert woke == [True]
    with pytest.raises(ValueError, match="at least 1"):
        Turns(0)
