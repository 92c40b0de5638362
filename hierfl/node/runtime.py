"""The node loop shared by clients and workers: read, act, wait (on notifications), repeat.

A node derives everything it does from the state in Redis: it acts when its cluster's hash says
there is work for it in the current generation, and waits on keyspace notifications otherwise.
So a restarted node picks up where the state says it is, and an old round can never be mistaken
for a new one (every step is fenced by the generation it was read in).

Faults (docs/reliability.md):
- SIGTERM or SIGINT: the node abandons its current step (Redis already holds everything it has
  done; the step is redone by whoever resumes the slot), logs how to resume, and exits 0.
- A lost connection: the node reconnects with bounded exponential backoff, then starts a fresh
  session — a new subscription, a fresh read, and the step Redis does not show as done is
  redone for the current generation. That covers a call whose reply was lost and a write the
  server lost in a crash before persisting it: both look like work still to do, and redoing it
  is deterministic (same seed, same inputs, same digest) and fenced by the generation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, SlotNotCoveredError
from redis.retry import Retry

from hierfl import keys
from hierfl.errors import (
    BlobGone,
    HierflError,
    IllegalTransition,
    NotYet,
    RedisUnavailable,
    StaleGeneration,
)
from hierfl.learning import params as P
from hierfl.learning.data import decode_share
from hierfl.node.machine import NodeMachine
from hierfl.protocol import NodeStatus, Outcome, ProcessStage, Role
from hierfl.sheet import JobSheet
from hierfl.store.blobs import BlobCache, BlobStore
from hierfl.store.connection import (
    RECONNECT_FIRST_DELAY,
    RECONNECT_MAX_DELAY,
    RECONNECT_TIMEOUT,
    check_server,
    url_for_display,
)
from hierfl.store.scripts import Scripts
from hierfl.store.shards import (
    CLUSTER_LOST,
    AnyRedis,
    cluster_retry,
    drop_idle_connections,
    is_cluster,
    ping_owner,
)
from hierfl.store.state import ClusterState, Member, read_cluster
from hierfl.store.waiter import SAFETY_TIMEOUT, KeyWaiter, Waiter, WaiterFactory

#: What "the connection is gone" looks like (a refused call is a ScriptError, never one of
#: these). BusyLoadingError, a server still loading its append-only file, is a ConnectionError.
#: RedisUnavailable: the waiter's subscription was not confirmed in time. On a Redis Cluster
#: also a shard that is down or a slot no primary serves yet (in the middle of a failover).
CONNECTION_LOST = (redis.ConnectionError, redis.TimeoutError, RedisUnavailable,
                   ClusterDownError, SlotNotCoveredError)
#: What a reconnection attempt may meet before the server (or the cluster) answers again.
NOT_BACK_YET = (redis.ConnectionError, redis.TimeoutError, *CLUSTER_LOST)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Reads a cluster for one of its members: (cluster, (role, node id), wants_own) -> state or
#: None. `wants_own`, when given, may spare the read of the member's own entries (see
#: `hierfl.store.state.read_member`); a reader may also always read them.
ClusterReader = Callable[[str, Member, Callable[[ClusterState], bool] | None],
                         ClusterState | None]


class NodeStopped(BaseException):
    """SIGTERM or SIGINT arrived: abandon the current step and exit.

    A BaseException (like KeyboardInterrupt), so no `except Exception` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside, SIGTERM and SIGINT raise `NodeStopped` in the main thread (in another thread,
    where Python cannot install handlers, this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        # One signal stops the node cleanly; a second one, during that clean-up, kills it.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        raise NodeStopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Slot:
    """Where a node sits in a job tree."""

    cluster: str
    role: Role
    node: str

    @property
    def root(self) -> str:
        return keys.root_of(self.cluster)

    def __str__(self) -> str:
        return f"{self.cluster}/{self.role.value}/{self.node}"


class NodeRuntime:
    """What every node does; `ClientNode` and `WorkerNode` fill in the role's own steps."""

    role: Role

    def __init__(
        self,
        client: AnyRedis,
        slot: Slot,
        safety_timeout: float = SAFETY_TIMEOUT,
        url: str | None = None,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        waiters: WaiterFactory | None = None,
        reader: ClusterReader | None = None,
        sleep: Callable[[float], None] = time.sleep,
        blob_cache: BlobCache | None = None,
    ) -> None:
        """`waiters` makes this node's waiters: by default a subscription of its own
        (`KeyWaiter`); many nodes in one process share one (`NotificationHub.waiter`), and
        a `blob_cache` so that each blob is downloaded once."""
        # Every lost connection goes through one path, `_reconnect` and a fresh session, so
        # redis-py's own silent retries (which would re-subscribe behind the waiter's back) are
        # off for this node's client. (A client shared by many nodes comes without them from
        # `connect(pool_size=...)`: redis-py cannot change a BlockingConnectionPool's retries.)
        # A Redis Cluster client keeps a few retries without backoff, the ones that follow a
        # slot's redirect inside MULTI/EXEC; a shard that does not answer still ends up here.
        if is_cluster(client):
            client.set_retry(cluster_retry())
        elif (retry := client.get_retry()) is None or retry.get_retries() > 0:
            client.set_retry(Retry(NoBackoff(), 0))
        self.client = client
        self.slot = slot
        self.url = url or _url_of(client)
        self.reconnect_timeout = reconnect_timeout
        self.sleep = sleep  # reconnection backoff (nodes taking turns give theirs back)
        self.scripts = Scripts(client)
        self.blobs = BlobStore(client, slot.root, blob_cache)
        self.safety_timeout = safety_timeout
        self.waiters: WaiterFactory = waiters or (
            lambda watched, timeout: KeyWaiter(client, watched, timeout))
        # How this node reads its cluster: its own entries only, or (many nodes in one process)
        # a snapshot shared with the others (`hierfl.store.hub.SharedReads`).
        self.reader: ClusterReader = reader or (
            lambda cluster, member, wants_own: read_cluster(client, cluster, member))
        self.machine = NodeMachine(slot.role)
        self.log = logging.getLogger(f"hierfl.node.{slot}")
        self.sheet: JobSheet | None = None
        self._data_loaded = False
        self._closing: tuple[int, int, int | None] | None = None  # the phase asked to close
        # What this session knows of its own entries without reading them (`_wants_own`).
        self._step_seen: Step | None = None  # the step the loop's last read showed
        self._step_done: Step | None = None  # the step this node last completed
        self._published: list[str] = []  # digests this step stored (see _withdraw)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Take part in the job until it ends; 0 if it completed or was cancelled, 1 if it
        failed. Stopped by SIGTERM/SIGINT: 0, after saying how to resume."""
        with stop_on_signals():
            try:
                return self._run_resilient()
            except NodeStopped as stop:
                self.log.warning("%s: stopping; a step in progress is abandoned (Redis holds "
                                 "every step this node completed)", stop.signal_name)
                self.log.warning("stopped; restart with --cluster %s --id %s to resume",
                                 self.slot.cluster, self.slot.node)
                return 0

    def _run_resilient(self) -> int:
        while True:
            try:
                return self._session()
            except CONNECTION_LOST as exc:
                self._reconnect(exc)

    def _session(self) -> int:
        """Subscribe, then read and act until the job ends.

        Everything a session does follows from the state it reads, so after a lost connection
        a new session simply starts over: it finds what is already done, and redoes the rest.
        """
        self._step_seen = self._step_done = None  # a new session knows nothing it did not read
        with self.waiters([keys.job(self.slot.cluster)], self.safety_timeout) as waiter:
            if self._setup(waiter):
                waiter.wake_only_for(self.slot.cluster, self.may_wake_for)
                while True:
                    state = waiter.until(self._read_in_loop, self._ready, wake_in=_deadline_in)
                    if state.finished:
                        break
                    if self._deadline_due(state):
                        self._close_round(state)
                    else:
                        self._act(state)
            return self._exit(self.read())

    def _reconnect(self, error: BaseException) -> None:
        """Wait for the server to answer again: exponential backoff from RECONNECT_FIRST_DELAY
        doubling to RECONNECT_MAX_DELAY, for at most `reconnect_timeout` seconds in all."""
        shown = url_for_display(self.url)
        self.log.warning("lost the connection to Redis at %s (%s); reconnecting", shown, error)
        started = time.monotonic()
        delay, attempts = RECONNECT_FIRST_DELAY, 0
        while True:
            attempts += 1
            # Drop the idle (maybe dead) sockets, not those other nodes of this process are
            # using: they find out for themselves. A failed command already closed its own.
            drop_idle_connections(self.client)
            try:
                self._probe()
                break
            except NOT_BACK_YET as exc:
                error = exc
            left = self.reconnect_timeout - (time.monotonic() - started)
            if left <= 0:
                raise RedisUnavailable(
                    f"{self.slot}: lost the connection to Redis at {shown} and could not "
                    f"reconnect within {self.reconnect_timeout:g} s ({attempts} attempts; last "
                    f"error: {error}); once it is back, restart with --cluster "
                    f"{self.slot.cluster} --id {self.slot.node} to resume"
                ) from error
            # Backoff between reconnection attempts; nothing of the job's state is polled here.
            self.sleep(min(delay, left))
            delay = min(delay * 2, RECONNECT_MAX_DELAY)
        self.log.warning("reconnected to Redis at %s after %.1f s (%d attempts); re-subscribing "
                         "and re-reading the state", shown, time.monotonic() - started, attempts)

    def _probe(self) -> None:
        """PING, then re-check the server: one that restarted may have lost a runtime
        `CONFIG SET notify-keyspace-events` (check_server turns it back on or says how).

        On a Redis Cluster the topology is read again first and the PING goes to the primary
        that owns this node's job now (a failover may have promoted a replica); the fresh
        session's waiter then subscribes there.
        """
        job_key = keys.job(self.slot.cluster)
        ping_owner(self.client, job_key)
        try:
            check_server(self.client, self.url, key=job_key)
        except RedisUnavailable as exc:
            if isinstance(exc.__cause__, NOT_BACK_YET):
                raise exc.__cause__ from None  # gone again: keep backing off
            raise

    def read(self, wants_own: Callable[[ClusterState], bool] | None = None) -> ClusterState:
        """This node's view of its cluster, its own entries included (unless `wants_own` says
        they cannot matter: then `state.own_read` may be False)."""
        state = self.reader(self.slot.cluster, (self.slot.role.value, self.slot.node), wants_own)
        if state is None:
            raise HierflError(
                f"{self.slot}: cluster {self.slot.cluster} no longer exists (was the job deleted?)"
            )
        return state

    def _read_in_loop(self) -> ClusterState:
        state = self.read(wants_own=self._wants_own)
        self._step_seen = _step(state)
        return state

    def _wants_own(self, state: ClusterState) -> bool:
        """Whether this node's own entries must be read to know if it has work in `state`.

        Not when the cluster hash shows a phase the role does not act in (`may_act_in`); not
        when this node completed the step of that phase itself; and not when the step is new
        since this session's last read, because a member's own entries change only through
        its own calls and through the cascades that begin a step (clearing submissions or
        aggregates), so in a new step they are its fresh start. A wrong guess costs one call
        that the script refuses. So a client reads nothing of its own in a round beyond the
        shared cluster hash (`SharedReads`), and calls start_training and submit_params.
        """
        if not self.may_act_in(state):
            return False
        step = _step(state)
        return step != self._step_done and (self._step_seen is None or step == self._step_seen)

    def step_done(self, state: ClusterState) -> bool:
        """Whether this node did its step of `state` (its own entries tell, when read; when
        not, `_wants_own` judged: done if this node completed it, else a fresh step)."""
        if state.own_read:
            return self.own_step_done(state)
        return _step(state) == self._step_done

    def _ready(self, state: ClusterState) -> bool:
        return state.finished or self._deadline_due(state) or self.has_work(state)

    def may_wake_for(self, state: ClusterState) -> bool:
        """Whether this node could have anything to do in a cluster whose hash reads `state`,
        its own entries unread: the job's end, a deadline to watch, or a phase its role acts
        in. What `_ready` looks at, judged by the hash alone and erring towards waking; many
        nodes in one process are not woken for the rest (`Waiter.wake_only_for`): a client
        sleeps through its cluster's aggregation, a worker through the training."""
        return state.finished or state.deadline_ms is not None or self.may_act_in(state)

    # -- deadlines (round_timeout, aggregation_timeout) ------------------------------------

    def _deadline_due(self, state: ClusterState) -> bool:
        """The phase's deadline (server time) has passed and this node has not yet asked to
        close it. Any node of the cluster may ask; the script decides, once."""
        due = state.deadline_in()
        return due is not None and due <= 0 and _phase(state) != self._closing

    def _close_round(self, state: ClusterState) -> None:
        self._closing = _phase(state)
        try:
            closed = self.scripts.close_round(self.slot.cluster, state.generation)
        except (StaleGeneration, NotYet, IllegalTransition) as exc:
            self.log.debug("close_round refused, following the new state: %s", exc)
            return
        if closed:
            self.log.warning("generation %d: the deadline passed; closed the %s phase with the "
                             "members that had answered", state.generation,
                             ProcessStage(state.process_stage).name.lower())

    def _setup(self, waiter: Waiter) -> bool:
        """Job sheet, then dataset; False when the job ended before this node was ready."""
        state = waiter.until(self.read, lambda s: s.jobsheet_flag or s.finished)
        self.machine.sync(self.my_status(state))
        self.sheet = JobSheet.from_json(self.client.get(keys.sheet(self.slot.root)))
        try:
            if self.machine.status < NodeStatus.JOBSHEET_ACKED and not state.finished:
                self._call("ack_jobsheet", self.scripts.ack_jobsheet)
            state = waiter.until(self.read, lambda s: s.dataset_flag or s.finished)
            if state.finished:
                return False
            if not self._data_loaded:  # a new session after a reconnect keeps what it has
                self.load_data()
                self._data_loaded = True
            if self.my_status(state) < NodeStatus.DATASET_ACKED:
                candidate = self.initial_candidate()
                self._call("ack_dataset", self.scripts.ack_dataset, candidate)
        except IllegalTransition:
            if self.read().finished:  # cancelled while we were setting up
                return False
            raise
        self.log.info("ready: job sheet and dataset acknowledged")
        return True

    def _act(self, state: ClusterState) -> None:
        self._published = []
        try:
            self.work(state)
            if self.may_act_in(state):
                self._step_done = _step(state)
        except (StaleGeneration, IllegalTransition) as exc:
            # The cluster moved on while we worked: re-read and follow the new state.
            self.log.warning("step refused, following the new state: %s", exc)
            self._withdraw(self._published)
        except BlobGone as exc:
            # A blob of a round that ended meanwhile was retired; gone in the current one, it
            # would be a real loss.
            now = self.read()
            if (now.generation, now.process_stage) == (state.generation, state.process_stage):
                raise
            self.log.warning("the round moved on while this node worked (%s); following it", exc)

    def _exit(self, state: ClusterState) -> int:
        self.before_exit(state)
        if self.my_status(state) != NodeStatus.EXITED:
            self._call("ack_exit", self.scripts.ack_exit)
        top = read_cluster(self.client, self.slot.root)
        outcome = top.outcome if top else ""
        self.log.info("job %s ended: %s", self.slot.root, outcome or "unknown")
        return 1 if outcome == Outcome.FAILED.value else 0

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, name: str, script, *args: object):
        """Call a transition script for this node; its reply: the node's status, or a tuple
        that begins with it (a script called with reads, `Scripts.start_aggregation_reading`)."""
        reply = script(self.slot.cluster, self.slot.role.value, self.slot.node, *args)
        status = reply[0] if isinstance(reply, tuple) else reply
        self.machine.sync(status)
        self.log.debug("%s -> status %s", name, status)
        _test_pause(self.log, name, args)
        return reply

    def my_status(self, state: ClusterState) -> int:
        status = state.status_of(self.slot.role.value, self.slot.node)
        if status is None:
            raise HierflError(f"{self.slot}: no such {self.slot.role.value} in {self.slot.cluster}")
        return status

    def new_model(self, seed_labels: tuple[object, ...]):
        from hierfl.learning.models import build_model  # torch: only nodes that build a model
        from hierfl.learning.training import derive_seed

        sheet = self.sheet
        seed = derive_seed(sheet.seed, *seed_labels)
        return build_model(sheet.model, sheet.data.n_features, sheet.data.n_classes, seed)

    def global_params(self, state: ClusterState) -> dict[str, np.ndarray]:
        return P.from_bytes(self.blobs.get(state.global_digest))

    def publish(self, params: P.Params, state: ClusterState) -> str:
        """Store the parameters this node computed in `state`'s generation; their digest.

        The one place where a node's result enters Redis (fault tests replace it to play a
        node that sends garbage). A worker's aggregate is not sent again when a peer stored
        the same one first (`BlobStore.put`'s `unless_stored`; see `WorkerNode._upload`).
        """
        digest = self.blobs.put(P.to_bytes(params), unless_stored=self.role == Role.WORKER)
        self._published.append(digest)
        return digest

    def _withdraw(self, digests: list[str]) -> None:
        """Take back what this step stored for a refused call: nothing will name those blobs
        (`discard_blob` keeps any that something live does, such as a peer's same aggregate)."""
        for digest in digests:
            if self.scripts.discard_blob(self.slot.root, digest):
                self.log.info("discarded %s, stored for the refused call", digest[:12])

    def load_share(self, digest: str) -> tuple[np.ndarray, np.ndarray]:
        return decode_share(self.blobs.get(digest))

    # -- what a role fills in --------------------------------------------------------------

    def load_data(self) -> None:
        """Download what this node needs once the dataset flag is up."""

    def initial_candidate(self) -> str:
        """The digest of initial parameters offered with the dataset ACK, or ""."""
        return ""

    def may_act_in(self, state: ClusterState) -> bool:
        """Whether `state`'s phase is one in which this role has a step to do (training,
        aggregating), judged by the cluster hash alone."""
        return True

    def own_step_done(self, state: ClusterState) -> bool:
        """Whether this node's own entries (read) show its step of `state` done."""
        raise NotImplementedError

    def has_work(self, state: ClusterState) -> bool:
        """Work to do in `state` (its own entries may be unread: use `step_done`)."""
        raise NotImplementedError

    def work(self, state: ClusterState) -> None:
        raise NotImplementedError

    def before_exit(self, state: ClusterState) -> None:
        """Last duties once the job is finished (a root worker records the final metric)."""


def _deadline_in(state: ClusterState) -> float | None:
    return state.deadline_in()


#: One step of a cluster's members: generation, process stage and aggregation attempt (a
#: re-aggregation is a new step for the workers).
Step = tuple[int, int, int]


def _step(state: ClusterState) -> Step:
    return (state.generation, state.process_stage, state.attempt)


def _phase(state: ClusterState) -> tuple[int, int, int | None]:
    """What identifies one phase of a cluster: generation, process stage and its deadline."""
    return (state.generation, state.process_stage, state.deadline_ms)


def _url_of(client: AnyRedis) -> str:
    """A URL naming the server `client` talks to, for messages (when none was given)."""
    if is_cluster(client):
        node = client.get_default_node()
        return f"redis://{node.host}:{node.port}"
    kwargs = client.connection_pool.connection_kwargs
    if path := kwargs.get("path"):
        return f"unix://{path}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


# -- TEST HOOK (tests/faults only) --------------------------------------------------------------
#: HIERFL_TEST_PAUSE_AFTER="SCRIPT@GENERATION" (e.g. "start_training@2") makes a node sleep
#: HIERFL_TEST_PAUSE_SECONDS (default 60) right after that script call, so that a fault test can
#: SIGKILL it at a known point. Unset, which it always is outside tests, it does nothing.


def _test_pause(log: logging.Logger, name: str, args: tuple[object, ...]) -> None:
    wanted = os.environ.get("HIERFL_TEST_PAUSE_AFTER")
    if not wanted:
        return
    script, _, generation = wanted.partition("@")
    if name == script and (not generation or (args and str(args[0]) == generation)):
        seconds = float(os.environ.get("HIERFL_TEST_PAUSE_SECONDS", "60"))
        log.warning("TEST HOOK: pausing %g s after %s %s", seconds, name, generation)
        time.sleep(seconds)
