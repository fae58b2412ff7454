"""One replica process: hardened Raft + the board state machine + the client endpoint.

Run as ``python -m quorumboard.consensus.replica CONFIG.json`` (``LocalCluster`` does this; the
entry point is :mod:`quorumboard.consensus.replica.__main__`) or through ``quorumboard serve``.
The process owns:

* :class:`ReplicaMachine` — the adapter Raft calls on the tick thread: decode the committed
  payload, :func:`~consensus.state.apply` it under the state lock, log it, wake watchers;
* the leader's lease clock — when this replica leads, it proposes ``ExpireLease`` for leases
  whose TTL ran out on *its* monotonic clock (time enters the log, never the state machine);
* the policy announcement — this replica's custom policies, proposed once at start.

Nothing here reads the environment or holds a test switch: the secret is passed in by the entry
point, and the test harness swaps in parts through the extension points of :class:`Replica` and
:class:`ReplicaMachine` (consensus/testing/replica.py).

Exit codes: 0 after SIGTERM/SIGINT; 2 bad configuration; 3 corrupt data dir; 78 the log needs a
custom policy this process does not have (it stops instead of diverging).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import structlog
from pydantic import BaseModel, ConfigDict, Field

from quorumboard.consensus.core.leases import LeaseTimers
from quorumboard.consensus.core.model import (
    AnnouncePolicies,
    ErrorInfo,
    ExpireLease,
    Proposal,
    Result,
)
from quorumboard.consensus.core.policies import PolicyRegistry, registry
from quorumboard.consensus.core.state import Applied, BoardState, Limits, apply, decode_proposal
from quorumboard.consensus.errors import CorruptData, ProtocolError
from quorumboard.consensus.raft.node import (
    COMPACTION_JOURNAL_BYTES_DEFAULT,
    COMPACTION_JOURNAL_BYTES_MIN,
    RaftNode,
    RaftSettings,
    forbid_pickle,
)
from quorumboard.consensus.replica.batching import GroupCommit
from quorumboard.consensus.replica.lifeline import watch_parent
from quorumboard.consensus.replica.polling import (
    POLL_SPIN_US,
    POLL_SPIN_US_RANGE,
    PollingSelector,
)
from quorumboard.consensus.replica.server import (
    CONNECTIONS_MAX,
    CONNECTIONS_MAX_RANGE,
    WATCH_BUFFER_BYTES,
    WATCH_BUFFER_BYTES_RANGE,
    ClientServer,
    Done,
)
from quorumboard.consensus.wire.protocol import CLIENT_FRAME_BYTES_MAX, ReplicaStatus, encode

__all__ = [
    "EXIT_CORRUPT",
    "EXIT_POLICY_MISSING",
    "Replica",
    "ReplicaConfig",
    "ReplicaMachine",
    "run",
]

log = structlog.get_logger("quorumboard.consensus.replica.machine")

EXIT_CONFIG = 2
EXIT_CORRUPT = 3
EXIT_POLICY_MISSING = 78
LEASE_TICK_S = 0.05
EXPIRIES_INFLIGHT_MAX = 64
ANNOUNCE_ATTEMPTS_MAX = 600
BATCH_ITEMS_MAX = 256
GC_THRESHOLDS = (50_000, 20, 100)
"""Young-generation allocations, then collections of the younger generation, before each
older one is collected (CPython's default: 700, 10, 10). See :func:`tune_gc`."""


class ReplicaConfig(BaseModel):
    """Everything one replica needs; every member of a cluster must agree on ``limits``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    raft_address: str
    client_address: str
    peers: dict[str, str] = Field(
        default_factory=dict, description="raft address -> client address of every other member"
    )
    data_dir: Path
    fsync: bool = False
    limits: Limits = Field(default_factory=Limits)
    policy_modules: list[str] = Field(default_factory=list)
    secret_env: str = "QUORUMBOARD_SECRET"
    log_level: str = "info"
    election_timeout_min_s: float = 0.4
    election_timeout_max_s: float = 1.4
    raft_dial: dict[str, str] = Field(default_factory=dict)
    """Peer raft address -> address to dial instead (LocalCluster's network fault proxies)."""
    compaction_min_entries: int = Field(default=20_000, ge=2)
    """Snapshot and compact the log past this many entries (small values stress snapshots)."""
    compaction_journal_bytes: int = Field(default=COMPACTION_JOURNAL_BYTES_DEFAULT,
                                          ge=COMPACTION_JOURNAL_BYTES_MIN)
    """... and each time the journal grew this many bytes (large values: bounds the journal
    on disk and in memory by bytes, not only by entries)."""
    connections_max: int = Field(default=CONNECTIONS_MAX, ge=CONNECTIONS_MAX_RANGE[0],
                                 le=CONNECTIONS_MAX_RANGE[1])
    """Client connections this replica serves at once; past it a new connection is refused
    with a refusal frame the client raises as ``TooManyConnections``. Per replica (not in
    ``limits``): replicas may differ, e.g. by the open-file limit of their machine."""
    watch_buffer_bytes: int = Field(default=WATCH_BUFFER_BYTES,
                                    ge=WATCH_BUFFER_BYTES_RANGE[0],
                                    le=WATCH_BUFFER_BYTES_RANGE[1])
    """Per watch: the most of its events sent and not yet consumed by its client; a watcher
    that stays this far behind is cancelled (``WatchCancelled``, with the revision to resume
    from)."""
    poll_spin_us: int = Field(default=POLL_SPIN_US, ge=POLL_SPIN_US_RANGE[0],
                              le=POLL_SPIN_US_RANGE[1])
    """While a lone client is served, the replica's loop polls its sockets for up to this
    long before it sleeps (consensus/replica/polling.py): a lone client's linearizable read
    about 30 % faster on a 2-vCPU VM, for CPU time the loop would have slept. 0: never poll.
    Per replica (a machine's cores are its own to spend)."""
    clock_fault_file: Path | None = None
    """Fault injection only: read the lease clock through :class:`~quorumboard.consensus.testing.clocks.FaultClock`
    controlled by this file (LocalCluster(clock_faults=True) sets it)."""


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class ReplicaMachine:
    """The state machine Raft drives, plus the hooks the client endpoint reads through.

    ``policies`` is the registry every entry is applied with, built once at start (see
    :meth:`~quorumboard.consensus.core.policies.PolicyRegistry.snapshot`)."""

    def __init__(self, config: ReplicaConfig, policies: PolicyRegistry,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.policies = policies
        self.client_address = config.client_address
        self.state = BoardState(config.limits)
        self.lock = threading.Lock()
        self.clock = clock
        self.raft: RaftNode | None = None
        self._wakers: list[Callable[[], None]] = []
        self._timers = LeaseTimers()
        self._timers_lock = threading.Lock()  # ticked on the lease thread, read by lease reads
        self._expiring: set[int] = set()  # leases whose expiry is proposed, not yet applied
        self._expiring_lock = threading.Lock()  # added on the lease thread, removed on Raft's
        self._leader = False
        self._group: GroupCommit | None = None

    # ----------------------------------------------------------- StateMachine (tick thread)

    def apply(self, payload: bytes) -> object:
        """Apply one committed entry: a proposal, or a group-commit batch of them (a list).

        Returns the :class:`Result` (a list of them for a batch). Never raises."""
        try:
            data = msgpack.unpackb(payload, raw=False)
        except Exception as exc:
            log.error("undecodable log entry", error=type(exc).__name__)
            return Result(revision=self.state.revision,
                          error=ErrorInfo(code="invalid", message="log entry is not msgpack"))
        events = False
        with self.lock:
            if isinstance(data, list):
                results: list[Result] = []
                for item in data[:BATCH_ITEMS_MAX]:
                    result, changed = self._apply_one(item)
                    results.append(result)
                    events = events or changed
                outcome: object = results
            else:
                outcome, events = self._apply_one(data)
        if events:
            for wake in self._wakers:
                wake()
        return outcome

    def _apply_one(self, data: object) -> tuple[Result, bool]:
        """Validate and apply one proposal (caller holds the state lock)."""
        proposal = decode_proposal(data)
        if not isinstance(proposal, Proposal):
            log.error("invalid log entry", error=proposal.message)
            return Result(revision=self.state.revision, error=proposal), False
        applied = self._apply_proposal(proposal)
        if applied.halt is not None:
            log.critical("halting: cannot apply entry identically to peers", reason=applied.halt)
            sys.stderr.flush()
            os._exit(EXIT_POLICY_MISSING)
        result = applied.result
        op = proposal.command.op
        if result.error is not None:
            # A refusal is a normal outcome, kept in the replicated audit trail (``quorumboard
            # history``); at info, each replica logged every one of them, which under a
            # contended workload was most of its log (370,000 lines in 27 minutes of a chaos
            # campaign) and slowed replaying the log after a restart.
            log.debug("rejected", op=op, agent=proposal.agent, code=result.error.code,
                     policy=result.error.policy, reason=result.error.reason,
                     key=getattr(proposal.command, "key", None), revision=result.revision)
        elif op == "expire_lease" and applied.events:
            log.info("lease expired", lease=getattr(proposal.command, "lease", None),
                     keys=[e.key for e in applied.events], revision=result.revision)
        else:
            log.debug("commit", op=op, agent=proposal.agent, revision=result.revision,
                      key=getattr(proposal.command, "key", None))
        return result, bool(applied.events)

    def _apply_proposal(self, proposal: Proposal) -> Applied:
        """Apply one decoded proposal to the state (caller holds the state lock).

        The one step of the apply path a subclass may override: the test harness plants its
        apply bugs here (consensus/testing/replica.py)."""
        return apply(self.state, proposal, self.policies)

    def snapshot(self) -> bytes:
        with self.lock:
            data: bytes = msgpack.packb(self.state.snapshot(), use_bin_type=True)
        return data

    def restore(self, data: bytes) -> None:
        try:
            snap = msgpack.unpackb(data, raw=False, strict_map_key=False)
            state = BoardState.from_snapshot(snap)
        except Exception as exc:
            raise CorruptData(f"snapshot does not decode into a board state: {exc}") from exc
        with self.lock:
            self.state = state
        log.info("restored snapshot", revision=state.revision, keys=len(state.kv))
        for wake in self._wakers:  # watchers re-read from the installed state
            wake()

    # -------------------------------------------------------------------- Core for the server

    def attach(self, raft: RaftNode) -> None:
        """Connect the started Raft node; proposals go through group commit from now on."""
        self.raft = raft
        self._group = GroupCommit(raft.propose, batch_items_max=BATCH_ITEMS_MAX,
                                  batch_bytes_max=CLIENT_FRAME_BYTES_MAX - 64)

    def propose(self, payload: bytes, done: Done) -> None:
        if self._group is None:
            raise ProtocolError("replica not started")
        self._group.propose(payload, done)

    def barrier(self, done: Done) -> None:
        self._raft().barrier(done)

    def read_index(self, done: Done, prepare: Callable[[], None] | None = None) -> None:
        self._raft().read_index(done, prepare)

    def is_leader(self) -> bool:
        return self._raft().is_leader()

    def leader_in_touch(self) -> bool:
        return self._raft().leader_in_touch()

    def leader_client_address(self) -> str | None:
        raft = self._raft()
        leader = None if raft.closed else raft.status().leader
        if leader is None:
            return None
        if leader == self.config.raft_address:
            return self.config.client_address
        return self.config.peers.get(leader)

    def status(self, digest: bool) -> ReplicaStatus:
        raft = self._raft().status()
        with self.lock:
            revision, keys = self.state.revision, len(self.state.kv)
            space, quota = self.state.space_bytes, self.state.limits.space_quota_bytes
            dig = self.state.digest() if digest else ""
        return ReplicaStatus(
            address=self.config.raft_address, client_address=self.config.client_address,
            role=raft.role, leader=raft.leader, leader_client=self.leader_client_address(),
            term=raft.term, commit_index=raft.commit_index, last_applied=raft.last_applied,
            revision=revision, keys=keys, digest=dig, has_quorum=raft.has_quorum,
            space_bytes=space, space_quota_bytes=quota,
            batches=self._group.batches if self._group else 0,
            batched_proposals=self._group.proposals if self._group else 0)

    def lease_time_left(self) -> dict[int, float] | None:
        """Seconds until this leader expires each lease (caller holds the state lock);
        ``None`` when this replica does not lead: only the leader's clock counts leases down."""
        if not self._raft().is_leader():
            return None
        leases = self.state.lease_refreshes()
        if not self._leader:  # leads, but the lease clock has not started its countdowns
            return {}
        with self._timers_lock:
            return self._timers.time_left(leases, self.clock())

    def subscribe(self, wake: Callable[[], None]) -> None:
        self._wakers.append(wake)

    def _raft(self) -> RaftNode:
        if self.raft is None:
            raise ProtocolError("replica not started")
        return self.raft

    # ------------------------------------------------------------------ leader's lease clock

    def on_role_change(self, role: str) -> None:
        """Raft role changed: a new leader restarts every lease countdown (TTL is a minimum)."""
        self._leader = role == "leader"
        with self._timers_lock:
            self._timers.reset()
        log.info("role changed", role=role, replica=self.config.name)

    def lease_tick(self) -> None:
        """Propose expiry for leases whose TTL ran out on this leader's clock."""
        raft = self._raft()
        if not raft.is_leader():
            if self._leader:
                self.on_role_change("follower")
            return
        if not self._leader:
            self.on_role_change("leader")
        with self.lock:
            leases = self.state.lease_refreshes()
        with self._timers_lock:
            due = self._timers.due(leases, self.clock())
        for lease_id, refreshes in due:
            with self._expiring_lock:
                if lease_id in self._expiring:
                    continue  # already proposed: do not propose it again every tick
                if len(self._expiring) >= EXPIRIES_INFLIGHT_MAX:
                    break
                self._expiring.add(lease_id)
            payload = encode(Proposal(agent=f"replica:{self.config.name}",
                                      command=ExpireLease(lease=lease_id, refreshes=refreshes)))

            def done(_res: object | None, _fail: object | None, lease_id: int = lease_id) -> None:
                with self._expiring_lock:
                    self._expiring.discard(lease_id)

            raft.propose(payload, done)


def _announce(machine: ReplicaMachine, stop: threading.Event) -> None:
    """Propose this replica's custom policies until the announcement commits."""
    proposal = Proposal(agent=f"replica:{machine.config.name}", command=AnnouncePolicies(
        replica=machine.config.raft_address, cluster_size=len(machine.config.peers) + 1,
        policies=machine.policies.custom_versions()))
    payload = encode(proposal)
    committed = threading.Event()
    for _ in range(ANNOUNCE_ATTEMPTS_MAX):
        if stop.is_set() or committed.is_set():
            return
        machine.propose(payload, lambda res, fail: committed.set() if fail is None else None)
        committed.wait(1.0)


def _lease_loop(machine: ReplicaMachine, stop: threading.Event) -> None:
    while not stop.wait(LEASE_TICK_S):
        try:
            machine.lease_tick()
        except Exception:
            log.exception("lease tick failed")


class Replica:
    """A running replica: Raft node, state machine, client endpoint and background loops.

    Used by the replica process (``python -m quorumboard.consensus.replica``), by
    ``quorumboard serve``, and in-process by ``LocalCluster(embedded=True)``. ``secret`` is the
    cluster secret (``None``: unauthenticated); the caller loads it. Raises
    :class:`CorruptData` from :meth:`start` if the data dir fails its checksums.

    The policy modules are imported here, and the registry is snapshotted right after: the
    replica applies with that snapshot and announces it.

    Extension points: a subclass may set :attr:`machine_class`, :attr:`server_class` and
    :attr:`raft_class` to subclasses of the parts (the test harness does, to plant bugs and
    faults: consensus/testing/replica.py).
    """

    machine_class: type[ReplicaMachine] = ReplicaMachine
    server_class: type[ClientServer] = ClientServer
    raft_class: type[RaftNode] = RaftNode

    def __init__(self, config: ReplicaConfig, *, secret: bytes | None = None) -> None:
        self.config = config
        self._secret = secret
        clock: Callable[[], float] = time.monotonic
        if config.clock_fault_file is not None:  # a fault-injection run asked for it
            from quorumboard.consensus.testing.clocks import FaultClock

            clock = FaultClock(config.clock_fault_file)
        for module in config.policy_modules:
            importlib.import_module(module)
        self.machine = self.machine_class(config, registry.snapshot(), clock)
        self._stop = threading.Event()
        self._raft: RaftNode | None = None
        self._server: ClientServer | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        config = self.config
        secret = self._secret
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # One event loop thread runs both the Raft node and the client endpoint: a commit is
        # applied and answered without waking another thread (see consensus/raft/node.py).
        poll = PollingSelector(config.poll_spin_us / 1e6) if config.poll_spin_us else None
        try:
            loop = asyncio.new_event_loop() if poll is None else asyncio.SelectorEventLoop(poll)
        except BaseException:
            if poll is not None:
                poll.close()
            raise
        try:
            self._raft = self._start_raft(secret, loop)
        except BaseException:
            loop.close()
            raise
        self.machine.attach(self._raft)
        host, port = _split(config.client_address)
        self._server = self.server_class(self.machine, host, port, secret, loop=loop,
                                         connections_max=config.connections_max,
                                         watch_buffer_bytes=config.watch_buffer_bytes,
                                         poll=poll)
        try:
            self._server.start()
        except BaseException:
            self._raft.close()
            if not loop.is_running():  # a loop still running belongs to a stuck thread
                loop.close()
            raise
        self._start_background(config)

    def _start_raft(self, secret: bytes | None, loop: asyncio.AbstractEventLoop) -> RaftNode:
        config = self.config
        return self.raft_class(RaftSettings(
            self_address=config.raft_address, peers=tuple(config.peers),
            dial=tuple(sorted(config.raft_dial.items())),
            data_dir=config.data_dir, secret=secret, fsync=config.fsync,
            election_timeout_min_s=config.election_timeout_min_s,
            election_timeout_max_s=config.election_timeout_max_s,
            compaction_min_entries=config.compaction_min_entries,
            compaction_journal_bytes=config.compaction_journal_bytes,
            command_bytes_max=CLIENT_FRAME_BYTES_MAX), self.machine, loop=loop)

    def _start_background(self, config: ReplicaConfig) -> None:
        log.info("replica started", replica=config.name, raft=config.raft_address,
                 client=config.client_address, peers=sorted(config.peers), fsync=config.fsync)
        self._threads = [
            threading.Thread(target=fn, args=(self.machine, self._stop), daemon=True,
                             name=f"{fn.__name__}-{config.name}")
            for fn in (_lease_loop, _announce)
        ]
        for t in self._threads:
            t.start()

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        """Ask :meth:`wait` to return (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> threading.Event:
        """Set once the replica was asked to stop."""
        return self._stop

    def close(self) -> None:
        self._stop.set()
        log.info("replica stopping", replica=self.config.name)
        if self._raft is not None:  # first: it runs on the server's loop
            self._raft.close()
        if self._server is not None:
            self._server.close()
        for t in self._threads:
            t.join(2.0)


def run(config: ReplicaConfig, parent: tuple[int, int | None, bool] | None = None, *,
        secret: bytes | None = None, replica_class: type[Replica] = Replica) -> int:
    """Run this process as one replica of ``config``: start it and block until SIGTERM/SIGINT,
    or until the process that started it is gone (``parent``: its pid, the lifeline's fd and
    whether to ask for the parent-death signal; see
    :mod:`quorumboard.consensus.replica.lifeline`). Returns the exit code.

    A replica process never unpickles: stdlib unpickling is made to raise here, always, so a
    path that tried would fail loudly instead of running attacker bytes (an embedded replica
    leaves its host's pickle alone). ``replica_class`` is the test harness's extension point."""
    forbid_pickle()
    tune_gc()
    replica = replica_class(config, secret=secret)
    signal.signal(signal.SIGTERM, lambda *_: replica.stop())
    signal.signal(signal.SIGINT, lambda *_: replica.stop())
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup's choice stands
        signal.signal(signal.SIGHUP, lambda *_: replica.stop())
    if parent is not None:
        watch_parent(*parent, on_death=replica.stop, stopped=replica.stopping)
    try:
        replica.start()
    except CorruptData as exc:
        log.critical("refusing to start: corrupt data", error=str(exc))
        return EXIT_CORRUPT
    replica.wait()
    replica.close()
    return 0


def tune_gc() -> None:
    """Make CPython's cycle collector rare in a replica process.

    A replica's heap grows with the board (every put keeps an entry, an event and an audit
    record), and the default thresholds run a full collection each time the heap grows by a
    quarter: a stop-the-world pass over the whole board that the GIL makes every thread
    wait for. That cost grows with the board: at 64 agents it put p99 commit latency at
    ~65-70 ms against ~35-40 ms with these thresholds (bench/README.md). The replicated state holds no reference cycles, so
    refcounting frees it; the collector only needs to find rare cyclic garbage (tracebacks,
    asyncio internals), which larger thresholds still do. Start-up objects (modules, pydantic
    schemas) are frozen out of every collection. Only the replica's own process is tuned:
    an embedded replica leaves its host's collector alone."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
