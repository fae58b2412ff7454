"""A replica's client endpoint: authenticated msgpack frames over TCP, served by asyncio.

The edit path: a validated :class:`~consensus.protocol.ProposeReq` becomes a log payload and is
handed to Raft; when the entry has committed and been applied on this replica, the tick thread
passes the :class:`~consensus.model.Result` back here and it goes out as a
:class:`~consensus.protocol.Reply`. Watches stream applied events from the replicated event
log, whole revisions at a time; each watch may have at most ``watch_buffer_bytes`` sent and not
yet consumed by its client, and a watcher that stays a whole buffer behind is cancelled with the
revision to resume from, so a slow watcher holds neither memory nor its connection. Every
replica serves watches, followers from their own applied state (the event log is the same on
each, revision by revision, so a watch resumes anywhere from its next revision); one that has
known no leader for :data:`WATCH_LEADERLESS_S` ends its watches, which resume on a replica that
is current. The watches of one connection (the Boards of a process may share it) that stand at
the same place on the same prefix get one frame per batch between them.

At its connection cap (``connections_max``, a per-replica setting) the endpoint answers a new
connection with the handshake's refusal frame, never a bare close.

Linearizable reads write nothing to the log (ReadIndex, Raft thesis §6.4; the Raft side is
:meth:`~quorumboard.consensus.raft.node.RaftNode.read_index`). Reads wait in one queue; while
fewer than :data:`CONFIRMS_INFLIGHT_MAX` confirmations are in flight, one starts for every read
waiting, so one confirmation serves a whole batch. On the leader a confirmation is one
heartbeat round a majority answers in the leader's term, then the state applied up to the
commit index noted when the round started; a leader that has applied that index when the
round's heartbeat leaves reads and encodes the batch's answers then (``prepare``), while the
heartbeat travels, and sends them only once the round confirms. On a follower it is the same
round, run by the leader for the follower's request over the raft connection (``qb_read_index``,
consensus/raft/transport.py; in a group of two or three the request itself completes the
majority, so no round), then the follower's state applied up to the index the leader
returns. Followers serve linearizable reads themselves rather than redirecting them (or, as
before, committing a barrier through the leader): the leader's cost is the same round it runs
for its own reads, no log entry and no fsync, and readers attached to a follower (any agent
that connected to it; the chaos workloads pin readers to every replica) keep their
connection. The committed no-op (a read barrier) is on no read path any more; the one place a
read still waits for a log entry is a new leader's first moments: ReadIndex cannot serve
before the leader's own election no-op commits (until then its commit index may lag entries
its predecessors committed), so reads wait for that entry, within their budget. A read that
gets no confirmation within its budget fails ``UNAVAILABLE``.

Bad bytes never take a replica down: an oversized prefix, a failed handshake or an undecodable
frame closes that one connection; a frame that decodes but does not validate gets an error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import resource
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import msgpack
import structlog

from quorumboard.consensus.core.model import CLIENT_OPS, Entry, ErrorInfo, Event, Proposal, Result
from quorumboard.consensus.core.state import BoardState
from quorumboard.consensus.errors import (
    AuthError,
    BoardError,
    ProtocolError,
    RevisionCompacted,
    TooManyConnections,
)
from quorumboard.consensus.replica.polling import PollingSelector
from quorumboard.consensus.wire.auth import (
    CLIENT_LABEL,
    SEAL_OVERHEAD_BYTES,
    Channel,
    new_nonce,
    refusal_frame,
)
from quorumboard.consensus.wire.frames import FrameDecoder, encode_frame
from quorumboard.consensus.wire.protocol import (
    CLIENT_FRAME_BYTES_MAX,
    REPLY_FRAME_BYTES_MAX,
    CancelReq,
    Failure,
    ProposeReq,
    ReadReq,
    ReplicaStatus,
    Reply,
    StatusReq,
    WatchAckReq,
    WatchBatch,
    WatchReq,
    decode_request,
    encode,
    request_id,
)

__all__ = ["ClientServer", "Core", "raise_open_files_limit"]

log = structlog.get_logger("quorumboard.consensus.replica.server")

T = TypeVar("T")

HELLO_BYTES_MAX = 4096
START_TIMEOUT_S = 120.0
STOP_JOIN_S = 5.0
"""How long a replica's start waits for its client endpoint to listen. The endpoint shares its
event loop with the Raft node, which may first be replaying a long log or installing a
snapshot: a loaded machine once took over 10 s there (an hour-long chaos campaign), and a
replica that gave up then exited for no fault of its own. The bound only catches a loop that
never gets to it."""
CONNECTIONS_MAX = 1024
"""The default cap on client connections (``ReplicaConfig.connections_max``)."""
CONNECTIONS_MAX_RANGE = (1, 1_000_000)
OPEN_FILES_WANTED = 2**20
"""The soft open-file limit a replica asks for at start (capped by the hard limit)."""
OPEN_FILES_RESERVED = 128
"""Descriptors a replica needs besides client connections (raft peers, journal, snapshot,
log, pipes, and the refused connections lingering at the cap, up to :data:`REFUSING_MAX`): a
soft limit below ``connections_max`` plus this is warned about at start."""
REFUSING_MAX = 64
"""Refusals at the cap that linger (read the client's hello before closing) at once; past
this, a refused socket is closed right after its refusal frame."""
LONE_CLIENT_WINDOW_S = 0.001
"""How recent a client request must be for the loop to poll (:meth:`ClientServer.lone_client`):
one client's next request follows its reply by 0.05-0.2 ms on loopback (measured); a client
slower than this gets no polling, and costs none."""
REFUSE_LINGER_S = 1.0
REFUSAL_LOG_EVERY_S = 10.0
WATCHES_PER_CONNECTION_MAX = 4096
"""Watches on one connection: the Boards of a whole process may share it (``connect_shared``),
each with its watches; each watch costs the replica a task and its share of the write buffer
(one batch at a time, see :meth:`ClientServer._stream`), not a socket."""
INFLIGHT_PER_CONNECTION_MAX = 1024
WRITE_BUFFER_BYTES_MAX = 64 * 2**20
WATCH_BATCH_EVENTS_MAX = 1_000
WATCH_ROOM_POLL_S = 0.005
WATCH_BUFFER_BYTES = 8 * 2**20
"""The default per-watch buffer (``ReplicaConfig.watch_buffer_bytes``): how much of a watch's
events may be sent and not yet consumed by its client. One revision always goes to a watch
with nothing outstanding, however large, so a revision larger than the buffer is delivered."""
WATCH_BUFFER_BYTES_RANGE = (4096, 2**30)
WATCH_BATCH_BYTES = 64
"""What a batch counts against the watch's buffer besides its events (a progress report
counts this alone)."""
WATCH_STALL_S = 1.0
"""How long a watch whose buffer is full waits for its client to consume some of it before
it is cancelled as too slow: long enough that a consumer replaying a backlog faster than the
network carries it is not cancelled, short enough that a stalled one is let go at once."""
REPLY_PAGE_BYTES_MAX = 8 * 2**20
"""A list page, a history reply or a watch batch stops growing past this many value bytes
(always holding at least one item or revision), far below the client's 64 MiB frame bound."""
LIST_MANY_BYTES_MAX = REPLY_FRAME_BYTES_MAX - 2**20
"""A ``list_many`` view travels whole in one reply: up to the client's frame bound, less
headroom for the reply's envelope and the seal."""
ENTRY_FIELDS_BYTES = 192
"""An upper bound on an encoded entry's bytes besides its key, author and value: eight field
names, six 64-bit integers and the msgpack headers (about 140 bytes)."""
WATCH_PROGRESS_S = 1.0
WATCH_LEADERLESS_S = 5.0
"""How long a replica serves its watches without knowing a leader before it ends them (their
clients resume elsewhere): well past what an election after a leader's death takes with the
default timeouts (0.4-1.4 s, longer on a loaded machine), so a failover alone moves no watch."""
WATCH_CONFIRM_S = 5.0
"""How long a watch "from now" waits for the read index it starts after before it is refused
(and the client tries another replica): a request's default budget."""
HANDSHAKE_TIMEOUT_S = 5.0
CONFIRMS_INFLIGHT_MAX = 1
"""Read-index confirmations one endpoint has in flight; reads that arrive meanwhile wait and
share the next. One makes a read that just missed a round wait for that round and its own
(1.5 rounds on average under load), but halves the rounds: each costs the leader a heartbeat
send that wakes a member, which on 2 vCPUs often runs on the leader's own core before the
send returns. Measured on 2 cores (2026-12-07, 8 clients' linearizable gets, 3 alternations
of 4 s): one in flight 8,087-10,530 gets/s against 6,458-7,024 with two; 64 clients 17,211-
18,900 against 14,071-14,494; one client the same. (Before the direct dispatch and the
prepared answers, two had been ~12 % ahead.)"""
DEADLINE_SWEEP_S = 0.1
"""How often expired proposals and reads are answered: a request's timeout fires up to this
much late, in exchange for no timer per request (a heap push and cancel per commit cost ~10 %
of the leader's CPU at thousands of commits/s)."""

Done = Callable[[object | None, Failure | None], None]
"""(result, failure) callback: failure is ``None``, ``UNAVAILABLE`` (not applied) or
``OUTCOME_UNKNOWN`` (may still commit), passed through from the Raft layer unchanged."""

_FAILURE_TEXT = {
    Failure.NOT_LEADER: "this replica is not the leader",
    Failure.UNAVAILABLE: "not committed",
    Failure.OUTCOME_UNKNOWN: "the proposal may or may not have committed",
    Failure.INVALID: "invalid request",
    Failure.COMPACTED: "the start revision was compacted",
}


class Core(Protocol):
    """What the endpoint needs from its replica (implemented in :mod:`consensus.replica`)."""

    state: BoardState
    lock: threading.Lock
    client_address: str

    def propose(self, payload: bytes, done: Done) -> None: ...
    def read_index(self, done: Done, prepare: Callable[[], None] | None = None) -> None: ...
    def leader_client_address(self) -> str | None: ...
    def is_leader(self) -> bool: ...
    def leader_in_touch(self) -> bool: ...
    def status(self, digest: bool) -> ReplicaStatus: ...
    def lease_time_left(self) -> dict[int, float] | None: ...
    def subscribe(self, wake: Callable[[], None]) -> None: ...


class _Answer:
    """One proposal's reply slot: the first reply wins, and answering drops the connection
    reference, so the deadline queue (which holds :meth:`expire` for a whole timeout) keeps
    only this small object alive, never the request and its value."""

    __slots__ = ("conn", "rid")

    def __init__(self, conn: _Conn, rid: int) -> None:
        self.conn: _Conn | None = conn
        self.rid = rid

    def finish(self, reply: Reply) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        conn.done_one()
        conn.send(reply)

    def expire(self) -> None:
        conn = self.conn
        if conn is not None:  # swept for every proposal: build a reply only if needed
            self.finish(Reply(id=self.rid, wire_error=Failure.OUTCOME_UNKNOWN,
                              message="not committed within the request's budget",
                              leader_hint=conn.server.core.leader_client_address()))


class _Deadlines:
    """The time budgets of in-flight requests, swept periodically by the loop.

    Each request carries its own budget (``budget_s``, relative seconds: the only timeout its
    caller sees), so deadlines do not arrive in order: a heap. A callback that was answered in
    time is skipped by the sweep (its ``expire`` checks); the heap holds at most one budget's
    worth of requests (``BUDGET_S_MAX``)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._serial = itertools.count()

    def add(self, budget_s: float, expire: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (time.monotonic() + budget_s, next(self._serial), expire))

    def sweep(self, now: float) -> None:
        """Expire what is due; a raising callback is logged and does not stop the others."""
        heap = self._heap
        for _ in range(len(heap)):  # bounded by the heap's size
            if heap[0][0] > now:
                return
            expire = heapq.heappop(heap)[2]
            try:
                expire()
            except Exception:
                log.exception("request timeout handler raised")


class _Watch:
    """One watch's stream on a connection and what its client has not yet consumed of it."""

    __slots__ = ("acked", "task", "unacked_bytes")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.unacked_bytes = 0
        self.acked: asyncio.Future[None] | None = None
        """Set when the client acknowledges, while the stream waits for room."""

    def ack(self, consumed_bytes: int) -> None:
        self.unacked_bytes = max(0, self.unacked_bytes - consumed_bytes)
        if self.acked is not None and not self.acked.done():
            self.acked.set_result(None)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class _BatchQueue:
    """The watch batches a connection queued in one turn of the loop, merged where they hold the
    same events and kept in revision order for every watch.

    Batches with the same prefix, start and ``through`` hold the same events: they go out as one
    frame naming every watch (``WatchBatch.also``). A watch may queue two batches in one turn (a
    full batch, then the next): its second may match a group another watch created before its
    first, and flushing groups in creation order would then send it revisions out of order. So a
    watch that already has a batch queued makes the queue drain first (:meth:`must_drain`)."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, int, int], tuple[list[Event], int, list[int]]] = {}
        self._queued: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._groups)

    def must_drain(self, watch: int) -> bool:
        return watch in self._queued

    def add(self, prefix: str, start: int, watch: int, events: list[Event], through: int,
            size_bytes: int) -> None:
        self._queued.add(watch)
        group = self._groups.get((prefix, start, through))
        if group is not None:
            group[2].append(watch)
            return
        self._groups[(prefix, start, through)] = (events, size_bytes, [watch])

    def drain(self) -> list[WatchBatch]:
        """The queued batches as frames, in the order their groups were created."""
        groups, self._groups = self._groups, {}
        self._queued.clear()
        return [WatchBatch(id=ids[0], also=ids[1:] or None, events=events, through=through,
                           size_bytes=size_bytes)
                for (_, _, through), (events, size_bytes, ids) in groups.items()]


class _Conn:
    """One authenticated client connection."""

    def __init__(self, server: ClientServer, writer: asyncio.StreamWriter, channel: Channel):
        self.server = server
        self.writer = writer
        self.channel = channel
        self.inflight = 0
        self.watches: dict[int, _Watch] = {}
        self.opening: set[int] = set()  # watches asked for, not open yet
        self.closed = False
        self._batches = _BatchQueue()
        self._flush_scheduled = False

    def begin_one(self) -> None:
        """A request of this connection now waits for Raft (a proposal, a confirmed read)."""
        self.inflight += 1
        self.server.requests_waiting += 1

    def done_one(self) -> None:
        """One of them was answered (or expired)."""
        self.inflight -= 1
        self.server.requests_waiting -= 1

    def send_batch(self, prefix: str, start: int, watch: int, events: list[Event], through: int,
                   size_bytes: int) -> None:
        """Queue watch ``watch``'s batch (its events under ``prefix`` from ``start`` through
        ``through``), merged with the same batch of other watches (:class:`_BatchQueue`), so
        the Boards of a shared connection watching one prefix cost the replica and the client
        one encoding and one frame per revision, not one each."""
        if self._batches.must_drain(watch):  # its earlier batch goes first
            self.flush()
        self._batches.add(prefix, start, watch, events, through, size_bytes)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.server.call_soon(self.flush)

    def flush(self) -> None:
        """Send the queued batches, in the order they were queued."""
        self._flush_scheduled = False
        for batch in self._batches.drain():
            self.send(batch)

    def send(self, message: Reply | WatchBatch) -> None:
        if isinstance(message, Reply):
            self.send_reply(encode(message))
        else:
            self._write(encode(message))

    def send_reply(self, payload: bytes) -> None:
        """Send an encoded :class:`Reply` (queued watch batches go first, in order)."""
        if self._batches:
            self.flush()
        self._write(payload)

    def _write(self, payload: bytes) -> None:
        if self.closed:
            return
        transport = self.writer.transport
        if transport.is_closing():
            self.closed = True
            return
        if transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_MAX:
            log.warning("client too slow, dropping connection", peer=self.peer)
            self.close()
            return
        self.writer.write(encode_frame(self.channel.seal(payload)))

    async def room(self) -> None:
        """Until the socket's write buffer is at most its high-water mark (or the connection
        closed). Every waiter is woken when the buffer drains, so each checks again: of many
        watches waiting, one sends and the others wait for the next drain."""
        transport = self.writer.transport
        for _ in range(2**62):  # bounded by the connection's life
            if self.closed or transport.is_closing() or \
                    transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
                return
            await self.writer.drain()
            if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                await asyncio.sleep(WATCH_ROOM_POLL_S)  # woken but still full: never spin

    @property
    def peer(self) -> str:
        info = self.writer.get_extra_info("peername")
        return f"{info[0]}:{info[1]}" if info else "?"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for watch in self.watches.values():
            watch.cancel()
        self.watches.clear()
        with contextlib.suppress(Exception):
            self.writer.close()


class _ClientProtocol(asyncio.StreamReaderProtocol):
    """A client connection: through its stream reader for the handshake, then (after
    :meth:`direct`) bytes go to a callback as they arrive; the callback's errors, the peer's
    EOF and the connection's loss end the future given to :meth:`direct`. Flow control of
    writes (pause/resume) stays with the stream writer's protocol, this one."""

    _feed: Callable[[bytes], None] | None = None
    _ended: asyncio.Future[BaseException | None] | None = None

    def direct(self, feed: Callable[[bytes], None],
               ended: asyncio.Future[BaseException | None]) -> None:
        self._feed, self._ended = feed, ended

    def _end(self, failure: BaseException | None) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(failure)

    def data_received(self, data: bytes) -> None:
        if self._feed is None:
            super().data_received(data)
            return
        try:
            self._feed(data)
        except Exception as exc:  # _serve logs it and closes the connection
            self._feed = None
            self._end(exc)

    def eof_received(self) -> bool:
        if self._feed is None:
            return bool(super().eof_received())
        self._end(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end(None)


class ClientServer:
    """Serves clients on ``host:port`` from a thread running an asyncio loop.

    The loop is ``loop`` if given (the replica's Raft node runs on it too, so replies to
    committed proposals are written on the thread that applied them), else a new one."""

    def __init__(self, core: Core, host: str, port: int, secret: bytes | None,
                 loop: asyncio.AbstractEventLoop | None = None, *,
                 connections_max: int = CONNECTIONS_MAX,
                 watch_buffer_bytes: int = WATCH_BUFFER_BYTES,
                 poll: PollingSelector | None = None) -> None:
        self.core = core
        self.host = host
        self.port = port
        self.secret = secret
        self.connections_max = connections_max
        self.watch_buffer_bytes = watch_buffer_bytes
        self._open_connections = 0  # accepted sockets, in the handshake or established
        self._refusing = 0
        self._refused = 0  # since the last log line about refusals
        self._refusal_logged_at = -REFUSAL_LOG_EVERY_S
        self._slow_watches_cancelled = 0
        self._loop = loop or asyncio.new_event_loop()
        self._loop_thread_id: int | None = None
        self._thread = threading.Thread(target=self._run, name="client-server", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self._waiters: set[asyncio.Future[None]] = set()
        # Replies produced on the Raft tick thread, handed to the loop in one wake-up per burst
        # (a group-committed batch completes many proposals at once).
        self._handoff: list[tuple[Callable[[Reply], None], Reply]] = []
        self._handoff_lock = threading.Lock()
        self._handoff_scheduled = False
        self.requests_waiting = 0
        """Client requests waiting for Raft (proposals, reads being confirmed), all connections."""
        self._request_at = float("-inf")
        self._request_conn = 0
        """``id`` of the connection of the latest request (the connection itself would be
        kept alive by this reference)."""
        self._other_client_at = float("-inf")
        """When a request last came on another connection than the one before it."""
        self._poll = poll
        if poll is not None:  # the loop's selector polls only while a lone client is served
            poll.gate = self.lone_client
        self._error: BaseException | None = None
        # reads, and watches "from now", waiting for a read index (they share confirmations)
        self._reads_waiting: list[tuple[_Conn, ReadReq | WatchReq]] = []
        self._confirm_inflight = 0
        self._proposal_deadlines = _Deadlines()
        self._read_deadlines = _Deadlines()
        self._leaderless_since: float | None = None
        self._leader_checked_at = -DEADLINE_SWEEP_S
        self._events_cache: dict[tuple[str, int], list[Event]] = {}
        self._events_state: BoardState | None = None
        self._events_revision = -1

    # ------------------------------------------------------------------ extension points
    # Small methods a subclass may override, each at one step of the request path. The test
    # harness plants its bugs here (consensus/testing/replica.py), so this module holds no
    # switch for them; in production they are the identity.

    def _answers_locally(self, req: ReadReq) -> bool:
        """Whether ``req`` is answered from this replica's applied state at once, without a
        confirmed read index: only when the client asked for a stale read."""
        return req.stale

    def _submit(self, proposal: Proposal, done: Done) -> None:
        """Hand one validated client proposal to the log."""
        self.core.propose(encode(proposal), done)

    def _events_to_send(self, events: list[Event]) -> list[Event]:
        """The events of one watch batch, as sent (all of them)."""
        return events

    # ------------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        raise_open_files_limit(self.connections_max)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            # Stop the loop before giving up, so the caller can close it (closing a running
            # loop raises and hides this error).
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_JOIN_S)
            raise RuntimeError(f"client server did not start within {timeout_s:g} s")
        if self._error is not None:
            raise self._error
        self.core.subscribe(self._wake_threadsafe)

    def _run(self) -> None:
        self._loop_thread_id = threading.get_ident()
        asyncio.set_event_loop(self._loop)
        try:
            loop = self._loop

            def protocol() -> _ClientProtocol:  # what asyncio.start_server builds, ours
                return _ClientProtocol(asyncio.StreamReader(limit=2**16, loop=loop),
                                       self._handle, loop=loop)

            self._server = loop.run_until_complete(
                loop.create_server(protocol, self.host, self.port))
        except BaseException as exc:  # bind failure: report to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.call_soon(self._sweep)
        self._loop.run_forever()

    def _sweep(self) -> None:
        try:
            now = time.monotonic()
            self._proposal_deadlines.sweep(now)
            self._read_deadlines.sweep(now)
            self._end_leaderless_watches(now)
        finally:  # the sweep must outlive anything a handler does
            self._loop.call_later(DEADLINE_SWEEP_S, self._sweep)

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def _shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.close()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(STOP_JOIN_S)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_JOIN_S)

    # -------------------------------------------------------------- notification from apply

    def _hand_over(self, finish: Callable[[Reply], None], reply: Reply) -> None:
        """From the tick thread: queue ``finish(reply)`` for the loop; wake it once per burst.

        When the tick thread is the loop's own thread, no wake-up is needed at all."""
        with self._handoff_lock:
            self._handoff.append((finish, reply))
            if self._handoff_scheduled:
                return
            self._handoff_scheduled = True
        with contextlib.suppress(RuntimeError):
            if threading.get_ident() == self._loop_thread_id:
                self._loop.call_soon(self._drain_handoff)
            else:
                self._loop.call_soon_threadsafe(self._drain_handoff)

    def _drain_handoff(self) -> None:
        with self._handoff_lock:
            items, self._handoff = self._handoff, []
            self._handoff_scheduled = False
        for finish, reply in items:
            finish(reply)

    def _wake_threadsafe(self) -> None:
        """Called by the apply path after events were recorded; cheap when nobody watches."""
        if not self._waiters or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------------------ connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open_connections >= self.connections_max:
            await self._refuse(reader, writer)
            return
        self._open_connections += 1
        try:
            await self._serve(reader, writer)
        finally:
            self._open_connections -= 1

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Turn a connection away at the cap: the handshake's refusal frame (with the cap) in
        place of our hello, then a short lingering close, reading what the client sends until
        it closes: closing with its hello unread would reset the connection, and a reset can
        discard the frame before the client reads it."""
        self._refusing += 1
        try:
            refusal = TooManyConnections("at the cap", limit=self.connections_max)
            writer.write(encode_frame(refusal_frame(refusal)))
            if self._refusing <= REFUSING_MAX:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(REFUSE_LINGER_S):
                        for _ in range(HELLO_BYTES_MAX):  # each read yields >= 1 byte
                            if not await reader.read(HELLO_BYTES_MAX):
                                break
        finally:
            self._refusing -= 1
            with contextlib.suppress(Exception):
                writer.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_EVERY_S:  # a crowd must not flood logs
            log.warning("client connections refused at the cap", refused=self._refused,
                        connections_max=self.connections_max)
            self._refused, self._refusal_logged_at = 0, now

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = Channel(self.secret, new_nonce(), initiator=False, label=CLIENT_LABEL)
        decoder = FrameDecoder(HELLO_BYTES_MAX)
        conn: _Conn | None = None
        try:
            early = await asyncio.wait_for(self._handshake(reader, writer, channel, decoder),
                                           HANDSHAKE_TIMEOUT_S)
            decoder.set_limit(CLIENT_FRAME_BYTES_MAX + SEAL_OVERHEAD_BYTES)
            conn = _Conn(self, writer, channel)
            self._conns.add(conn)
            for frame in early:  # requests that arrived in the same read as the proof
                self._dispatch(conn, channel.open(frame))
            await self._serve_directly(reader, writer, conn, decoder)
        except AuthError as exc:
            log.warning("client failed authentication", reason=str(exc),
                        peer=str(writer.get_extra_info("peername")))
        except (BoardError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("client connection dropped", reason=f"{type(exc).__name__}: {exc}")
        except Exception:  # never let one connection take the endpoint down
            log.exception("client connection failed")
        finally:
            if conn is not None:
                conn.close()
                self._conns.discard(conn)
            else:
                with contextlib.suppress(Exception):
                    writer.close()

    async def _serve_directly(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              conn: _Conn, decoder: FrameDecoder) -> None:
        """From here on a connection's bytes go from the transport straight to
        :meth:`_dispatch`, in the loop's callback for them, until the connection ends. Read
        through the stream instead, each request would wait one more turn of the loop (a
        reader woken, a task stepped) before its read round or its proposal started: about a
        tenth of a linearizable read's latency at one client, measured. Bytes the handshake
        read past the client's proof are in the reader: ending the reader (EOF) lets one read
        take them all at once, before any later bytes can arrive."""
        protocol = writer.transport.get_protocol()
        if not isinstance(protocol, _ClientProtocol):  # _run's factory builds every one
            raise RuntimeError("client connection without its protocol")
        ended: asyncio.Future[BaseException | None] = self._loop.create_future()

        def feed(data: bytes) -> None:
            for frame in decoder.feed(data):
                self._dispatch(conn, conn.channel.open(frame))
                if conn.closed:
                    return

        protocol.direct(feed, ended)
        reader.feed_eof()
        feed(await reader.read())  # what was buffered: EOF is set, so this does not wait
        failure = await ended
        if failure is not None:
            raise failure

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         channel: Channel, decoder: FrameDecoder) -> list[bytes]:
        """Run the handshake; return frames that arrived right after the peer's proof."""
        writer.write(encode_frame(channel.hello(self.core.client_address)))
        frames: list[bytes] = []

        async def next_frame() -> bytes:
            for _ in range(HELLO_BYTES_MAX):  # bounded: each read yields >= 1 byte
                if frames:
                    return frames.pop(0)
                data = await reader.read(HELLO_BYTES_MAX)
                if not data:
                    raise ConnectionError("closed during handshake")
                frames.extend(decoder.feed(data))
            raise ProtocolError("handshake did not complete")

        try:
            channel.accept_hello(await next_frame())
            writer.write(encode_frame(channel.proof()))
            channel.accept_proof(await next_frame())
        except AuthError as exc:
            # Say so before closing: a bare close reads as a network fault, and the client would
            # retry until its deadline and report the cluster unavailable.
            writer.write(encode_frame(refusal_frame(exc)))
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.drain(), HANDSHAKE_TIMEOUT_S)
            raise
        if len(frames) > INFLIGHT_PER_CONNECTION_MAX:
            raise ProtocolError("too many frames right after the handshake")
        return frames

    # --------------------------------------------------------------------------- requests

    def lone_client(self) -> bool:
        """Whether the loop should poll rather than sleep (:mod:`.polling`): a client request
        arrived within :data:`LONE_CLIENT_WINDOW_S`, all of that window's requests came on one
        connection, and at most one waits for Raft. That is one client going request after
        request, whose next message (a member's answer to its read round, its next request)
        comes within a fraction of a millisecond and finds nothing else to batch with. With
        other clients active the loop has work coming anyway, and polling there took 5-10 %
        off 8 clients' gets (measured) when only the count of waiting requests gated it."""
        now = time.perf_counter()
        return (self.requests_waiting <= 1
                and now - self._request_at < LONE_CLIENT_WINDOW_S
                and now - self._other_client_at >= LONE_CLIENT_WINDOW_S)

    def _dispatch(self, conn: _Conn, data: bytes) -> None:
        now = self._request_at = time.perf_counter()
        if id(conn) != self._request_conn:  # another client: no polling for a while
            self._request_conn = id(conn)
            self._other_client_at = now
        try:
            req = decode_request(data)
        except ProtocolError as exc:
            conn.send(Reply(id=request_id(data), wire_error=Failure.INVALID, message=str(exc)))
            return
        if isinstance(req, ProposeReq):
            self._propose(conn, req)
        elif isinstance(req, ReadReq):
            if req.what == "leases" and not req.stale and not self.core.is_leader():
                conn.send(self._not_leader(req.id))  # the time left is the leader's to tell
            elif self._answers_locally(req):
                with self.core.lock:
                    reply = self._read(req)
                conn.send(reply)
            elif conn.inflight >= INFLIGHT_PER_CONNECTION_MAX:
                conn.send(Reply(id=req.id, wire_error=Failure.UNAVAILABLE,
                                message="too many requests in flight on this connection"))
            else:
                conn.begin_one()
                self._reads_waiting.append((conn, req))
                self._maybe_confirm_reads()
        elif isinstance(req, WatchReq):
            self._watch(conn, req)
        elif isinstance(req, WatchAckReq):
            watch = conn.watches.get(req.watch)
            if watch is not None:
                watch.ack(req.consumed_bytes)
        elif isinstance(req, CancelReq):
            conn.opening.discard(req.watch)  # still waiting for its read index: never opens
            watch = conn.watches.pop(req.watch, None)
            if watch is not None:
                watch.cancel()
            conn.send(Reply(id=req.id))
        elif isinstance(req, StatusReq):
            conn.send(Reply(id=req.id, status=self._status(req.digest)))

    def _status(self, digest: bool) -> ReplicaStatus:
        """The replica's status with this endpoint's connection figures."""
        return self.core.status(digest).model_copy(update={
            "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "connections_max": self.connections_max,
            "client_connections": self._open_connections,
            "client_watches": sum(len(conn.watches) for conn in self._conns),
            "watch_buffer_bytes": self.watch_buffer_bytes,
            "slow_watches_cancelled": self._slow_watches_cancelled,
            **({} if self._poll is None else self._poll.counters())})

    def _not_leader(self, rid: int) -> Reply:
        return Reply(id=rid, wire_error=Failure.NOT_LEADER, message="this replica is not the leader",
                     leader_hint=self.core.leader_client_address())

    def _propose(self, conn: _Conn, req: ProposeReq) -> None:
        if req.proposal.command.op not in CLIENT_OPS:
            conn.send(Reply(id=req.id, wire_error=Failure.INVALID,
                            message=f"op {req.proposal.command.op} is replica-internal"))
            return
        if not self.core.is_leader():
            conn.send(self._not_leader(req.id))
            return
        if conn.inflight >= INFLIGHT_PER_CONNECTION_MAX:
            conn.send(Reply(id=req.id, wire_error=Failure.UNAVAILABLE,
                            message="too many requests in flight on this connection"))
            return
        conn.begin_one()
        rid = req.id
        answer = _Answer(conn, rid)

        def done(result: object | None, failure: Failure | None) -> None:  # on the tick thread
            if failure is None and isinstance(result, Result):
                reply = Reply(id=rid, result=result)
            elif failure is None:  # apply raised (a bug), identically on every replica
                reply = Reply(id=rid, result=Result(revision=0, error=ErrorInfo(
                    code="internal", message=f"apply failed: {result!r}")))
            else:  # the failure passes through as it came from the Raft layer
                reply = Reply(id=rid, wire_error=failure, message=_FAILURE_TEXT[failure],
                              leader_hint=self.core.leader_client_address())
            self._hand_over(answer.finish, reply)

        self._proposal_deadlines.add(req.budget_s, answer.expire)
        try:
            self._submit(req.proposal, done)
        except BoardError as exc:  # e.g. a payload over the raft command bound
            answer.finish(Reply(id=rid, wire_error=Failure.INVALID, message=str(exc)))

    # -------------------------------------------------------------------------------- reads

    def _maybe_confirm_reads(self) -> None:
        """Start one read-index confirmation for every read (and watch "from now") waiting:
        they share confirmations, at most :data:`CONFIRMS_INFLIGHT_MAX` in flight, so a burst
        of reads costs one round."""
        if self._confirm_inflight >= CONFIRMS_INFLIGHT_MAX or not self._reads_waiting:
            return
        batch, self._reads_waiting = self._reads_waiting, []
        reads = [(c, r) for c, r in batch if isinstance(r, ReadReq)]
        opens = [(c, r) for c, r in batch if isinstance(r, WatchReq)]
        self._confirm_inflight += 1
        loop = self._loop
        answered = False
        prepared: list[tuple[_Conn, bytes]] | None = None

        def answer(replies: list[tuple[_Conn, bytes]], failure: Failure | None) -> bool:
            nonlocal answered
            if answered:
                return False
            answered = True
            self._confirm_inflight -= 1
            for conn, _reply in replies:  # first: a send that raises must not skew the count
                conn.done_one()
            for conn, reply in replies:
                conn.send_reply(reply)
            for conn, req in opens:
                self._open_watch(conn, req, failure)
            return True

        def finish(replies: list[tuple[_Conn, bytes]], failure: Failure | None) -> None:
            if answer(replies, failure):
                self._maybe_confirm_reads()

        def read_all() -> list[tuple[_Conn, bytes]]:
            with self.core.lock:
                replies = [(c, self._read(r)) for c, r in reads]
            return [(c, encode(reply)) for c, reply in replies]

        def prepare() -> None:  # on the tick thread, while the confirming round travels
            nonlocal prepared
            if not answered:
                prepared = read_all()

        def refusals(message: str, hint: str | None = None) -> list[tuple[_Conn, bytes]]:
            """The batch's reads answered UNAVAILABLE (the client retries, at ``hint``)."""
            return [(c, encode(Reply(id=r.id, wire_error=Failure.UNAVAILABLE, message=message,
                                     leader_hint=hint)))
                    for c, r in reads]

        def done(_result: object | None, failure: Failure | None) -> None:  # on the tick thread
            if answered:  # timed out meanwhile: nothing to read for
                return
            if failure is None:
                replies = prepared if prepared is not None else read_all()
            else:
                replies = refusals("no read index was confirmed",
                                   self.core.leader_client_address())
            with contextlib.suppress(RuntimeError):
                if threading.get_ident() != self._loop_thread_id:
                    loop.call_soon_threadsafe(finish, replies, failure)
                elif answer(replies, failure) and self._reads_waiting:
                    # The replies go out now, ahead of whatever else is ready on the loop (a
                    # late member's answer, a tick); only the next confirmation waits for the
                    # loop, since starting it here would re-enter the Raft read path that is
                    # calling us. (With no read waiting, the next read starts its own.)
                    loop.call_soon(self._maybe_confirm_reads)

        def unavailable(message: str) -> None:
            if not answered:
                finish(refusals(message), Failure.UNAVAILABLE)

        def timed_out() -> None:
            unavailable("no read index confirmed within the request's budget")

        try:
            self.core.read_index(done, prepare if reads else None)
        except Exception:  # a bug: its reads fail now rather than hold the one confirmation
            log.exception("read index request raised")
            unavailable("the replica could not start a read index confirmation")
            return
        # After the round is on its way (its heartbeat does not wait for this bookkeeping);
        # an answer that came within the call leaves timed_out nothing to do.
        self._read_deadlines.add(max([r.budget_s for _, r in reads]
                                     + [WATCH_CONFIRM_S for _ in opens[:1]]), timed_out)

    def _read(self, req: ReadReq) -> Reply:
        """Answer a read from the applied state (caller holds the state lock)."""
        state = self.core.state
        rev = state.revision
        if req.what == "get":
            entry = state.entry(req.key)
            if entry is None:
                return Reply(id=req.id, revision=rev, error=ErrorInfo(
                    code="not_found", message=f"{req.key} does not exist"))
            return Reply(id=req.id, revision=rev, entry=entry)
        if req.what == "list":
            page = state.entries(req.key, req.limit + 1, req.start_after)
            kept = _fit(page[: req.limit], lambda e: _value_bytes(e.key, e.value))
            return Reply(id=req.id, revision=rev, entries=kept, more=len(kept) < len(page))
        if req.what == "list_many":
            return self._list_many(req, rev)
        if req.what == "history":
            records = state.history(req.key)[-req.limit:]
            newest = _fit(records[::-1], lambda r: _value_bytes(r.key, r.value))[::-1]
            return Reply(id=req.id, revision=rev, history=newest, more=len(newest) < len(records),
                         compact_revision=state.audit_compact_revision)
        if req.what == "pending":
            return Reply(id=req.id, revision=rev, pending=state.pending_for(req.key))
        if req.what == "claims":
            claims = state.claims_under(req.key, req.limit + 1, req.start_after)
            kept_claims = _fit(claims[: req.limit], lambda c: _value_bytes(c.key, c.owner))
            return Reply(id=req.id, revision=rev, claims=kept_claims,
                         more=len(kept_claims) < len(claims))
        if req.what == "policies":
            bindings = state.policy_bindings(req.limit + 1, req.start_after)
            kept_bindings = _fit(bindings[: req.limit],
                                 lambda b: _value_bytes(b.prefix, [b.name, b.params]))
            return Reply(id=req.id, revision=rev, policies=kept_bindings,
                         more=len(kept_bindings) < len(bindings))
        if req.what == "leases":
            leases = state.lease_statuses(self.core.lease_time_left(), req.lease, req.limit + 1)
            kept_leases = _fit(leases[: req.limit],
                               lambda s: _value_bytes(s.owner, [s.keys, s.claims]))
            return Reply(id=req.id, revision=rev, leases=kept_leases,
                         more=len(kept_leases) < len(leases))
        lease = state.lease(req.lease)
        if lease is None:
            return Reply(id=req.id, revision=rev, error=ErrorInfo(
                code="not_found", message=f"lease {req.lease} does not exist"))
        return Reply(id=req.id, revision=rev, lease=lease)

    def _list_many(self, req: ReadReq, rev: int) -> Reply:
        """Every entry under any of ``req.prefixes`` in one reply, read under one lock hold, so
        all at revision ``rev``. Too many entries or bytes for one reply is an ``invalid`` error
        naming the bound, never a silent cut: a partial view would defeat the purpose."""
        state = self.core.state
        found: dict[str, Entry] = {}
        for prefix in sorted(set(req.prefixes)):
            for entry in state.entries(prefix, req.limit + 1):
                found[entry.key] = entry
            if len(found) > req.limit:
                return Reply(id=req.id, revision=rev, error=ErrorInfo(
                    code="invalid", message=f"list_many: more than limit={req.limit} entries "
                    "under these prefixes; raise the limit (up to 100000) or narrow them"))
        entries = [found[k] for k in sorted(found)]
        size = sum(_entry_bytes(e) for e in entries)
        if size > LIST_MANY_BYTES_MAX:
            return Reply(id=req.id, revision=rev, error=ErrorInfo(
                code="invalid", message=f"list_many: {size} bytes of values under these "
                f"prefixes, more than one reply carries ({LIST_MANY_BYTES_MAX}); narrow them"))
        return Reply(id=req.id, revision=rev, entries=entries)

    # ------------------------------------------------------------------------------ watches

    def _leaderless(self, now: float) -> bool:
        """Whether this replica has been out of touch with any leader for
        :data:`WATCH_LEADERLESS_S` (checked at most every :data:`DEADLINE_SWEEP_S`): it knew
        none, or it has not heard from the one it knows (a follower whose links to every
        member were reset keeps naming its old leader)."""
        if now - self._leader_checked_at >= DEADLINE_SWEEP_S:
            self._leader_checked_at = now
            if self.core.leader_in_touch():
                self._leaderless_since = None
            elif self._leaderless_since is None:
                self._leaderless_since = now
        return self._leaderless_since is not None \
            and now - self._leaderless_since >= WATCH_LEADERLESS_S

    def _end_leaderless_watches(self, now: float) -> None:
        """A replica cut off from the leader (a partition) has stopped applying while the
        majority goes on: its watches would stall without a word. End them with
        ``UNAVAILABLE``, so their clients resume them on another replica from where they
        were (like etcd's watches that require a leader)."""
        if not any(conn.watches for conn in self._conns) or not self._leaderless(now):
            return
        for conn in list(self._conns):
            for rid in list(conn.watches):
                conn.watches.pop(rid).cancel()
                conn.send(self._leaderless_reply(rid))

    def _leaderless_reply(self, rid: int) -> Reply:
        return Reply(id=rid, wire_error=Failure.UNAVAILABLE,
                     message=f"this replica has been out of touch with any leader for "
                     f"{WATCH_LEADERLESS_S:g}s: "
                     "its events may be behind the cluster's; watch on another replica",
                     leader_hint=None)

    def _watch(self, conn: _Conn, req: WatchReq) -> None:
        """Open a watch. One "from now" (no start revision) starts after a confirmed read index
        (as a linearizable read would see the board), not after this replica's own revision:
        a follower that lags would otherwise stream, as new, events committed before the
        watch was asked for. Without a confirmation within the read budget it is refused
        (``UNAVAILABLE``), and the client tries another replica."""
        if len(conn.watches) + len(conn.opening) >= WATCHES_PER_CONNECTION_MAX:
            conn.send(Reply(id=req.id, wire_error=Failure.UNAVAILABLE, message="too many watches"))
            return
        conn.opening.add(req.id)
        if req.start_revision is not None:
            self._open_watch(conn, req, None)
            return
        self._reads_waiting.append((conn, req))
        self._maybe_confirm_reads()

    def _open_watch(self, conn: _Conn, req: WatchReq, failure: Failure | None) -> None:
        """Open a watch asked for (its read index confirmed, if it starts "from now"), unless
        its connection closed or its client cancelled it meanwhile, or, with ``failure``,
        refuse it."""
        if conn.closed or req.id not in conn.opening:
            return
        conn.opening.discard(req.id)
        if failure is not None:
            conn.send(Reply(id=req.id, wire_error=Failure.UNAVAILABLE,
                            message="no read index confirmed to start the watch from",
                            leader_hint=self.core.leader_client_address()))
            return
        if self._leaderless(time.monotonic()):
            conn.send(self._leaderless_reply(req.id))
            return
        with self.core.lock:
            start = self.core.state.revision + 1 if req.start_revision is None \
                else max(req.start_revision, 1)
        conn.send(Reply(id=req.id, revision=start - 1, watch_buffer_bytes=self.watch_buffer_bytes))
        watch = conn.watches[req.id] = _Watch()
        watch.task = self._loop.create_task(self._stream(conn, req, start, watch))

    async def _stream(self, conn: _Conn, req: WatchReq, start: int, watch: _Watch) -> None:
        """Send every event at or after ``start`` under the prefix, whole revisions per batch.

        The waiter is registered *before* reading, so an apply that lands between the read and
        the wait still wakes us: no event can be missed, none is sent twice (cursor). When the
        board moves on without matching events, a progress batch (no events, ``through`` =
        head) is sent at least every :data:`WATCH_PROGRESS_S` and before a quarter of the
        retained event log has gone by, so a quiet watch can resume after a failover without
        falling behind compaction.

        Batches are cut to the room left in the watch's buffer (``watch_buffer_bytes`` less
        what the client has not acknowledged). When not even the next revision fits, the stream
        waits up to :data:`WATCH_STALL_S` for an acknowledgement and then cancels the watch
        with ``SLOW_WATCHER`` and the revision to resume from (every earlier event was sent).
        The wait is this watch's alone: other watches and requests on the connection go on."""
        cursor = start
        reported = start - 1  # the highest ``through`` the client has been told
        last_report = self._loop.time()
        stalled_since: float | None = None
        try:
            for _ in range(2**62):  # bounded only by the connection's life
                if conn.closed:
                    return
                wake: asyncio.Future[None] = self._loop.create_future()
                self._waiters.add(wake)
                with self.core.lock:
                    state = self.core.state
                    try:
                        events = self._events_since(req.prefix, cursor)
                    except RevisionCompacted as exc:
                        conn.send(Reply(id=req.id, wire_error=Failure.COMPACTED, message=str(exc),
                                        compact_revision=exc.compact_revision))
                        return
                    head = state.revision
                    progress_every = max(1, state.limits.events_retained_max // 4)
                room = self.watch_buffer_bytes - watch.unacked_bytes
                events, full, size = _whole_revisions(
                    events, full=len(events) >= WATCH_BATCH_EVENTS_MAX,
                    budget_bytes=min(REPLY_PAGE_BYTES_MAX, room))
                fits = watch.unacked_bytes == 0 or size <= room
                if events and not fits:  # the client is a whole buffer behind
                    now = self._loop.time()
                    stalled_since = now if stalled_since is None else stalled_since
                    if now - stalled_since >= WATCH_STALL_S:
                        conn.watches.pop(req.id, None)
                        self._slow_watches_cancelled += 1
                        conn.send(Reply(
                            id=req.id, wire_error=Failure.SLOW_WATCHER, resume_revision=cursor,
                            message=f"watch cancelled: its client left {watch.unacked_bytes} "
                            f"bytes unconsumed for {WATCH_STALL_S:g}s (the replica's watch "
                            f"buffer is {self.watch_buffer_bytes} bytes); watch again from "
                            f"revision {cursor}"))
                        return
                    self._waiters.discard(wake)  # this pass waits for the client, not the log
                    await self._wait_for_ack(watch, stalled_since + WATCH_STALL_S - now)
                    continue
                stalled_since = None
                through = events[-1].revision if full else head
                events = self._events_to_send(events)
                now = self._loop.time()
                if (events or (through > reported and (
                        through - reported >= progress_every
                        or now - last_report >= WATCH_PROGRESS_S))) and fits:
                    # Wait for the socket first: the many watches of a shared connection then
                    # add one batch at a time above its high-water mark, never one each (a
                    # fan-out of large values would otherwise overrun the write buffer).
                    await conn.room()
                    if conn.closed:
                        return
                    watch.unacked_bytes += size
                    conn.send_batch(req.prefix, cursor, req.id, events, through, size)
                    reported, last_report = through, now
                cursor = max(cursor, through + 1)
                if full:
                    continue
                if through > reported:  # unreported progress: wake up in time to report it
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(wake), WATCH_PROGRESS_S)
                else:
                    await wake
        except asyncio.CancelledError:
            pass
        except (ConnectionError, RuntimeError):
            conn.close()

    def _events_since(self, prefix: str, start: int) -> list[Event]:
        """``state.events_since`` for a watch, shared by every watch asking for the same
        prefix and start at the same revision (caller holds the state lock): a thousand
        watches of one prefix read and build the new revision's events once."""
        state = self.core.state
        if state is not self._events_state or state.revision != self._events_revision:
            self._events_cache.clear()
            self._events_state, self._events_revision = state, state.revision
        events = self._events_cache.get((prefix, start))
        if events is None:
            events = state.events_since(prefix, start, WATCH_BATCH_EVENTS_MAX)
            self._events_cache[(prefix, start)] = events
        return events

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop after the handlers ready now (on the loop's thread)."""
        self._loop.call_soon(callback)

    async def _wait_for_ack(self, watch: _Watch, timeout_s: float) -> None:
        """Until the client acknowledges some of ``watch``'s buffer, or ``timeout_s``."""
        watch.acked = self._loop.create_future()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.acked, max(0.0, timeout_s))
        finally:
            watch.acked = None


def _whole_revisions(events: list[Event], *, full: bool,
                     budget_bytes: int = REPLY_PAGE_BYTES_MAX) -> tuple[list[Event], bool, int]:
    """Cut ``events`` to ``budget_bytes`` at a revision boundary (never inside a revision; at
    least one revision, however large). Returns the events kept, whether more remain, and the
    batch's size: what it counts against the watch's buffer (:data:`WATCH_BATCH_BYTES` plus
    each event's :func:`_value_bytes`)."""
    total = WATCH_BATCH_BYTES
    sizes: list[int] = []  # sizes[i]: the batch's size holding events[: i + 1]
    for i, ev in enumerate(events):
        total += _value_bytes(ev.key, ev.entry.value)
        sizes.append(total)
        if total > budget_bytes and i > 0:
            cut = i
            while cut > 0 and events[cut - 1].revision == ev.revision:
                cut -= 1
            if cut > 0:
                return events[:cut], True, sizes[cut - 1]
    return events, full, total


def _entry_bytes(entry: Entry) -> int:
    """An upper bound on ``entry``'s encoded size (UTF-8 lengths, not characters)."""
    return (len(entry.key.encode()) + len(entry.author.encode()) + ENTRY_FIELDS_BYTES
            + len(msgpack.packb(entry.value, use_bin_type=True)))


def _value_bytes(key: str, value: object) -> int:
    """Approximate encoded size of one item (key, value and a fixed allowance for metadata)."""
    return len(key) + len(msgpack.packb(value, use_bin_type=True)) + 128


def _fit(items: list[T], size: Callable[[T], int]) -> list[T]:
    """The longest prefix of ``items`` within :data:`REPLY_PAGE_BYTES_MAX` (at least one)."""
    total = 0
    for i, item in enumerate(items):
        total += size(item)
        if total > REPLY_PAGE_BYTES_MAX and i > 0:
            return items[:i]
    return items


def raise_open_files_limit(connections_max: int) -> int:
    """Raise this process's soft open-file limit toward its hard limit (at most
    :data:`OPEN_FILES_WANTED`) and return the soft limit now in force.

    Every client connection holds a descriptor, and the usual soft default (1,024) is below
    what a replica serving a thousand agents needs, while the hard limit is usually far higher
    and raising the soft one up to it needs no privilege. A limit still below
    ``connections_max`` plus :data:`OPEN_FILES_RESERVED` is logged: connections past it would
    fail in ``accept`` instead of getting the cap's refusal frame."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY \
        else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError) as exc:  # e.g. a hard limit above the kernel's nr_open
            log.warning("could not raise the open-file limit", soft=soft, hard=hard,
                        wanted=wanted, reason=str(exc))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < connections_max + OPEN_FILES_RESERVED:
        log.warning("open-file limit below the connection cap", open_files_limit=soft,
                    connections_max=connections_max, reserved=OPEN_FILES_RESERVED)
    return soft
