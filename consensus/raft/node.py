"""The hardened Raft layer: pysyncobj 0.3.17 with its unsafe parts replaced.

Every change to pysyncobj itself (the pickle codec, the journal and poller factories, the
overridden private methods, the transport class) is in consensus/raft/_pysyncobj.py, installed by
:class:`RaftNode` when it builds a node, never at import. What the node adds and why:

* **No pickle on any input path** (see consensus/raft/_pysyncobj.py), and
  :func:`forbid_pickle` for a process that must never unpickle (a replica process).
* **A raising apply cannot wedge the node.** pysyncobj retries a raising entry every tick forever;
  we catch, log CRITICAL and return an :class:`ApplyError` value instead.
* **Snapshot/journal crash window.** pysyncobj clears the whole journal at start when its first
  two entries do not match the snapshot's, which is exactly the state left by a crash between
  writing a snapshot and truncating the journal prefix: every entry after the snapshot would be
  lost locally. Our deserializer drops the prefix up to the snapshot first, so they survive.
* **Latency and backpressure.** Unbatched append entries (commit p50 ~1 ms on loopback instead of
  ~100 ms), a bounded number of proposals in flight (QUEUE_FULL is backpressure), a proposal
  timeout, and a short leader fallback so a partitioned leader stops believing it leads.
* **A one-member group is not timer-bound.** pysyncobj commits only at the top of a tick, so
  without followers' replies to wake it a lone leader's entry waited for the idle tick (50 ms
  per put and per read barrier). Alone, the leader commits an entry as soon as it is in its
  (fsynced) log, and answers a read barrier without an entry when nothing committed is
  unapplied (``SyncObjReplica._qb_commit_alone`` in consensus/raft/_pysyncobj.py,
  :meth:`RaftNode.barrier`).

* **Linearizable reads without a log write** (ReadIndex, Raft thesis §6.4):
  :meth:`RaftNode.read_index` waits for a read index confirmed by one heartbeat round a
  majority answered in the leader's term (on a follower: asked of the leader over the raft
  connection), then for this replica to apply up to it. The round itself is in
  consensus/raft/_pysyncobj.py (``SyncObjReplica.qb_read_index``). :meth:`RaftNode.barrier`
  (a committed no-op) stays for callers that want an entry in the log; reads no longer use it.

Threads: one thread does all networking, applies entries and runs every callback (the *tick
thread*). By default that is pysyncobj's own; given an asyncio ``loop``, the node runs on that
loop's thread instead (:class:`LoopPoller`), so a replica's client endpoint and its Raft node
share one thread and a commit reaches the client without a hand-off between threads.
:meth:`RaftNode.propose`, :meth:`RaftNode.barrier`, :meth:`RaftNode.read_index`,
:meth:`RaftNode.call_in_tick`,
:meth:`RaftNode.status` and :meth:`RaftNode.close` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import enum
import functools
import os
import pathlib
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

import pydantic
import structlog

from quorumboard.consensus.errors import (
    CorruptData,
    InvalidCommand,
    Unavailable,
)
from quorumboard.consensus.raft import _pysyncobj
from quorumboard.consensus.raft._pysyncobj import (
    FAIL_REASON,
    POLL_EVENT_TYPE,
    SyncObjConf,
    SyncObjException,
    SyncObjReplica,
)
from quorumboard.consensus.raft.journal import (
    JOURNAL_FILE,
    SNAPSHOT_FILE,
    Entry,
    Journal,
    fsync_dir,
    seal_file,
    unseal_file,
)
from quorumboard.consensus.raft.transport import WireConfig, listen_socket
from quorumboard.consensus.wire.protocol import BUDGET_S_MAX, Failure

__all__ = [
    "ApplyError",
    "LoopPoller",
    "ProposeFailure",
    "RaftNode",
    "RaftSettings",
    "RaftStatus",
    "StateMachine",
    "forbid_pickle",
    "read_snapshot",
]

log = structlog.get_logger(__name__)

SNAPSHOT_MAGIC: Final = b"QBSNAP01"

_REGULAR: Final = 0
_NO_OP: Final = 1
_MEMBERSHIP: Final = 2
_VERSION: Final = 3
_ROLES: Final = {0: "follower", 1: "candidate", 2: "leader"}
_STATUS_READ_ATTEMPTS: Final = 5


# --- settings, results, protocol ---------------------------------------------------------------


BIND_RETRY_S: Final = 0.5
COMPACTION_JOURNAL_BYTES_MIN: Final = 64 * 1024
COMPACTION_JOURNAL_BYTES_DEFAULT: Final = 64 * 2**20
TICK_PERIOD_S: Final = 0.05
"""Longest wait between pysyncobj ticks when nothing happens (timers: elections, heartbeats)."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class RaftSettings(pydantic.BaseModel, frozen=True):
    """One replica's Raft configuration.

    Timing defaults are for loopback on a loaded 2-core box: fail over in about one second but do
    not flap when a tick is delayed by a few hundred milliseconds.
    """

    self_address: str
    peers: tuple[str, ...] = ()
    dial: tuple[tuple[str, str], ...] = ()
    """(peer, address) pairs: dial ``address`` to reach ``peer`` (fault-injection proxies)."""
    data_dir: pathlib.Path
    secret: bytes | None = None
    fsync: bool = False
    election_timeout_min_s: float = 0.4
    election_timeout_max_s: float = 1.4
    heartbeat_interval_s: float = 0.1
    tick_period_s: float = TICK_PERIOD_S
    """Longest wait between ticks when nothing arrives. Timers (elections, heartbeats, proposal
    timeouts) only fire on a tick; nothing else waits for one: a proposal or a message wakes the
    node at once (a lone node's proposals commit in the tick that appends them)."""
    # A leader that heard from no majority for this long steps down (pysyncobj default: 30 s).
    leader_fallback_timeout_s: float = 2.0
    connection_idle_timeout_s: float = 3.5
    handshake_timeout_s: float = 3.0
    reconnect_interval_s: float = 0.5
    frame_bytes_max: int = 16 * 2**20
    hello_bytes_max: int = 4096
    command_bytes_max: int = 2**20
    send_buffer_bytes_max: int = 64 * 2**20
    pending_connections_max: int = 32
    # Entries in the log before a snapshot is taken: bounds journal size and restart replay time
    # (20k entries of ~1 KiB = ~20 MiB) while keeping snapshots (a full state dump) infrequent.
    compaction_min_entries: int = 20_000
    compaction_journal_bytes: int = COMPACTION_JOURNAL_BYTES_DEFAULT
    """Snapshot and compact as well once the journal grew this many bytes since its low point
    after the last compaction it triggered: with large values the entry count alone let the
    journal (on disk and in memory) reach gigabytes."""
    compaction_min_time_s: float = 600.0
    snapshot_chunk_bytes: int = 256 * 1024
    # Proposals in flight (queued or awaiting commit). pysyncobj showed a compaction bug with
    # ~40k queued commands; 2,000 keeps us far below and still saturates the log.
    proposals_in_flight_max: int = 2_000
    propose_timeout_s: float = 10.0
    wait_for_leader: bool = True
    tick_calls_max: int = 10_000
    bind_attempts_max: int = 10
    close_timeout_s: float = 5.0

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> RaftSettings:
        if self.self_address in self.peers:
            raise ValueError("peers must not include self_address")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError("duplicate peer address")
        for address in (self.self_address, *self.peers):
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bad address {address!r}: want host:port")
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if not self.election_timeout_min_s > 3 * self.heartbeat_interval_s:
            raise ValueError("election_timeout_min_s must exceed 3 heartbeats")
        if not self.election_timeout_max_s > self.election_timeout_min_s:
            raise ValueError("election_timeout_max_s must exceed election_timeout_min_s")
        if self.propose_timeout_s < BUDGET_S_MAX:
            raise ValueError(f"propose_timeout_s must be at least a request's largest budget "
                             f"({BUDGET_S_MAX} s), so the replica answers its client first")
        if not self.tick_period_s > 0:
            raise ValueError("tick_period_s must be positive")
        if self.peers and self.tick_period_s > self.heartbeat_interval_s:
            raise ValueError("with peers, tick_period_s must not exceed heartbeat_interval_s")
        if not self.leader_fallback_timeout_s > self.heartbeat_interval_s:
            raise ValueError("leader_fallback_timeout_s must exceed heartbeat_interval_s")
        if not self.connection_idle_timeout_s >= self.election_timeout_max_s:
            raise ValueError("connection_idle_timeout_s must be >= election_timeout_max_s")
        if not 64 <= self.hello_bytes_max <= self.frame_bytes_max:
            raise ValueError("need 64 <= hello_bytes_max <= frame_bytes_max")
        if not 0 < 4 * self.command_bytes_max <= self.frame_bytes_max:
            raise ValueError("frame_bytes_max must be >= 4 * command_bytes_max")
        if self.compaction_min_entries < 2 or self.proposals_in_flight_max < 1:
            raise ValueError("compaction_min_entries >= 2 and proposals_in_flight_max >= 1")
        if self.compaction_journal_bytes < COMPACTION_JOURNAL_BYTES_MIN:
            raise ValueError(f"compaction_journal_bytes must be at least "
                             f"{COMPACTION_JOURNAL_BYTES_MIN}")
        return self


class ProposeFailure(enum.Enum):
    """Why a proposal has no result.

    Not applied (safe to retry as a new proposal): QUEUE_FULL, NO_LEADER, NOT_LEADER, DISCARDED,
    CLOSED (node closed before submitting it).
    May still commit (retry only through an exactly-once session): LEADER_CHANGED,
    UNKNOWN_OUTCOME, TIMEOUT.
    """

    QUEUE_FULL = "queue_full"
    NO_LEADER = "no_leader"
    NOT_LEADER = "not_leader"
    DISCARDED = "discarded"
    CLOSED = "closed"
    LEADER_CHANGED = "leader_changed"
    UNKNOWN_OUTCOME = "unknown_outcome"
    TIMEOUT = "timeout"

    @property
    def may_have_committed(self) -> bool:
        return self in _MAYBE_COMMITTED

    @property
    def outcome(self) -> Failure:
        """The one failure vocabulary callers see (:class:`Failure`): ``OUTCOME_UNKNOWN`` when
        the entry may still commit, ``UNAVAILABLE`` when it certainly did not."""
        return Failure.OUTCOME_UNKNOWN if self.may_have_committed else Failure.UNAVAILABLE


_MAYBE_COMMITTED: Final = frozenset(
    {ProposeFailure.LEADER_CHANGED, ProposeFailure.UNKNOWN_OUTCOME, ProposeFailure.TIMEOUT}
)
_FAIL_MAP: Final = {
    FAIL_REASON.QUEUE_FULL: ProposeFailure.QUEUE_FULL,
    FAIL_REASON.MISSING_LEADER: ProposeFailure.NO_LEADER,
    FAIL_REASON.DISCARDED: ProposeFailure.DISCARDED,
    FAIL_REASON.NOT_LEADER: ProposeFailure.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED: ProposeFailure.LEADER_CHANGED,
    FAIL_REASON.UNKNOWN_OUTCOME: ProposeFailure.UNKNOWN_OUTCOME,
}


@dataclasses.dataclass(frozen=True)
class ApplyError:
    """Returned (never raised) when ``StateMachine.apply`` raised: the entry counts as applied."""

    kind: str
    message: str


class RaftStatus(pydantic.BaseModel, frozen=True):
    """A snapshot of one replica's Raft state (read without a lock: a hint, not a fence)."""

    address: str
    role: str
    leader: str | None
    term: int
    commit_index: int
    last_applied: int
    log_len: int
    last_log_index: int
    has_quorum: bool
    ready: bool


class StateMachine(Protocol):
    """What the log drives. All three run on the tick thread."""

    def apply(self, payload: bytes) -> object:
        """Apply one committed payload; deterministic; should never raise (it is guarded)."""
        ...

    def snapshot(self) -> bytes:
        """Full state as bytes (msgpack) at the last applied entry."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's bytes."""
        ...


OnDone = Callable[[object | None, Failure | None], None]
"""A proposal's or barrier's completion: ``(result, None)``, or ``(None, failure)`` in the one
failure vocabulary of :class:`~quorumboard.consensus.wire.protocol.Failure`. The Raft-level
reason (:class:`ProposeFailure`) is logged at debug level where it is translated, once."""


_POLL_READ: Final = POLL_EVENT_TYPE.READ
_POLL_WRITE: Final = POLL_EVENT_TYPE.WRITE


class LoopPoller:
    """pysyncobj's poller interface on an asyncio event loop.

    pysyncobj's sockets become the loop's readers and writers, so one thread serves them and
    everything else on the loop. ``poll`` does not wait (the loop does); after every event
    ``after_event`` runs, which schedules a pysyncobj tick to act on what arrived. An error
    condition reaches the callbacks as readable/writable, where a failing recv or send drops
    the connection. Only the loop's thread may subscribe once the loop runs.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, after_event: Callable[[], None],
                 before_event: Callable[[], None] = lambda: None,
                 event_needs_tick: Callable[[], bool] = lambda: True) -> None:
        self._loop = loop
        self._after_event = after_event
        self._before_event = before_event
        self._event_needs_tick = event_needs_tick
        self._fds: set[int] = set()

    def subscribe(self, descr: int, callback: Callable[[int, int], None], eventMask: int) -> None:
        self.unsubscribe(descr)
        self._fds.add(descr)
        if eventMask & _POLL_READ:
            self._loop.add_reader(descr, self._fire, callback, descr, _POLL_READ)
        if eventMask & _POLL_WRITE:
            self._loop.add_writer(descr, self._fire, callback, descr, _POLL_WRITE)

    def unsubscribe(self, descr: int) -> None:
        self._fds.discard(descr)
        self._loop.remove_reader(descr)
        self._loop.remove_writer(descr)

    def close(self) -> None:
        """Forget every descriptor (after a failed start, when nothing else will)."""
        for descr in list(self._fds):
            self.unsubscribe(descr)

    def poll(self, timeout: float) -> None:
        """The loop waits for events; a tick never blocks here."""

    def _fire(self, callback: Callable[[int, int], None], descr: int, event: int) -> None:
        self._before_event()
        try:
            callback(descr, event)
        except Exception:  # pysyncobj's own tick loop logs and carries on, so do we
            log.exception("raft_poll_callback_raised")
            self._after_event()
            return
        if self._event_needs_tick():
            self._after_event()


def forbid_pickle() -> None:
    """Make every stdlib unpickling entry point raise in this process (tests, hardened replicas).

    Called by the replica process at start (consensus/replica/machine.py ``run``) and by
    test processes; proves no path unpickles.
    """

    def refuse(*_args: object, **_kwargs: object) -> Any:
        raise pickle.UnpicklingError("unpickling is forbidden in this process")

    class _ForbiddenUnpickler:
        def __init__(self, *_args: object, **_kwargs: object) -> None:
            refuse()

    pickle.loads = refuse
    pickle.load = refuse
    pickle._loads = refuse  # type: ignore[attr-defined]
    pickle._load = refuse  # type: ignore[attr-defined]
    pickle.Unpickler = _ForbiddenUnpickler  # type: ignore[misc,assignment]
    setattr(pickle, "_Unpickler", _ForbiddenUnpickler)  # noqa: B010 (private name, no stub)



def _read_failed(on_done: OnDone, reason: str) -> None:
    """A read got no confirmed index: nothing was applied for it, so ``UNAVAILABLE``."""
    log.debug("read_failed", reason=reason)
    try:
        on_done(None, Failure.UNAVAILABLE)
    except Exception:
        log.exception("raft_on_done_raised")


# --- snapshot file -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A decoded snapshot file."""

    machine: bytes
    last: Entry
    prev: Entry
    cluster: tuple[str, ...]


def _entry_to_wire(entry: Any) -> list[Any]:
    command, idx, term = entry
    return [bytes(command), int(idx), int(term)]


def _entry_tuple(entry: Any) -> Entry:
    command, idx, term = _entry_to_wire(entry)
    return (command, idx, term)


def _entry_from_wire(value: object, path: pathlib.Path) -> Entry:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not isinstance(value[0], bytes)
        or type(value[1]) is not int
        or type(value[2]) is not int
    ):
        raise CorruptData(f"{path}: malformed snapshot entry")
    return (value[0], value[1], value[2])


def write_snapshot(path: pathlib.Path, snapshot: Snapshot) -> None:
    """Write ``path`` with crc and fsync it (the caller renames it into place)."""
    data = seal_file(
        SNAPSHOT_MAGIC,
        {
            "machine": snapshot.machine,
            "last": _entry_to_wire(snapshot.last),
            "prev": _entry_to_wire(snapshot.prev),
            "cluster": list(snapshot.cluster),
        },
    )
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_snapshot(path: pathlib.Path, snapshot_bytes_max: int) -> Snapshot:
    """Read and verify a snapshot file; :class:`CorruptData` names the file and offset."""
    with open(path, "rb") as f:
        data = f.read(snapshot_bytes_max + 1)
    if len(data) > snapshot_bytes_max:
        raise CorruptData(f"{path}: snapshot larger than {snapshot_bytes_max} bytes")
    fields = unseal_file(data, SNAPSHOT_MAGIC, str(path), "snapshot")
    if not isinstance(fields, dict) or not isinstance(fields.get("machine"), bytes):
        raise CorruptData(f"{path}: malformed snapshot")
    cluster = fields.get("cluster")
    if not isinstance(cluster, list) or not all(isinstance(a, str) for a in cluster):
        raise CorruptData(f"{path}: malformed snapshot cluster")
    return Snapshot(
        machine=fields["machine"],
        last=_entry_from_wire(fields.get("last"), path),
        prev=_entry_from_wire(fields.get("prev"), path),
        cluster=tuple(cluster),
    )


# --- the SyncObj subclass ---------------------------------------------------------------------


# --- the public node ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Pending:
    on_done: OnDone
    deadline: float


class RaftNode:
    """One replica of the replicated log, driving ``machine``.

    Effective pysyncobj configuration (from :class:`RaftSettings` defaults): autoTick=True
    (False when driven by an asyncio ``loop``: :class:`LoopPoller`), a tick at least every
    tick_period_s=0.05 s (a one-member group commits in the tick that appends, reads at once),
    appendEntriesUseBatch=False (an entry is sent when proposed),
    appendEntriesPeriod=heartbeat_interval_s=0.1 s, raftMinTimeout/raftMaxTimeout=0.4/1.4 s,
    leaderFallbackTimeout=2.0 s, connectionTimeout=3.5 s, connectionRetryTime=0.5 s,
    commandsQueueSize=proposals_in_flight_max=2000, commandsWaitLeader=True,
    appendEntriesBatchSizeBytes=command_bytes_max+2 (so pysyncobj's pickled large-entry
    "transmission" path is never taken), logCompactionMinEntries=20000 (and a
    compaction forced each 64 MiB of journal growth: ``compaction_journal_bytes``),
    logCompactionMinTime=600 s, logCompactionBatchSize=256 KiB, useFork=False,
    dynamicMembershipChange=False, password=None (our transport authenticates),
    journalFile/fullDumpFile in data_dir with our journal and serializer hooks.
    """

    journal_class: type[Journal] = Journal
    """The journal this node opens. An extension point for the test harness only: its
    power-cut disk and its planted durability bug are journal subclasses
    (consensus/testing/powercut.py)."""

    def __init__(
        self,
        settings: RaftSettings,
        machine: StateMachine,
        *,
        on_role_change: Callable[[str], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Start the node. With ``loop``, the node runs on that event loop (which must not be
        running yet: the caller runs it afterwards, on the thread that becomes the tick thread);
        otherwise on a thread of its own."""
        _pysyncobj.install()
        self.settings = settings
        self._machine = machine
        self._on_role_change = on_role_change
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_pending_id = 0
        self._tick_calls: deque[Callable[[], None]] = deque()
        self._closed = False
        self._loop = loop
        self._tick_scheduled = False
        self._tick_timer_pending = False  # loop mode: a _tick_in timer is set
        self._journal_low_bytes = 0  # the journal's smallest size since compaction by bytes
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._snapshot_path = data_dir / SNAPSHOT_FILE
        self._snapshot_bytes_max = settings.frame_bytes_max * 64
        # Verify the snapshot now so a corrupt one stops the replica here, not inside pysyncobj's
        # tick (which would only log it).
        self._startup_snapshot: Snapshot | None = None
        if self._snapshot_path.exists():
            self._startup_snapshot = read_snapshot(self._snapshot_path, self._snapshot_bytes_max)
        journal_path = data_dir / JOURNAL_FILE
        # A lone replica has no follower to flush in parallel with, so it syncs on every
        # append. Keep this even though _qb_commit_alone syncs too: pysyncobj commits a new
        # lone leader's no-op in the tick that appends it, without calling sync().
        self._journal = self.journal_class(
            journal_path,
            fsync=settings.fsync,
            record_bytes_max=settings.frame_bytes_max,
            sync_on_add=settings.fsync and not settings.peers,
        )
        wire = WireConfig(
            identity=settings.self_address,
            secret=settings.secret,
            hello_bytes_max=settings.hello_bytes_max,
            frame_bytes_max=settings.frame_bytes_max,
            command_bytes_max=settings.command_bytes_max,
            idle_timeout_s=settings.connection_idle_timeout_s,
            handshake_timeout_s=settings.handshake_timeout_s,
            send_buffer_bytes_max=settings.send_buffer_bytes_max,
            recv_chunk_bytes=256 * 1024,
            socket_buffer_bytes=2**20,
            pending_connections_max=settings.pending_connections_max,
            dial=dict(settings.dial),
        )
        conf = SyncObjConf(
            autoTick=loop is None,
            autoTickPeriod=settings.tick_period_s,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=settings.heartbeat_interval_s,
            raftMinTimeout=settings.election_timeout_min_s,
            raftMaxTimeout=settings.election_timeout_max_s,
            leaderFallbackTimeout=settings.leader_fallback_timeout_s,
            connectionTimeout=settings.connection_idle_timeout_s,
            connectionRetryTime=settings.reconnect_interval_s,
            commandsQueueSize=settings.proposals_in_flight_max,
            commandsWaitLeader=settings.wait_for_leader,
            appendEntriesBatchSizeBytes=settings.command_bytes_max + 2,
            logCompactionMinEntries=settings.compaction_min_entries,
            logCompactionMinTime=settings.compaction_min_time_s,
            logCompactionBatchSize=settings.snapshot_chunk_bytes,
            journalFile=str(journal_path),
            fullDumpFile=str(self._snapshot_path),
            serializer=self._serialize,
            deserializer=self._deserialize,
            useFork=False,
            dynamicMembershipChange=False,
            onStateChanged=self._state_changed,
            bindAddress=settings.self_address,
            # Without a tick thread pysyncobj retries a failed bind in a busy loop: we wait for
            # the port ourselves (_wait_bindable) and let pysyncobj try once.
            maxBindRetries=settings.bind_attempts_max if loop is None else 1,
            bindRetryTime=BIND_RETRY_S,
        )
        poller = None if loop is None else LoopPoller(
            loop, self._tick_soon, self._arm_event, self._event_needs_tick)
        if poller is not None and not self._wait_bindable():
            self._journal.close()
            raise Unavailable(f"cannot bind raft address {settings.self_address}")
        try:
            with _pysyncobj.handing_over(self._journal, poller):
                self._sync = SyncObjReplica(self, conf, wire,
                                            read_timeout_s=settings.propose_timeout_s)
        except SyncObjException as exc:  # without a tick thread: bind failed
            if poller is not None:
                poller.close()
            self._journal.close()
            raise Unavailable(f"cannot bind raft address {settings.self_address}") from exc
        # pysyncobj stops ticking when the constructing thread exits; tie it to the process.
        self._sync._SyncObj__mainThread = threading.main_thread()
        self._sync.addOnTickCallback(self._on_tick)
        try:
            self._sync.waitBinded()
        except Exception as exc:
            self._sync.destroy()
            self._join_tick_thread()
            raise Unavailable(f"cannot bind raft address {settings.self_address}") from exc
        if loop is not None:
            loop.call_soon_threadsafe(self._tick_periodically)
        log.info(
            "raft_started",
            address=settings.self_address,
            peers=list(settings.peers),
            fsync=settings.fsync,
            authenticated=settings.secret is not None,
        )

    # --- public API ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.settings.self_address

    def propose(self, payload: bytes, on_done: OnDone) -> None:
        """Submit a regular entry; ``on_done(result, None)`` once committed and applied here.

        Thread-safe. ``on_done`` runs on the tick thread, except QUEUE_FULL and CLOSED, which are
        reported immediately on the calling thread (backpressure must not wait for a tick).
        Raises :class:`InvalidCommand` if ``payload`` exceeds ``command_bytes_max``.
        """
        if len(payload) > self.settings.command_bytes_max:
            raise InvalidCommand(
                f"payload of {len(payload)} bytes exceeds {self.settings.command_bytes_max}"
            )
        self._submit(bytes(payload), _REGULAR, on_done)

    def barrier(self, on_done: OnDone) -> None:
        """Linearizable-read barrier: ``on_done(None, None)`` once every entry committed before
        the call is applied here, and this node is confirmed as leader.

        In general it commits a no-op entry (which never reaches ``machine.apply``: state and
        digest are unchanged). A one-member group's leader is confirmed by itself, so on the
        tick thread, with nothing committed still unapplied, it answers at once: no entry, no
        journal write, no fsync. Otherwise (another thread, or called from inside an apply,
        where the entry being applied is committed but not applied yet) it takes the entry path.
        """
        if (not self.settings.peers and not self._closed and self._on_tick_thread()
                and self._sync._qb_alone_caught_up()):
            self._call_on_done(on_done, None, None)
            return
        self._submit(b"", _NO_OP, on_done)

    def read_index(self, on_done: OnDone, prepare: Callable[[], None] | None = None) -> None:
        """Linearizable read without a log write (ReadIndex, Raft thesis §6.4): ``on_done(None,
        None)`` once this replica has applied every entry committed before the call, as vouched
        for by a leader whose leadership a majority confirmed in a heartbeat round started after
        the call; then the caller's read sees every write acknowledged before it.

        Fails with ``UNAVAILABLE`` (``on_done(None, Failure.UNAVAILABLE)``) when no confirmed
        index arrives within ``propose_timeout_s`` (a leader cut off from its majority never
        gets one), when leadership is lost meanwhile, with no leader to ask, or with a read
        queue full. Nothing is appended to the log, so nothing is fsynced. A new leader
        answers once its first entry (the election no-op) has committed. Thread-safe;
        ``on_done`` runs on the tick thread."""
        if self._closed:
            self._call_on_done(on_done, None, ProposeFailure.CLOSED)
            return
        if self._on_tick_thread():
            self._start_read(on_done, prepare)
            return
        try:
            self.call_in_tick(functools.partial(self._start_read, on_done, prepare))
        except Unavailable:
            self._call_on_done(on_done, None, ProposeFailure.QUEUE_FULL)

    def _start_read(self, on_done: OnDone, prepare: Callable[[], None] | None) -> None:
        def applied(caught_up: bool) -> None:
            if caught_up:
                self._call_on_done(on_done, None, None)
            else:
                _read_failed(on_done, "state did not reach the read index in time")

        def confirmed(index: int | None) -> None:
            if index is None:
                _read_failed(on_done, "no read index confirmed")
            else:
                self._sync.qb_when_applied(index, applied)

        self._confirmed_read_index(
            confirmed, None if prepare is None else lambda _index: prepare())

    def _confirmed_read_index(self, on_index: Callable[[int | None], None],
                              prepare: Callable[[int | None], None] | None = None) -> None:
        """Ask for a read index confirmed by a heartbeat round (tick thread). The one step of
        the read path the test harness may override: its ``unconfirmed-reads`` bug skips the
        round here (consensus/testing/replica.py)."""
        self._sync.qb_read_index(on_index, prepare)

    def call_in_tick(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the tick thread soon. Raises :class:`Unavailable` if the queue is full."""
        with self._lock:
            if self._closed:
                raise Unavailable("raft node is closed")
            if len(self._tick_calls) >= self.settings.tick_calls_max:
                raise Unavailable("tick call queue is full")
            self._tick_calls.append(fn)
        self._wake()

    def compact_now(self) -> None:
        """Ask for a snapshot + journal compaction at the next tick (tests, operators)."""
        self._sync.forceLogCompaction()
        self._wake()

    def status(self) -> RaftStatus:
        """Current state, read without locking (may be a few ticks stale)."""
        sync = self._sync
        last_error: Exception | None = None
        for _ in range(_STATUS_READ_ATTEMPTS):
            try:
                leader = sync._getLeader()
                journal = self._journal
                return RaftStatus(
                    address=self.settings.self_address,
                    role=_ROLES.get(sync._SyncObj__raftState, "follower"),
                    leader=leader.address if leader is not None else None,
                    term=sync.raftCurrentTerm,
                    commit_index=sync.raftCommitIndex,
                    last_applied=sync.raftLastApplied,
                    log_len=len(journal),
                    last_log_index=journal[-1][1] if len(journal) else 0,
                    has_quorum=bool(sync.hasQuorum),
                    ready=bool(sync.isReady()),
                )
            except (RuntimeError, IndexError) as exc:  # mutated by the tick thread mid-read
                last_error = exc
        raise Unavailable(f"could not read raft status: {last_error}")

    def is_leader(self) -> bool:
        """Hint only: another leader may exist in a newer term. False once closed."""
        return not self._closed and bool(self._sync._isLeader())

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the tick thread, close sockets and files; idempotent.

        Proposals still pending get UNKNOWN_OUTCOME (they may commit on the other replicas).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._loop is None:
            self._sync.destroy()
            self._wake()
            self._join_tick_thread()
        else:
            self._on_loop_thread(self._sync.destroy)  # without a tick thread it destroys now
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._tick_calls.clear()
        for item in pending:
            self._call_on_done(item.on_done, None, ProposeFailure.UNKNOWN_OUTCOME)
        log.info("raft_closed", address=self.settings.self_address)

    def __enter__(self) -> RaftNode:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- proposals ----------------------------------------------------------------------------

    def _submit(self, payload: bytes, command_type: int, on_done: OnDone) -> None:
        with self._lock:
            if self._closed:
                failure: ProposeFailure | None = ProposeFailure.CLOSED
            elif len(self._pending) >= self.settings.proposals_in_flight_max:
                failure = ProposeFailure.QUEUE_FULL
            else:
                failure = None
                pending_id = self._next_pending_id
                self._next_pending_id += 1
                self._pending[pending_id] = _Pending(
                    on_done, time.monotonic() + self.settings.propose_timeout_s
                )
        if failure is not None:
            self._call_on_done(on_done, None, failure)
            return
        callback = functools.partial(self._on_result, pending_id)
        # BlockingIOError: the wake-up pipe is full, so the tick thread is awake anyway.
        with contextlib.suppress(BlockingIOError):
            self._sync._applyCommand(payload, callback, command_type)

    def _on_result(self, pending_id: int, result: object, error: int) -> None:
        with self._lock:
            item = self._pending.pop(pending_id, None)
        if item is None:  # timed out already, or closed
            return
        if error == FAIL_REASON.SUCCESS:
            self._call_on_done(item.on_done, result, None)
        else:
            self._call_on_done(
                item.on_done, None, _FAIL_MAP.get(error, ProposeFailure.UNKNOWN_OUTCOME)
            )

    @staticmethod
    def _call_on_done(on_done: OnDone, result: object, failure: ProposeFailure | None) -> None:
        if failure is not None:
            log.debug("proposal_failed", reason=failure.value)
        # A raising callback inside pysyncobj's apply loop would re-apply the entry every tick.
        try:
            on_done(result, None if failure is None else failure.outcome)
        except Exception:
            log.exception("raft_on_done_raised")

    def _expire_pending(self, now: float) -> None:
        expired: list[_Pending] = []
        with self._lock:
            # Deadlines grow with insertion order, so stop at the first live one.
            for pending_id in list(self._pending)[: self.settings.proposals_in_flight_max]:
                item = self._pending[pending_id]
                if item.deadline > now:
                    break
                expired.append(self._pending.pop(pending_id))
        for item in expired:
            self._call_on_done(item.on_done, None, ProposeFailure.TIMEOUT)

    # --- tick-thread hooks --------------------------------------------------------------------

    def _on_tick(self) -> None:
        with self._lock:
            calls = [self._tick_calls.popleft() for _ in range(len(self._tick_calls))]
        for fn in calls:
            try:
                fn()
            except Exception:
                log.exception("raft_tick_call_raised")
        if self._pending:
            self._expire_pending(time.monotonic())
        self._compact_by_bytes()

    def _compact_by_bytes(self) -> None:
        """Force a snapshot once the journal grew ``compaction_journal_bytes`` past its low
        point (pysyncobj triggers only by entries and time). Measured from the low point, not
        from zero: entries a snapshot cannot cover yet (not applied) stay in the journal, and
        must not make every tick take another snapshot."""
        size = self._journal.size_bytes
        self._journal_low_bytes = min(self._journal_low_bytes, size)
        if size - self._journal_low_bytes > self.settings.compaction_journal_bytes:
            log.info("raft_compaction_by_bytes", journal_bytes=size,
                     threshold_bytes=self.settings.compaction_journal_bytes)
            self._journal_low_bytes = size
            self._sync.forceLogCompaction()

    def _apply_entry(self, command: bytes) -> object:
        kind = command[0] if command else -1
        if kind == _REGULAR:
            try:
                return self._machine.apply(command[1:])
            except Exception as exc:
                log.critical(
                    "state_machine_apply_raised",
                    error=str(exc),
                    kind=type(exc).__name__,
                    exc_info=True,
                )
                return ApplyError(type(exc).__name__, str(exc))
        if kind == _NO_OP:
            return None
        log.warning("raft_entry_type_ignored", entry_type=kind)
        return None

    def _state_changed(self, old: int, new: int) -> None:
        role = _ROLES.get(new, "follower")
        log.info("raft_role_changed", address=self.settings.self_address, role=role)
        if _ROLES.get(old) == "leader" and role != "leader":
            # Deposed (or fell back after losing its majority): what it was waiting to commit
            # may still commit under the next leader, or never. Say so now, so clients retry
            # there (same session and seq: exactly-once) instead of waiting out the timeout.
            with self._lock:
                pending = list(self._pending.values())
                self._pending.clear()
            for item in pending:
                self._call_on_done(item.on_done, None, ProposeFailure.UNKNOWN_OUTCOME)
        callback = self._on_role_change
        if callback is not None:
            try:
                callback(role)
            except Exception:
                log.exception("raft_on_role_change_raised")

    def _serialize(self, file_name: str, data: tuple[Any, Any, Any]) -> None:
        """pysyncobj serializer hook: ``data`` is (last applied entry, the one before, cluster)."""
        last, prev, cluster = data
        try:
            snapshot = Snapshot(
                machine=bytes(self._machine.snapshot()),
                last=_entry_tuple(last),
                prev=_entry_tuple(prev),
                cluster=tuple(sorted(str(getattr(n, "address", n)) for n in cluster)),
            )
            write_snapshot(pathlib.Path(file_name), snapshot)
        except Exception:
            log.exception("raft_snapshot_write_failed", file=file_name)
            raise
        log.info("raft_snapshot_written", last_index=snapshot.last[1], bytes=len(snapshot.machine))

    def _deserialize(self, file_name: str) -> tuple[Entry, Entry, list[str]]:
        """pysyncobj deserializer hook: restore the machine, return (last, prev, cluster).

        At startup, also fixes pysyncobj's crash-window bug: if the journal still holds the
        snapshot's ``prev`` entry, drop the prefix before it so pysyncobj's "journal[0] == prev
        and journal[1] == last" check passes and no entry after the snapshot is cleared.
        """
        path = pathlib.Path(file_name)
        startup = self._startup_snapshot
        self._startup_snapshot = None
        try:
            snapshot = (
                startup if startup is not None else read_snapshot(path, self._snapshot_bytes_max)
            )
        except CorruptData:
            log.critical("raft_snapshot_corrupt", file=file_name, exc_info=True)
            raise
        if startup is None:
            # Installed from the leader: make it durable before pysyncobj clears the journal.
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            fsync_dir(path.parent)
        else:
            self._drop_prefix_before(snapshot.prev)
        self._machine.restore(snapshot.machine)
        log.info("raft_snapshot_loaded", last_index=snapshot.last[1], startup=startup is not None)
        return snapshot.last, snapshot.prev, list(snapshot.cluster)

    def _drop_prefix_before(self, prev: Entry) -> None:
        journal = self._journal
        if len(journal) < 2:
            return
        first_idx = journal[0][1]
        position = prev[1] - first_idx
        if 0 < position < len(journal) and journal[position][2] == prev[2]:
            log.warning(
                "raft_journal_prefix_dropped_after_crash",
                dropped_entries=position,
                snapshot_prev_index=prev[1],
            )
            journal.deleteEntriesTo(position)

    def _compaction_truncates(self) -> bool:
        """Called when pysyncobj is about to drop the journal prefix a new snapshot covers:
        whether to drop it now. Always, here; the one extension point of the node, which the
        test harness overrides to leave the journal as a crash between the two steps would
        (consensus/testing/replica.py)."""
        return True

    # --- helpers ------------------------------------------------------------------------------

    def _wake(self) -> None:
        notifier = getattr(self._sync, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            with contextlib.suppress(OSError):
                notifier.notify()

    def _on_tick_thread(self) -> bool:
        if self._loop is not None:
            return _running_loop() is self._loop
        return threading.current_thread() is getattr(self._sync, "_SyncObj__thread", None)

    def _wait_bindable(self) -> bool:
        """Loop mode: wait until the raft address can be bound (bounded attempts, a pause
        between them), so pysyncobj's own single attempt finds it free."""
        host, _, port = self.settings.self_address.rpartition(":")
        for attempt in range(max(1, self.settings.bind_attempts_max)):
            if attempt:
                time.sleep(BIND_RETRY_S)
            try:
                listen_socket(host, int(port)).close()
                return True
            except OSError as exc:
                log.warning("raft_bind_retry", address=self.settings.self_address,
                            attempt=attempt + 1, error=str(exc))
        return False

    def leader_in_touch(self) -> bool:
        """Whether this node leads, or has heard from its leader within the longest election
        timeout (a follower that has not would start an election, were it connected to any
        member). Read without locking, like :meth:`status`."""
        sync = getattr(self, "_sync", None)
        return bool(sync is not None and not self._closed and sync.qb_leader_in_touch(
            time.monotonic(), self.settings.election_timeout_max_s))

    def _tick_in(self, delay_s: float) -> None:
        """Loop mode: make sure a tick runs ``delay_s`` from now if it still has something to
        do then (one timer at a time; a later request while one is pending is served by the
        tick it brings, which asks again if it is still early). The tick thread of the other
        mode ticks on its own.

        The one timed tick asked for is a ReadIndex round's widening, which has nothing to do
        once the round confirmed (the usual case, well within the delay): that tick is skipped
        (:meth:`~quorumboard.consensus.raft._pysyncobj.SyncObjReplica.qb_timed_tick_wanted`).
        Every round asks for one, so while reads flow a leader otherwise ran a whole Raft tick
        every ``ROUND_WIDEN_S`` (about 200 a second against the periodic 20, measured)."""
        loop = self._loop
        if loop is None or self._tick_timer_pending:
            return
        self._tick_timer_pending = True

        def fire() -> None:
            self._tick_timer_pending = False
            sync = getattr(self, "_sync", None)
            if sync is None or sync.qb_timed_tick_wanted(time.monotonic()):
                self._tick_soon()

        loop.call_later(delay_s, fire)

    def _arm_event(self) -> None:
        sync = getattr(self, "_sync", None)
        if sync is not None:
            sync.qb_arm_event()

    def _event_needs_tick(self) -> bool:
        sync = getattr(self, "_sync", None)
        return sync is None or sync.qb_event_needs_tick()

    def _later_on_loop(self, delay_s: float,
                       fn: Callable[[], None]) -> asyncio.TimerHandle | None:
        """Loop mode, on the loop: run ``fn`` ``delay_s`` from now unless the node has closed
        by then, and return its timer (to cancel); None in thread mode, where the caller acts
        at once instead."""
        if self._loop is None or not self._on_tick_thread():
            return None
        return self._loop.call_later(delay_s, self._unless_closed, fn)

    def _unless_closed(self, fn: Callable[[], None]) -> None:
        if not self._closed:
            fn()

    def _tick_soon_on_loop(self) -> bool:
        """Loop mode, on the loop: schedule a tick (:meth:`_tick_soon`) and return True; False
        elsewhere, where the caller wakes the tick through pysyncobj's pipe."""
        if self._loop is None or not self._on_tick_thread():
            return False
        self._tick_soon()
        return True

    def _tick_soon(self) -> None:
        """Loop mode, on the loop: tick once the current events are handled (one per burst)."""
        if not self._tick_scheduled and self._loop is not None:
            self._tick_scheduled = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._tick_scheduled = False
        if self._closed:
            return
        try:
            self._sync._onTick(0.0)
        except Exception:  # as pysyncobj's tick thread does: log and tick again later
            log.exception("raft_tick_raised")

    def _tick_periodically(self) -> None:
        """Loop mode: timers (elections, heartbeats, timeouts) need a tick even when idle."""
        if self._closed or self._loop is None:
            return
        self._tick()
        self._loop.call_later(self.settings.tick_period_s, self._tick_periodically)

    def _on_loop_thread(self, fn: Callable[[], None]) -> None:
        """Loop mode: run ``fn`` on the loop's thread and wait (directly if the loop is not
        running or this is its thread)."""
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            fn()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                fn()
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
            done.result(self.settings.close_timeout_s)
        except RuntimeError:  # the loop closed meanwhile: nothing is running it any more
            fn()
        except concurrent.futures.TimeoutError:
            log.warning("raft_loop_call_timed_out", address=self.settings.self_address)

    def _join_tick_thread(self) -> None:
        thread = getattr(self._sync, "_SyncObj__thread", None)
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout=self.settings.close_timeout_s)
        if thread.is_alive():
            log.warning("raft_tick_thread_still_running", address=self.settings.self_address)
