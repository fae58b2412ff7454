"""The client: ``connect()`` and :class:`Board`, the handle an agent writes through.

A ``Board`` keeps one authenticated connection to the replica it believes leads, opens a
replicated *session* on first use, and numbers every proposal. A retry after a timeout, a lost
connection, ``LEADER_CHANGED`` or ``UNKNOWN_OUTCOME`` re-sends the *same* session and sequence
number, so the state machine returns the original result instead of applying twice. It follows
``not_leader`` hints and otherwise walks the endpoint list, with bounded attempts and backoff.

Thread-safe: several threads may share one ``Board`` (requests are pipelined on the connection).

The sockets belong to a :class:`Connection`: a Board's own, or one shared by many Boards of a
process (:func:`connect_shared`), at most one socket per replica either way. Requests go to the
leader's socket; a Board's watches go to the replica it is assigned (Boards take turns over the
replicas, so followers carry their share of the fan-out) and share that socket.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import math
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from quorumboard.consensus.core.model import (
    INT_MAX,
    INT_MIN,
    Claim,
    ClaimCmd,
    CloseSession,
    Command,
    DeleteCmd,
    Entry,
    ErrorInfo,
    Event,
    FenceRef,
    GrantCmd,
    HistoryRecord,
    KeepAliveCmd,
    LeaseInfo,
    LeaseStatus,
    Listing,
    OpenSession,
    Pending,
    PolicyBinding,
    Proposal,
    PutCmd,
    Result,
    RevokeCmd,
    SetPolicyCmd,
    Value,
    VoteCmd,
    WithdrawCmd,
    check_key,
    check_prefix,
)
from quorumboard.consensus.errors import (
    AuthError,
    BoardError,
    ClaimHeld,
    Conflict,
    FencedOut,
    InvalidCommand,
    NotFound,
    OutcomeUnknown,
    PolicyRejected,
    ProtocolError,
    RevisionCompacted,
    SessionExpired,
    SpaceQuotaExceeded,
    StaleVersion,
    TooManyConnections,
    Unavailable,
    UnknownPolicy,
    WatchCancelled,
)
from quorumboard.consensus.wire.auth import CLIENT_LABEL, SEAL_OVERHEAD_BYTES, Channel, new_nonce
from quorumboard.consensus.wire.frames import FrameDecoder, encode_frame
from quorumboard.consensus.wire.protocol import (
    BUDGET_S_MAX,
    REPLY_FRAME_BYTES_MAX,
    CancelReq,
    Failure,
    ProposeReq,
    ReadKind,
    ReadReq,
    ReplicaStatus,
    Reply,
    StatusReq,
    WatchAckReq,
    WatchBatch,
    WatchReq,
    encode,
)

__all__ = ["Board", "Connection", "EventPage", "connect", "connect_shared"]

CONNECT_TIMEOUT_S = 2.0
CONNECT_MIN_S = 0.05
ATTEMPT_TIMEOUT_S = 6.0
"""One attempt's wait; the request carries it as its budget (less ``REPLY_MARGIN_S``)."""
REPLY_MARGIN_S = 0.25
BUDGET_S_MIN = 0.05
ATTEMPTS_MAX = 64
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 0.5
WATCH_RECONNECTS_MAX = 1_000
"""Consecutive failed watch reconnects before giving up (reset by every delivered batch)."""
UNKNOWN_RETAINED_MAX = 64
"""Commands with an unknown outcome whose (session, seq) a retry can reuse."""
HELLO_BYTES_MAX = 4096
READ_SLICE_S = 0.05
"""How long a reading caller blocks in one recv before re-checking its deadline and box."""
HANDOFF_SLICE_S = 0.002
"""How often a caller waiting behind another reader checks whether it should read itself."""
SEND_TIMEOUT_S = ATTEMPT_TIMEOUT_S
"""A send blocked this long (the replica stopped reading) fails the attempt."""
CLOSE_CHECK_IDLE_S = 0.05
"""Before a send, a link idle at least this long is checked for a close by the replica (a
non-blocking recv), so the request is known unsent. A link that just delivered a reply skips
the check: it costs a syscall per request, it is a race either way (a close can follow it),
and what it buys is ``Unavailable`` rather than ``OutcomeUnknown`` when every retry fails."""
WAIT_MIN_S = 0.5
""":meth:`Board.wait_events` with a shorter timeout still gets this long to connect and read
what is already there (a poll)."""


class EventPage(NamedTuple):
    """What :meth:`Board.wait_events` returns: ``events`` (whole revisions, in order), the
    ``revision`` to pass as the next ``after_revision`` (nothing under the prefix was skipped up
    to it), and ``more`` when the page was cut at ``limit`` (call again at once)."""

    events: list[Event]
    revision: int
    more: bool


class _WaitCursor:
    """Where a wait stands: the highest revision a replica said it had scanned, and whether
    any replica served it at all (a wait nobody served is an error, not an empty answer)."""

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self.served = False


_ERRORS: dict[str, type[BoardError]] = {
    "stale_version": StaleVersion,
    "policy_rejected": PolicyRejected,
    "claim_held": ClaimHeld,
    "fenced_out": FencedOut,
    "not_found": NotFound,
    "invalid": InvalidCommand,
    "unknown_policy": UnknownPolicy,
    "session_expired": SessionExpired,
    "space_quota": SpaceQuotaExceeded,
    "internal": BoardError,
}


def error_from(info: ErrorInfo) -> BoardError:
    """The typed exception for a refusal the state machine committed."""
    cls = _ERRORS.get(info.code, BoardError)
    if issubclass(cls, Conflict):
        return cls(info.message, current=info.current, policy=info.policy, reason=info.reason,
                   detail=info.detail)
    if cls is SpaceQuotaExceeded:
        return SpaceQuotaExceeded(info.message, quota_bytes=_int(info.detail, "quota_bytes"),
                                  used_bytes=_int(info.detail, "used_bytes"))
    return cls(info.message)


def _int(detail: dict[str, Any], name: str) -> int:
    number = detail.get(name)
    return number if isinstance(number, int) else 0


_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


def _checked(call: str, cls: type[_M], **fields: Any) -> _M:
    """Build a command or request from a public call's arguments, or raise the typed error.

    Every public method validates here, before anything is sent: a bad argument is an
    :class:`InvalidCommand` naming the call, the argument and the bound it broke (a bad key or
    value keeps its more precise :class:`InvalidKey` / :class:`InvalidValue`), never a raw
    ``pydantic.ValidationError``; integers must also fit the wire's 64 bits."""
    try:
        model = cls(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or cls.__name__
        shown = repr(first.get("input"))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise InvalidCommand(f"{call}: {where}: {first['msg']} (got {shown})") from None
    for name in type(model).model_fields:
        number = getattr(model, name)
        if isinstance(number, int) and not isinstance(number, bool) \
                and not INT_MIN <= number <= INT_MAX:
            raise InvalidCommand(f"{call}: {name}: must fit in a signed 64-bit integer "
                                 f"(got {number})")
    return model


def _seconds(call: str, name: str, value: object, *, optional: bool = False) -> float | None:
    """A positive, finite number of seconds (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise InvalidCommand(f"{call}: {name} must be a positive finite number of seconds "
                             f"(got {value!r:.80})")
    return float(value)


_UNDEDUPLICABLE = (
    "the session expired while an attempt of this command may have applied: its outcome can no "
    "longer be learned, and sending it again could apply it twice; read the board and decide "
    "(a further call is sent as a new command)")


class _Refused(Exception):
    """An endpoint refused this client in the handshake: its secret, or the replica is at its
    connection cap (wrapped so the caller knows which endpoint)."""

    def __init__(self, address: str, error: AuthError | TooManyConnections) -> None:
        super().__init__(str(error))
        self.address = address
        self.error = error


class _Acks:
    """A watch's acknowledgements: the client tells the replica how many bytes of batches it
    has consumed once they add up to a quarter of the watch's buffer (the replica cancels a
    watch whose whole buffer stays unconsumed), so a watcher that keeps up costs one small
    frame per quarter buffer of events, and a stalled one stops acknowledging by itself."""

    __slots__ = ("buffer_bytes", "link", "pending_bytes", "watch")

    def __init__(self, link: _Link, watch: int) -> None:
        self.link = link
        self.watch = watch
        self.buffer_bytes = 0  # from the watch's first reply; 0: the replica wants no acks
        self.pending_bytes = 0

    def consumed(self, size_bytes: int) -> None:
        if self.buffer_bytes <= 0:
            return
        self.pending_bytes += size_bytes
        if self.pending_bytes >= self.buffer_bytes // 4:
            self.link.send(WatchAckReq(watch=self.watch, consumed_bytes=self.pending_bytes))
            self.pending_bytes = 0


class _Lost(Exception):
    """The connection died; ``sent`` says whether the request had been written."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def _set_kernel_timeout(sock: socket.socket, option: int, timeout_s: float) -> None:
    """Set SO_RCVTIMEO or SO_SNDTIMEO (a ``struct timeval``; at least 1 ms, never 0 = forever)."""
    usec = max(1_000, round(timeout_s * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", usec // 1_000_000,
                                                           usec % 1_000_000))


class _Link:
    """One authenticated connection to one replica.

    There is no reader thread: a caller waiting for its reply reads the socket itself while it
    holds the read lock, routing any other reply or watch batch to its owner's box (the
    leader/follower pattern). With one request in flight per link, the usual case for an agent,
    a reply costs no thread switch at all.

    ``reader=True`` (a :class:`Connection` shared by many Boards): one thread reads the socket
    and routes every message, and callers block on their own box. With hundreds of callers
    waiting on one link, taking turns at the socket would cost each of them a poll every
    :data:`HANDOFF_SLICE_S`; a reader thread costs one thread switch per message.
    """

    def __init__(self, address: str, secret: bytes | None, identity: str,
                 timeout_s: float = CONNECT_TIMEOUT_S, *, reader: bool = False) -> None:
        self.address = address
        host, _, port = address.rpartition(":")
        self._sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._channel = Channel(secret, new_nonce(), initiator=True, label=CLIENT_LABEL)
        self._decoder = FrameDecoder(HELLO_BYTES_MAX)
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiters: dict[int, queue.SimpleQueue[Reply | WatchBatch | None]] = {}
        self._waiters_lock = threading.Lock()
        self._streams: set[int] = set()
        self.closed = False
        self._received_at = 0.0
        try:
            self._handshake(identity)
        except AuthError as exc:
            self._sock.close()
            if exc.secret_mismatch:
                raise AuthError(
                    f"{address}: {exc}: the cluster secret given to this client (secret=, "
                    "QUORUMBOARD_SECRET) does not match the replica's (or only one side has one)",
                    secret_mismatch=True) from None
            raise ProtocolError(f"{address}: handshake failed ({exc}): is this a quorumboard "
                                "client port?") from None
        except TooManyConnections as exc:
            self._sock.close()
            raise TooManyConnections(
                f"{address}: {exc}: wait for connections to close, raise the replica's "
                "connections_max, or open fewer Boards and watches", limit=exc.limit) from None
        except Exception:
            self._sock.close()
            raise
        # From here on the socket is blocking with kernel timeouts (SO_RCVTIMEO/SO_SNDTIMEO):
        # a wait for a reply is one recv syscall, where Python's own timeout mode costs a poll,
        # and changing it two ioctls. Every syscall releases and retakes the GIL, which with
        # many agent threads in one process is where a client's CPU went.
        self._sock.settimeout(None)
        self._send_timeout_s = SEND_TIMEOUT_S
        _set_kernel_timeout(self._sock, socket.SO_SNDTIMEO, SEND_TIMEOUT_S)
        self._recv_timeout_s = READ_SLICE_S
        _set_kernel_timeout(self._sock, socket.SO_RCVTIMEO, READ_SLICE_S)
        self._decoder.set_limit(REPLY_FRAME_BYTES_MAX + SEAL_OVERHEAD_BYTES)
        self._reader: threading.Thread | None = None
        if reader:
            self._reader = threading.Thread(target=self._read_forever, daemon=True,
                                            name=f"board-link-{address}")
            self._reader.start()

    def _read_forever(self) -> None:
        """The reader thread: route every message until the link closes."""
        with self._read_lock:
            for _ in range(2**62):  # bounded by the link's life
                if self.closed:
                    return
                try:
                    self._read_once(READ_SLICE_S)
                except Exception as exc:  # never leave callers waiting on a dead reader
                    self.close(reason=f"reader failed: {type(exc).__name__}: {exc}")

    @property
    def idle(self) -> bool:
        """No request or watch is waiting on this link."""
        with self._waiters_lock:
            return not self._waiters

    def _handshake(self, identity: str) -> None:
        self._sock.sendall(encode_frame(self._channel.hello(identity)))
        pending: list[bytes] = []

        def next_frame() -> bytes:
            for _ in range(HELLO_BYTES_MAX):
                if pending:
                    return pending.pop(0)
                data = self._sock.recv(HELLO_BYTES_MAX)
                if not data:
                    raise ProtocolError(f"{self.address} closed the connection in the handshake")
                pending.extend(self._decoder.feed(data))
            raise ProtocolError("handshake did not complete")

        self._channel.accept_hello(next_frame())
        self._sock.sendall(encode_frame(self._channel.proof()))
        self._channel.accept_proof(next_frame())

    def _read_once(self, timeout_s: float) -> None:
        """Read what the socket has within ``timeout_s`` and route it (read lock held)."""
        try:
            if timeout_s <= 0:
                data = self._sock.recv(2**16, socket.MSG_DONTWAIT)
            else:
                if timeout_s != self._recv_timeout_s:  # the last slice before a deadline
                    _set_kernel_timeout(self._sock, socket.SO_RCVTIMEO, timeout_s)
                    self._recv_timeout_s = timeout_s
                data = self._sock.recv(2**16)
        except (TimeoutError, BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        self._received_at = time.monotonic()
        try:
            for frame in self._decoder.feed(data):
                self._route(self._channel.open(frame))
        except (BoardError, ValueError, TypeError) as exc:  # bad bytes: this link is done
            self.close(reason=str(exc))

    def _route(self, payload: bytes) -> None:
        obj = msgpack.unpackb(payload, raw=False)
        msg: Reply | WatchBatch = (WatchBatch.model_validate(obj)
                                   if isinstance(obj, dict) and obj.get("watch")
                                   else Reply.model_validate(obj))
        with self._waiters_lock:
            box = self._waiters.get(msg.id)
            if box is not None and isinstance(msg, Reply) and msg.id not in self._streams:
                del self._waiters[msg.id]
            also = [self._waiters.get(i) for i in msg.also] \
                if isinstance(msg, WatchBatch) and msg.also else []
        if box is not None:
            box.put(msg)
        for other in also:  # the same batch for more watches on this link
            if other is not None:
                other.put(msg)

    def wait(self, box: queue.SimpleQueue[Any], timeout_s: float | None) -> Any:
        """The next message for ``box`` (``None`` once the link closed); raises
        :class:`queue.Empty` after ``timeout_s`` (``None``: no limit)."""
        if self._reader is not None:  # the reader routes; close() puts None in every box
            return box.get(timeout=timeout_s)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for _ in range(2**62):  # bounded by the deadline or the link's life
            try:
                return box.get_nowait()
            except queue.Empty:
                pass
            if self.closed:
                return None
            remaining = READ_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise queue.Empty
            if self._read_lock.acquire(blocking=False):
                try:
                    try:  # a reader that just left may have routed our message
                        return box.get_nowait()
                    except queue.Empty:
                        pass
                    self._read_once(min(remaining, READ_SLICE_S))
                finally:
                    self._read_lock.release()
            else:  # another caller is reading: it will route our message to the box
                try:
                    return box.get(timeout=min(remaining, HANDOFF_SLICE_S))
                except queue.Empty:
                    continue
        raise queue.Empty

    def open_box(self, stream: bool = False) -> tuple[int, queue.SimpleQueue[Any]]:
        rid = next(self._ids)
        box: queue.SimpleQueue[Reply | WatchBatch | None] = queue.SimpleQueue()
        with self._waiters_lock:
            if self.closed:
                raise _Lost(f"connection to {self.address} is closed", sent=False)
            self._waiters[rid] = box
            if stream:
                self._streams.add(rid)
        return rid, box

    def _notice_close(self) -> None:
        """Before sending: if the replica already closed this link, find out now (sent=False)."""
        if time.monotonic() - self._received_at < CLOSE_CHECK_IDLE_S:
            pass
        elif self._read_lock.acquire(blocking=False):
            try:
                self._read_once(0.0)
            finally:
                self._read_lock.release()
        if self.closed:
            raise _Lost(f"connection to {self.address} is closed", sent=False)

    def send(self, message: Any, timeout_s: float = SEND_TIMEOUT_S,
             stamp: dict[str, Any] | None = None) -> None:
        """Send ``message``; a replica that stops reading fails it after about ``timeout_s``
        (at most SEND_TIMEOUT_S, rounded up to 0.1 s so the socket option rarely changes).
        ``stamp``: fields sent in place of the message's own (an attempt's ``id`` and
        ``budget_s``), as ``model_copy(update=...)`` set them before, without copying the
        model: that did not validate them either, and :meth:`request` builds both in range."""
        payload = encode(message, stamp)
        limit_s = min(SEND_TIMEOUT_S, max(0.1, math.ceil(timeout_s * 10) / 10))
        try:
            with self._send_lock:  # seal and send together: counters must hit the wire in order
                if limit_s != self._send_timeout_s:
                    _set_kernel_timeout(self._sock, socket.SO_SNDTIMEO, limit_s)
                    self._send_timeout_s = limit_s
                self._sock.sendall(encode_frame(self._channel.seal(payload)))
        except OSError as exc:
            self.close()
            raise _Lost(f"send to {self.address} failed: {exc}", sent=True) from None

    def request(self, build: Callable[[int], Any], timeout_s: float) -> Reply:
        """Send ``build(rid)`` and wait up to ``timeout_s`` for its reply. A proposal or read
        carries that wait as its budget: the one time limit from here to the Raft log. Its
        attempt's fields (``id`` and ``budget_s``) are stamped here in one copy, so a read's
        builder hands over the request it validated once, for every attempt."""
        rid, box = self.open_box()
        try:
            self._notice_close()
            message = build(rid)
            stamp = {"id": rid, "budget_s": _budget(timeout_s)} \
                if isinstance(message, ProposeReq | ReadReq) else None
            self.send(message, timeout_s, stamp)
            try:
                msg = self.wait(box, timeout_s)
            except queue.Empty:
                raise _Lost(f"no reply from {self.address} in {timeout_s:.1f}s", sent=True) \
                    from None
            if msg is None:
                raise _Lost(f"connection to {self.address} lost", sent=True)
            if not isinstance(msg, Reply):
                raise ProtocolError("watch batch where a reply was expected")
            return msg
        finally:
            with self._waiters_lock:
                self._waiters.pop(rid, None)

    def forget(self, rid: int) -> None:
        with self._waiters_lock:
            self._waiters.pop(rid, None)
            self._streams.discard(rid)

    def end_stream(self, rid: int) -> None:
        """End watch ``rid`` on this link, which goes on serving everything else: its box
        gets ``None`` (its reader stops waiting) and the replica is told to cancel it. The
        cancel is best effort: one the replica never gets costs it one watch buffer until it
        cancels the unread watch as slow."""
        with self._waiters_lock:
            box = self._waiters.pop(rid, None)
            self._streams.discard(rid)
        if box is None:
            return
        box.put(None)
        # A stream ended by the garbage collector may run on a thread that is inside send():
        # never wait long for the send lock.
        if not self.closed and self._send_lock.acquire(timeout=HANDOFF_SLICE_S * 50):
            try:
                self._sock.sendall(encode_frame(self._channel.seal(
                    encode(CancelReq(id=0, watch=rid)))))
            except OSError:  # maybe half a frame sent: the link's framing is lost
                self.close()
            finally:
                self._send_lock.release()

    def close(self, reason: str = "") -> None:
        with self._waiters_lock:
            if self.closed:
                return
            self.closed = True
            boxes = list(self._waiters.values())
            self._waiters.clear()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()
        for box in boxes:
            box.put(None)


class Connection:
    """Connections to one cluster, at most one per replica, shared by the Boards on it.

    Made by :func:`connect_shared` (many Boards of one process on one ``Connection``: one
    socket per replica instead of one or two per agent) or, privately, by every Board made
    without one. Each Board keeps its own agent name, session and sequence numbers, so
    exactly-once retries, leases and claims stay per Board; the Connection holds only the
    sockets and which replica is believed to lead. Requests of every Board go to the leader's
    socket; watches go to the replica each Board is assigned (Boards in turn over the
    replicas, so fan-out is spread over the cluster), multiplexed on that replica's socket
    with each watch's own id, acknowledgements and buffer.

    A shared Connection reads each socket on a thread of its own (see :class:`_Link`); a
    private one has its callers read. Closing a Board on a shared Connection closes the
    Board's session and watches, not the sockets: :meth:`close` the Connection (or use it as
    a context manager) when its Boards are done."""

    def __init__(self, endpoints: list[str], *, secret: bytes | None = None,
                 name: str = "shared", shared: bool = True) -> None:
        self.endpoints = _check_endpoints(endpoints)
        if (secret is not None and not isinstance(secret, bytes)) or secret == b"":
            raise InvalidCommand("secret must be non-empty bytes or None")
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise InvalidCommand(f"name must be a string of 1..128 characters "
                                 f"(got {name!r:.80})")
        self.secret = secret
        self.name = name
        self.shared = shared
        self._identity = f"process:{name}" if shared else f"agent:{name}"
        self._lock = threading.Lock()
        self._links: dict[str, _Link] = {}
        self._leader: _Link | None = None
        self._hint: str | None = None
        self._next_endpoint = 0
        self._ordinals = itertools.count()
        self.closed = False

    @property
    def leader(self) -> _Link | None:
        """The socket to the replica believed to lead, if one is open."""
        with self._lock:
            link = self._leader
        return link if link is not None and not link.closed else None

    def connections(self) -> builtins.list[str]:
        """The replicas this Connection has a socket open to now."""
        with self._lock:
            return sorted(a for a, link in self._links.items() if not link.closed)

    def next_ordinal(self) -> int:
        """A Board's place among this Connection's Boards (which replica serves its watches)."""
        return next(self._ordinals)

    def board(self, agent: str, *, timeout_s: float = 15.0) -> Board:
        """A :class:`Board` for ``agent`` on this Connection, with its own session."""
        return Board(self.endpoints, agent, secret=self.secret, timeout_s=timeout_s, conn=self)

    def open(self, address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> _Link:
        """The socket to ``address``: the open one, or a new one."""
        with self._lock:
            if self.closed:
                raise Unavailable("connection is closed")
            link = self._links.get(address)
        if link is not None and not link.closed:
            return link
        link = _Link(address, self.secret, self._identity, reader=self.shared,
                     timeout_s=max(CONNECT_MIN_S, min(CONNECT_TIMEOUT_S, timeout_s)))
        with self._lock:
            other = self._links.get(address)
            closed = self.closed
            if not closed and (other is None or other.closed):
                self._links[address] = link
                return link
        link.close()  # another caller connected first, or the Connection closed meanwhile
        if closed or other is None:
            raise Unavailable("connection is closed")
        return other

    def leader_link(self, timeout_s: float = CONNECT_TIMEOUT_S) -> _Link:
        """The socket to the believed leader (hint first, then the endpoints in turn); raises
        :class:`_Refused` or :class:`_Lost`."""
        with self._lock:
            if self.closed:
                raise Unavailable("connection is closed")
            link = self._leader
            if link is not None and not link.closed:
                return link
            hint, self._hint = self._hint, None
            if hint is None:
                hint = self.endpoints[self._next_endpoint % len(self.endpoints)]
                self._next_endpoint += 1
        try:
            link = self.open(hint, timeout_s)
        except (AuthError, TooManyConnections) as exc:
            raise _Refused(hint, exc) from None
        except Unavailable:
            raise
        except (OSError, BoardError) as exc:
            raise _Lost(f"cannot connect to {hint}: {exc}", sent=False) from None
        with self._lock:
            if self._leader is None or self._leader.closed:
                self._leader = link
        return link

    def drop(self, link: _Link | None, hint: str | None = None) -> None:
        """``link``'s replica could not serve a request (not the leader, no quorum): stop
        sending requests there (to ``hint`` next, if given), and close the socket unless
        watches or other requests still use it."""
        with self._lock:
            if link is not None and self._leader is link:
                self._leader = None
            if hint:
                self._hint = hint
        if link is not None:
            self.release(link)

    def lost(self, link: _Link) -> None:
        """``link`` died or stopped answering: close it (everything on it resumes elsewhere)."""
        with self._lock:
            if self._leader is link:
                self._leader = None
            if self._links.get(link.address) is link:
                del self._links[link.address]
        link.close()

    def release(self, link: _Link) -> None:
        """Close ``link`` if it is not the leader's socket and nothing waits on it: a socket
        no longer used must not linger (it counts against the replica's connection cap)."""
        with self._lock:
            if self._leader is link or not link.idle:
                return
            if self._links.get(link.address) is link:
                del self._links[link.address]
        link.close()

    def close(self) -> None:
        """Close every socket (the Boards on this Connection can no longer reach the cluster:
        close them first, to close their sessions)."""
        with self._lock:
            self.closed = True
            links, self._links, self._leader = builtins.list(self._links.values()), {}, None
        for link in links:
            link.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_PRIVATE_ORDINALS = itertools.count()
"""Boards on private Connections take turns over the replicas for their watches too."""


class Board:
    """A blackboard handle with an agent identity. Create with :func:`connect` or
    ``LocalCluster.board()``. Every write returns only after a Raft quorum committed it."""

    def __init__(self, endpoints: list[str], agent: str, *, secret: bytes | None = None,
                 timeout_s: float = 15.0, conn: Connection | None = None) -> None:
        self.endpoints = _check_endpoints(endpoints)
        if not isinstance(agent, str) or not 0 < len(agent) <= 128:
            raise InvalidCommand(f"agent must be a string of 1..128 characters (got {agent!r:.80})")
        if (secret is not None and not isinstance(secret, bytes)) or secret == b"":
            raise InvalidCommand("secret must be non-empty bytes or None")
        self.agent = agent
        self.timeout_s = _seconds("Board", "timeout_s", timeout_s) or 0.0
        self._secret = secret
        self._lock = threading.Lock()
        self._conn, self._ordinal = self._attach(conn)
        self._watch_slot = self._ordinal % len(self.endpoints)
        self._watches: set[tuple[_Link, int]] = set()
        self._session = 0
        self._seq = 0
        self._outstanding: set[int] = set()
        self._unknown: dict[bytes, tuple[int, int]] = {}
        self._closed = False

    # ------------------------------------------------------------------------ connections

    def _attach(self, conn: Connection | None) -> tuple[Connection, int]:
        """This Board's :class:`Connection` (a private one unless ``conn`` is given, which must
        be to the same cluster, with the same secret) and its ordinal there."""
        if conn is None:
            return (Connection(self.endpoints, secret=self._secret, name=self.agent,
                               shared=False), next(_PRIVATE_ORDINALS))
        if not isinstance(conn, Connection):
            raise InvalidCommand(f"conn must be a Connection from connect_shared() "
                                 f"(got {type(conn).__name__})")
        if sorted(conn.endpoints) != sorted(self.endpoints) or conn.secret != self._secret:
            raise InvalidCommand("conn is a Connection to other endpoints or with another "
                                 "secret than this Board's: make the Board with conn.board()")
        if conn.closed:
            raise InvalidCommand("conn is closed")
        return conn, conn.next_ordinal()

    @property
    def connection(self) -> Connection:
        """The :class:`Connection` this Board's requests and watches travel on."""
        return self._conn

    @property
    def _link(self) -> _Link | None:
        """The socket requests go to now (the believed leader's), if open."""
        return self._conn.leader

    @property
    def watch_address(self) -> str:
        """The replica this Board's watches are served by now (they move on a failure)."""
        with self._lock:
            return self.endpoints[self._watch_slot]

    def _leader_link(self, timeout_s: float = CONNECT_TIMEOUT_S) -> _Link:
        if self._closed:
            raise Unavailable("board is closed")
        return self._conn.leader_link(timeout_s)

    def _drop(self, link: _Link | None, hint: str | None = None) -> None:
        self._conn.drop(link, hint)

    def _call(self, build: Callable[[int], Any], *, idempotent: bool,
              deadline_s: float | None = None) -> Reply:
        return self._call_tracked(build, idempotent=idempotent, deadline_s=deadline_s)[0]

    def _call_tracked(self, build: Callable[[int], Any], *, idempotent: bool,
                      deadline_s: float | None = None) -> tuple[Reply, bool]:
        """Send a request to the leader until a definitive reply, within the deadline.

        Returns the reply and whether an *earlier* attempt may already have been applied.
        Non-idempotent requests (proposals) are only ever re-sent with the same session and
        seq, which the state machine deduplicates, so re-sending is safe for both kinds."""
        deadline = time.monotonic() + (deadline_s or self.timeout_s)
        maybe_applied = False
        last = "no attempt made"
        refused: set[str] = set()
        capped: TooManyConnections | None = None  # the last attempt met a replica's cap
        for attempt in range(ATTEMPTS_MAX):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            link: _Link | None = None
            try:
                # Connecting counts against the call's deadline: a replica that accepts the TCP
                # connection but is stopped (SIGSTOP, a VM stall) must not hold the call for
                # the whole connect timeout past its deadline.
                link = self._leader_link(remaining)
                reply = link.request(build, min(remaining, ATTEMPT_TIMEOUT_S))
            except _Refused as refusal:
                _raise_if_all_refused(refusal, refused, self.endpoints)
                last = str(refusal)
                if isinstance(refusal.error, TooManyConnections):
                    capped = refusal.error  # connections may free up: try again after a pause
                    _backoff(attempt, deadline)
                continue  # a stale endpoint (another cluster's replica): try the others
            except _Lost as lost:
                capped = None
                maybe_applied = maybe_applied or lost.sent
                last = str(lost)
                if link is not None:
                    self._conn.lost(link)
                _backoff(attempt, deadline)
                continue
            capped = None
            failure = reply.wire_error
            if failure is None:
                return reply, maybe_applied
            last = f"{failure}: {reply.message}"
            if failure in _RETRY_ELSEWHERE:
                maybe_applied = maybe_applied or failure is Failure.OUTCOME_UNKNOWN
                # Move on: to the hinted leader, or (no hint: a replica cut off from its
                # majority knows none) to the next endpoint, instead of asking again the
                # replica that just could not serve until the deadline runs out. A hint to
                # follow needs no pause.
                self._drop(link, reply.leader_hint or None)
                if failure is not Failure.NOT_LEADER or reply.leader_hint is None:
                    _backoff(attempt, deadline)
                continue
            raise _final_error(reply, uncertain=maybe_applied and not idempotent)
        if maybe_applied and not idempotent:
            raise OutcomeUnknown(f"outcome unknown after retries until the deadline ({last}); "
                                 "retrying through this Board is safe")
        if capped is not None:  # the deadline ran out at a replica's cap: say so, typed
            raise capped
        raise Unavailable(f"no replica could serve the request in time ({last})")

    # --------------------------------------------------------------------------- sessions

    def _ensure_session(self) -> int:
        with self._lock:
            if self._session:
                return self._session
        reply = self._call(lambda rid: ProposeReq(id=rid, proposal=Proposal(
            agent=self.agent, command=OpenSession())), idempotent=True)
        session = reply.result.session if reply.result else None
        if not session:
            raise Unavailable("could not open a session")
        with self._lock:
            if not self._session:
                self._session = session
            return self._session

    def _identity(self, command: Command) -> tuple[int, int, bool]:
        """(session, seq, reused) for ``command``: the numbers of an identical command whose
        outcome is unknown (so this call is its retry and applies at most once; ``reused``), or
        fresh ones.

        Raises :class:`SessionExpired` when such an identical command exists but its session
        has expired since: the table that would deduplicate the retry is gone, so sending it
        under new numbers could apply it twice (found by proofs/spin/sessions.pml -DEVICT)."""
        with self._lock:
            pending_unknown = bool(self._unknown)
        ident = encode(command) if pending_unknown else b""  # the usual case: nothing to match
        with self._lock:
            reuse = self._unknown.pop(ident, None) if ident else None
            if reuse is not None:
                if reuse[0] == self._session:
                    return reuse[0], reuse[1], True
                self._outstanding.discard(reuse[1])
                raise SessionExpired(_UNDEDUPLICABLE)
        session = self._ensure_session()
        with self._lock:
            self._seq += 1
            self._outstanding.add(self._seq)
            return session, self._seq, False

    def _remember_unknown(self, command: Command, session: int, seq: int) -> None:
        """Keep an unknown outcome's seq unacknowledged (its result stays cached on the
        cluster) and reusable by a retry of the same command; bounded, oldest dropped."""
        with self._lock:
            self._unknown[encode(command)] = (session, seq)
            while len(self._unknown) > UNKNOWN_RETAINED_MAX:
                _, old_seq = self._unknown.pop(next(iter(self._unknown)))
                self._outstanding.discard(old_seq)

    def _propose(self, command: Command) -> Result:
        for _ in range(2):  # a second pass only after the session expired before anything applied
            session, seq, reused = self._identity(command)
            unknown = False
            try:
                def build(rid: int, session: int = session, seq: int = seq) -> ProposeReq:
                    with self._lock:
                        floor = min(self._outstanding, default=seq)
                    return ProposeReq(id=rid, proposal=Proposal(
                        agent=self.agent, session=session, seq=seq, acked_below=floor,
                        command=command))

                reply, retried = self._call_tracked(build, idempotent=False)
            except OutcomeUnknown:
                unknown = True
                self._remember_unknown(command, session, seq)
                raise
            finally:
                if not unknown:
                    with self._lock:
                        self._outstanding.discard(seq)
            result = reply.result
            if result is None:
                raise ProtocolError("proposal reply carried no result")
            if result.error is not None and result.error.code == "session_expired":
                with self._lock:
                    if self._session == session:
                        self._session = 0
                if retried or reused:  # an attempt (of this call or its first) may have applied
                    raise SessionExpired(_UNDEDUPLICABLE) from error_from(result.error)
                continue  # nothing of this request applied: reopen a session and send it again
            if result.error is not None:
                raise error_from(result.error)
            return result
        raise SessionExpired("session expired twice in a row")

    # ------------------------------------------------------------------------------ writes

    def put(self, key: str, value: Value, *, expect_version: int | None = None,
            lease: int | LeaseInfo | Claim | None = None,
            fence: Claim | FenceRef | None = None) -> Entry:
        """Write ``value`` at ``key`` under the key's conflict policy; returns the new version.

        ``expect_version``: compare-and-set (0 = create only). ``lease``: delete the key when
        that lease ends. ``fence``: refuse unless this claim is still current. Raises a
        :class:`Conflict` subclass if refused (nothing is written), :class:`OutcomeUnknown` /
        :class:`Unavailable` if the cluster could not answer (retrying is safe). Under the
        ``vote`` policy nothing is written yet: use :meth:`propose`.
        """
        result = self._propose(_checked("put", PutCmd, key=check_key(key), value=value,
                                        expect_version=expect_version,
                                        lease=_lease_id("put", lease),
                                        fence=_fence("put", fence)))
        if result.entry is None:
            pending = result.pending
            raise PolicyRejected(
                f"{key} is under the vote policy: the edit is pending as proposal "
                f"{pending.id if pending else '?'}; use propose() to get it",
                policy="vote", reason="pending",
                detail={"proposal": pending.id if pending else None})
        return result.entry

    def propose(self, key: str, value: Value, *,
                expect_version: int | None = None) -> Entry | Pending:
        """Put under any policy; under ``vote`` returns the :class:`Pending` proposal."""
        result = self._propose(_checked("propose", PutCmd, key=check_key(key), value=value,
                                        expect_version=expect_version))
        return result.entry if result.entry is not None and result.pending is None \
            else _pending_or_entry(result)

    def vote(self, key: str, proposal: int | Pending, approve: bool = True) -> Entry | Pending:
        """Approve or reject a pending edit; returns the written entry once it is approved."""
        pid = proposal.id if isinstance(proposal, Pending) else proposal
        return _pending_or_entry(self._propose(_checked("vote", VoteCmd, key=check_key(key),
                                                        proposal=pid, approve=approve)))

    def withdraw(self, key: str, proposal: int | Pending) -> Pending:
        """Withdraw your own pending edit."""
        pid = proposal.id if isinstance(proposal, Pending) else proposal
        result = self._propose(_checked("withdraw", WithdrawCmd, key=check_key(key),
                                        proposal=pid))
        if result.pending is None:
            raise ProtocolError("withdraw reply carried no proposal")
        return result.pending

    def delete(self, key: str, *, expect_version: int | None = None,
               fence: Claim | FenceRef | None = None) -> Entry:
        """Delete ``key`` (under its policy); returns the last version. :class:`NotFound` if
        it does not exist."""
        result = self._propose(_checked("delete", DeleteCmd, key=check_key(key),
                                        expect_version=expect_version,
                                        fence=_fence("delete", fence)))
        if result.entry is None:
            raise ProtocolError("delete reply carried no entry")
        return result.entry

    def grant(self, ttl: float) -> LeaseInfo:
        """A new lease of ``ttl`` seconds (a minimum: expiry is decided by the leader's clock)."""
        return _lease_of(self._propose(_checked("grant", GrantCmd, ttl=ttl)))

    def keepalive(self, lease: int | LeaseInfo | Claim) -> LeaseInfo:
        """Restart the lease's countdown. :class:`NotFound` once it has expired."""
        return _lease_of(self._propose(_checked("keepalive", KeepAliveCmd,
                                                lease=_need_lease("keepalive", lease))))

    def revoke(self, lease: int | LeaseInfo | Claim) -> LeaseInfo:
        """End the lease now: its keys are deleted, its claims released."""
        return _lease_of(self._propose(_checked("revoke", RevokeCmd,
                                                lease=_need_lease("revoke", lease))))

    def claim(self, key: str, ttl: float, value: Value = None) -> Claim:
        """Take exclusive ownership of ``key`` for ``ttl`` seconds (renew with
        :meth:`keepalive`). Raises :class:`ClaimHeld` while another agent holds it. The
        claim's ``fence`` grows with every new owner; pass ``fence=claim`` to guarded writes."""
        result = self._propose(_checked("claim", ClaimCmd, key=check_key(key), ttl=ttl,
                                        value=value))
        if result.claim is None:
            raise ProtocolError("claim reply carried no claim")
        return result.claim

    def release(self, claim: Claim) -> None:
        """Give a claim up (revokes its lease, deleting the claimed key)."""
        if not isinstance(claim, Claim):
            raise InvalidCommand(f"release: claim must be a Claim from claim() "
                                 f"(got {type(claim).__name__})")
        self.revoke(claim.lease)

    def set_policy(self, prefix: str, name: str, **params: Any) -> None:
        """Bind conflict policy ``name`` to every key under ``prefix`` (a committed change)."""
        self._propose(_checked("set_policy", SetPolicyCmd, prefix=check_prefix(prefix),
                               name=name, params=params))

    # ------------------------------------------------------------------------------- reads

    def _read(self, what: ReadKind, *, key: str = "", lease: int = 0, limit: int = 10_000,
              stale: bool = False, start_after: str = "") -> Reply:
        request = _checked(what, ReadReq, id=0, what=what, key=key, lease=lease, limit=limit,
                           stale=stale, start_after=start_after)
        return self._send_read(request)

    def _send_read(self, request: ReadReq) -> Reply:
        reply = self._call(lambda _rid: request, idempotent=True)  # request() stamps the id
        if reply.error is not None and reply.error.code != "not_found":
            raise error_from(reply.error)
        return reply

    def get(self, key: str, *, stale: bool = False) -> Entry | None:
        """The key's current entry, or ``None``. Linearizable unless ``stale=True`` (then
        served from the connected replica's applied state, possibly behind)."""
        return self._read("get", key=check_key(key), stale=stale).entry

    def list(self, prefix: str = "", *, stale: bool = False, limit: int = 10_000,
             start_after: str = "") -> builtins.list[Entry]:
        """Entries under ``prefix`` in key order (at most ``limit``), after the key
        ``start_after`` if given (the last key of the previous page, to page through a prefix).

        A listing larger than one reply (8 MiB of values) is read in pages, each page a
        linearizable read of its own: the whole list is then not one snapshot (compare the
        entries' ``revision``)."""
        first = _checked("list", ReadReq, id=0, what="list", key=check_prefix(prefix),
                         limit=limit, stale=stale, start_after=start_after)
        return self._paged(first, lambda reply: reply.entries,
                           lambda entry: {"start_after": entry.key})

    def _paged(self, first: ReadReq, items: Callable[[Reply], builtins.list[_T] | None],
               resume: Callable[[_T], dict[str, Any]]) -> builtins.list[_T]:
        """Up to ``first.limit`` items of a paged read: pages are read until the replica says
        there is no ``more``, each resuming after the last item of the previous one
        (``resume`` gives the request fields that say so). Each page is a linearizable read
        of its own."""
        limit = first.limit
        out: builtins.list[_T] = []
        request = first
        for _ in range(limit):  # bounded: every page holds at least one item
            reply = self._send_read(request.model_copy(update={"limit": limit - len(out)}))
            page = items(reply) or []
            out.extend(page)
            if not reply.more or not page or len(out) >= limit:
                break
            request = request.model_copy(update=resume(page[-1]))
        return out

    def claims(self, prefix: str = "", *, stale: bool = False,
               limit: int = 10_000) -> builtins.list[Claim]:
        """The current claims on keys under ``prefix``, in key order (at most ``limit``):
        who owns each, its fence and its lease (:meth:`leases` says how long it has left)."""
        first = _checked("claims", ReadReq, id=0, what="claims", key=check_prefix(prefix),
                         limit=limit, stale=stale)
        return self._paged(first, lambda reply: reply.claims,
                           lambda claim: {"start_after": claim.key})

    def policies(self, *, stale: bool = False,
                 limit: int = 10_000) -> builtins.list[PolicyBinding]:
        """The conflict policies bound to prefixes, by prefix (at most ``limit``); a key under
        none of them is under the default policy. The longest bound prefix of a key wins."""
        first = _checked("policies", ReadReq, id=0, what="policies", limit=limit, stale=stale)
        return self._paged(first, lambda reply: reply.policies,
                           lambda binding: {"start_after": binding.prefix})

    def leases(self, *, stale: bool = False,
               limit: int = 10_000) -> builtins.list[LeaseStatus]:
        """Every live lease by id (at most ``limit``): owner, TTL, its keys and claims, and the
        seconds left before the leader expires it (``time_left_s``, on the leader's clock).

        Served by the leader (the one clock that counts leases down). With ``stale=True`` the
        connected replica answers from its own state, and ``time_left_s`` is ``None`` unless
        it leads."""
        first = _checked("leases", ReadReq, id=0, what="leases", limit=limit, stale=stale)
        return self._paged(first, lambda reply: reply.leases,
                           lambda lease: {"lease": lease.id})

    def list_many(self, prefixes: builtins.list[str], *, stale: bool = False,
                  limit: int = 10_000) -> Listing:
        """Every entry under any of ``prefixes`` (at most 64), read together at one revision:
        one linearizable read (unless ``stale``) returning the entries and the revision it was
        read at.

        Rebuild a view from it and watch from ``listing.revision + 1``: no change is missed and
        none is seen twice. Two separate :meth:`list` calls cannot promise that (a change under
        the first prefix committed between them is in neither the lists nor the watch). A view
        larger than one reply (more than ``limit`` entries, or about 60 MiB) is refused with
        :class:`InvalidCommand`, never cut."""
        if not isinstance(prefixes, (builtins.list, tuple)):
            raise InvalidCommand(f"list_many: prefixes must be a list of prefixes "
                                 f"(got {type(prefixes).__name__})")
        request = _checked("list_many", ReadReq, id=0, what="list_many", limit=limit,
                           stale=stale, prefixes=[check_prefix(p) for p in prefixes])
        reply = self._send_read(request)
        return Listing(revision=reply.revision, entries=reply.entries or [])

    def history(self, key: str, *, limit: int = 10_000) -> builtins.list[HistoryRecord]:
        """Retained audit records of ``key``: every committed version and refused attempt, with
        author, policy and decision, oldest first."""
        return self._read("history", key=check_key(key), limit=limit).history or []

    def pending(self, key: str) -> builtins.list[Pending]:
        """Proposals (open and decided) on a ``vote`` key."""
        return self._read("pending", key=check_key(key)).pending or []

    def lease(self, lease: int | LeaseInfo | Claim) -> LeaseInfo | None:
        return self._read("lease", lease=_need_lease("lease", lease)).lease

    def status(self, *, digest: bool = False) -> ReplicaStatus:
        """The connected replica's view of the cluster; ``digest=True`` adds the SHA-256 of its
        applied state (replicas at the same applied index agree on it; it costs the replica a
        pass over its whole state)."""
        if not isinstance(digest, bool):
            raise InvalidCommand(f"status: digest must be a bool (got {digest!r:.80})")
        reply = self._call(lambda rid: StatusReq(id=rid, digest=digest), idempotent=True)
        if reply.status is None:
            raise ProtocolError("status reply carried no status")
        return reply.status

    def watch(self, prefix: str = "", start_revision: int | None = None, *,
              idle_timeout_s: float | None = None) -> Iterator[Event]:
        """Committed put/delete events under ``prefix`` in revision order, gap-free.

        ``start_revision=None`` starts after the current revision; ``0`` or ``1`` replays from
        the beginning. Survives replica failures (resumes on another replica from the next
        revision). Raises :class:`RevisionCompacted` if the start was compacted away. Ends after
        ``idle_timeout_s`` without events, if given.

        A caller that stops iterating while events keep coming holds at most the replica's
        watch buffer (``watch_buffer_bytes``): once it is a whole buffer behind, the replica
        cancels the watch, and the iterator yields what it was sent, then raises
        :class:`WatchCancelled`; watch again from its ``resume_revision`` to continue
        exactly once.

        The arguments are checked here, at the call (not at the first ``next()``).
        """
        request = _checked("watch", WatchReq, id=0, prefix=check_prefix(prefix),
                           start_revision=start_revision)
        idle_s = _seconds("watch", "idle_timeout_s", idle_timeout_s, optional=True)
        return self._watch(request.prefix, request.start_revision, idle_s)

    def _watch(self, prefix: str, start_revision: int | None,
               idle_timeout_s: float | None) -> Iterator[Event]:
        cursor = start_revision
        attempt = 0
        refused: set[str] = set()
        capped: TooManyConnections | None = None
        for _ in range(WATCH_RECONNECTS_MAX * 1_000):
            if attempt >= WATCH_RECONNECTS_MAX or self._closed or self._conn.closed:
                break
            address = self._watch_address()
            attempt += 1
            try:
                link = self._watch_link(address)
            except AuthError as exc:
                _raise_if_all_refused(_Refused(address, exc), refused, self.endpoints)
                self._watch_failed(address)
                continue
            except (OSError, BoardError, _Lost) as exc:
                if isinstance(exc, TooManyConnections):
                    capped = exc
                    _raise_if_all_refused(_Refused(address, exc), refused, self.endpoints)
                self._watch_failed(address)
                _backoff(attempt, time.monotonic() + BACKOFF_MAX_S)
                continue
            capped = None
            rid, box = link.open_box(stream=True)
            with self._lock:
                self._watches.add((link, rid))
            try:
                link.send(WatchReq(id=rid, prefix=prefix, start_revision=cursor))
                ack = _Acks(link, rid)
                # Idle means no *events*: progress batches (a replica that is partitioned away
                # keeps sending them, frozen at its last revision) do not keep a watch alive.
                idle_until = (None if idle_timeout_s is None
                              else time.monotonic() + idle_timeout_s)
                for _ in range(2**62):
                    try:
                        msg = link.wait(box, None if idle_until is None
                                        else max(0.0, idle_until - time.monotonic()))
                    except queue.Empty:
                        return
                    if msg is None:
                        break
                    if isinstance(msg, Reply):
                        if msg.wire_error is Failure.COMPACTED:
                            raise RevisionCompacted(msg.message,
                                                    compact_revision=msg.compact_revision)
                        if msg.wire_error is Failure.SLOW_WATCHER:
                            raise WatchCancelled(
                                f"{link.address}: {msg.message}",
                                resume_revision=msg.resume_revision
                                if msg.resume_revision is not None else cursor or 0)
                        if msg.wire_error:
                            break
                        if cursor is None:
                            cursor = msg.revision + 1
                        ack.buffer_bytes = msg.watch_buffer_bytes or 0
                        continue
                    attempt = 0  # progress: the reconnect budget starts over
                    if msg.events and idle_timeout_s is not None:
                        idle_until = time.monotonic() + idle_timeout_s
                    yield from msg.events
                    # ``through`` covers revisions without matching events too, so a quiet
                    # watch resumes from where the replica had read, not from its last event.
                    last = msg.events[-1].revision if msg.events else 0
                    cursor = max(cursor or 0, last + 1, msg.through + 1)
                    # The caller asked for the next event after this batch's last: the batch is
                    # consumed, and its share of the replica's watch buffer can be freed (after
                    # the cursor moved: a send that fails reconnects from past this batch).
                    ack.consumed(msg.size_bytes)
            except _Lost:
                pass
            finally:
                self._end_watch(link, rid)
            if self._closed or self._conn.closed:
                break
            self._watch_failed(address)
            _backoff(min(attempt, 5), time.monotonic() + BACKOFF_MAX_S)
        if capped is not None:
            raise capped
        raise Unavailable("board is closed" if self._closed or self._conn.closed
                          else "watch could not reconnect")

    async def wait_events(self, prefix: str, after_revision: int, *, timeout_s: float,
                          limit: int = 1_000) -> EventPage:
        """Long poll on asyncio: the committed events under ``prefix`` with revision
        ``> after_revision``, returned as soon as some exist, or none after ``timeout_s``.

        The same gap-free stream as :meth:`watch`, but awaitable, so an async server can hold
        many waits without a thread each, and cancelling the awaiting task ends the wait (its
        connection is closed). A replica lost mid-wait is replaced by the next endpoint, resuming
        after the last revision it reported. The page holds whole revisions: it is cut at
        ``limit`` events on a revision boundary (``more=True``), except that a single revision
        larger than ``limit`` comes whole. ``revision`` is the last revision covered, which is
        the replica's progress when no event came, and never below ``after_revision``. Raises
        :class:`RevisionCompacted` if ``after_revision + 1`` was compacted away, and
        :class:`Unavailable` if no replica accepted the wait at all (a timeout of 0 is a poll:
        it still gets :data:`WAIT_MIN_S` to connect).
        """
        if isinstance(after_revision, bool) or not isinstance(after_revision, int) \
                or not 0 <= after_revision < INT_MAX:
            raise InvalidCommand(f"wait_events: after_revision must be an integer >= 0 "
                                 f"(got {after_revision!r:.80})")
        request = _checked("wait_events", WatchReq, id=0, prefix=check_prefix(prefix),
                           start_revision=after_revision + 1)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
                or not math.isfinite(timeout_s) or timeout_s < 0:
            raise InvalidCommand(f"wait_events: timeout_s must be a finite number of seconds "
                                 f">= 0 (got {timeout_s!r:.80})")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidCommand(f"wait_events: limit must be an integer >= 1 (got {limit!r:.80})")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(WAIT_MIN_S, timeout_s)
        cursor = _WaitCursor(after_revision)
        last = "no attempt made"
        capped: TooManyConnections | None = None
        for attempt in range(WATCH_RECONNECTS_MAX):
            if self._closed:
                raise Unavailable("board is closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            address = self._watch_address()
            try:
                async with asyncio.timeout(remaining):
                    events = await self._next_events(address, request.prefix, cursor)
            except TimeoutError:
                break
            except RevisionCompacted:
                raise
            except (OSError, BoardError, _Lost, ValueError, TypeError) as exc:
                # The replica died, refused or sent garbage: resume on the next one.
                self._watch_failed(address)
                last = f"{type(exc).__name__}: {exc}"
                capped = exc if isinstance(exc, TooManyConnections) else None
                await asyncio.sleep(max(0.0, min(BACKOFF_MIN_S * 2 ** min(attempt, 4),
                                                 BACKOFF_MAX_S, deadline - loop.time())))
                continue
            cut = len(events)
            if cut > limit:
                cut = limit
                while cut > 0 and events[cut - 1].revision == events[cut].revision:
                    cut -= 1
                if cut == 0:  # one revision larger than the limit: never split a revision
                    first = events[0].revision
                    cut = sum(1 for e in events if e.revision == first)
            if cut < len(events):
                return EventPage(events[:cut], events[cut - 1].revision, True)
            return EventPage(events, max(cursor.revision, events[-1].revision), False)
        if not cursor.served:
            if capped is not None:  # the last replica tried was at its connection cap: typed
                raise capped
            raise Unavailable(f"no replica could serve the wait in time ({last})")
        return EventPage([], cursor.revision, False)

    async def _next_events(self, address: str, prefix: str, cursor: _WaitCursor
                           ) -> builtins.list[Event]:
        """One watch connection to ``address`` from ``cursor.revision + 1``: the first
        non-empty batch's events. The cursor follows the replica's ``through`` as batches
        arrive, so a caller that times out or loses the replica knows where to resume."""
        host, _, port = address.rpartition(":")
        try:  # a replica that does not answer must not use up the whole wait
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(host, int(port))
        except TimeoutError:
            raise _Lost(f"cannot connect to {address} in {CONNECT_TIMEOUT_S}s",
                        sent=False) from None
        try:
            channel = Channel(self._secret, new_nonce(), initiator=True, label=CLIENT_LABEL)
            decoder = FrameDecoder(HELLO_BYTES_MAX)
            frames: builtins.list[bytes] = []

            async def next_frame() -> bytes:
                for _ in range(2**62):  # bounded by the caller's deadline
                    if frames:
                        return frames.pop(0)
                    data = await reader.read(2**16)
                    if not data:
                        raise _Lost(f"{address} closed the connection", sent=False)
                    frames.extend(decoder.feed(data))
                raise _Lost("unreachable", sent=False)

            writer.write(encode_frame(channel.hello(f"agent:{self.agent}")))
            try:
                channel.accept_hello(await next_frame())
            except TooManyConnections as exc:
                raise TooManyConnections(f"{address}: {exc}", limit=exc.limit) from None
            writer.write(encode_frame(channel.proof()))
            channel.accept_proof(await next_frame())
            decoder.set_limit(REPLY_FRAME_BYTES_MAX + SEAL_OVERHEAD_BYTES)
            writer.write(encode_frame(channel.seal(encode(WatchReq(
                id=1, prefix=prefix, start_revision=cursor.revision + 1)))))
            await writer.drain()
            for _ in range(2**62):  # bounded by the caller's deadline
                obj = msgpack.unpackb(channel.open(await next_frame()), raw=False)
                if isinstance(obj, dict) and obj.get("watch"):
                    batch = WatchBatch.model_validate(obj)
                    cursor.revision = max(cursor.revision, batch.through)  # >= its last event
                    if batch.events:
                        return batch.events
                    continue
                reply = Reply.model_validate(obj)
                if reply.wire_error is Failure.COMPACTED:
                    raise RevisionCompacted(reply.message, compact_revision=reply.compact_revision)
                if reply.wire_error:
                    raise _Lost(f"{address}: {reply.wire_error}: {reply.message}", sent=False)
                cursor.served = True  # the watch is on: quiet from here on means no events
            raise _Lost("unreachable", sent=False)
        finally:
            writer.close()  # not awaited: a cancelled wait must end now, the loop finishes it

    def _watch_address(self) -> str:
        """The replica to (re)start a watch on: the one this Board's watches are assigned."""
        with self._lock:
            return self.endpoints[self._watch_slot]

    def _watch_failed(self, address: str) -> None:
        """A watch at ``address`` failed (the replica died, refused or cannot serve): this
        Board's watches move to another replica. Boards sharing a Connection step by 1 or 2
        by their ordinal, so those of a failed replica spread over the others rather than
        all moving to the next one."""
        count = len(self.endpoints)
        with self._lock:
            if count > 1 and self.endpoints[self._watch_slot] == address:
                self._watch_slot = (self._watch_slot + 1 + self._ordinal % (count - 1)) % count

    def _watch_link(self, address: str) -> _Link:
        """The socket a watch at ``address`` shares with this Board's other watches (and with
        its requests, when ``address`` is the leader)."""
        if self._closed:  # a closed board opens nothing (a watch must not reconnect forever)
            raise Unavailable("board is closed")
        return self._conn.open(address)

    def _end_watch(self, link: _Link, rid: int) -> None:
        """A watch ended (its iterator finished, raised or was dropped): free its stream on
        the shared socket, and the socket itself if nothing else uses it."""
        with self._lock:
            self._watches.discard((link, rid))
        link.end_stream(rid)
        if link.closed:
            self._conn.lost(link)
        else:
            self._conn.release(link)

    # ---------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the session (best effort) and end this Board's watches; on a private
        Connection also close the sockets (a shared one stays open for its other Boards)."""
        with self._lock:
            if self._closed:
                return
            session = self._session
        if session:
            with contextlib.suppress(BoardError):
                self._call(lambda rid: ProposeReq(id=rid, proposal=Proposal(
                    agent=self.agent, session=session, seq=self._seq + 1,
                    command=CloseSession())), idempotent=True, deadline_s=1.0)
        with self._lock:
            self._closed = True
            watches, self._watches = self._watches, set()
        for link, rid in watches:
            link.end_stream(rid)
        if self._conn.shared:
            for link, _ in watches:
                self._conn.release(link)
        else:
            self._conn.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def connect(endpoints: str | list[str], agent: str, *, secret: bytes | str | None = None,
            timeout_s: float = 15.0, conn: Connection | None = None) -> Board:
    """A :class:`Board` for ``agent`` on the cluster at ``endpoints`` (``"host:port,..."``,
    the replicas' client ports). Finds the leader and fails over by itself.

    ``conn``: a :class:`Connection` from :func:`connect_shared` to carry this Board on (same
    endpoints and secret), shared with the other Boards on it; by default the Board has its
    own sockets."""
    eps, key = _endpoints_and_secret(endpoints, secret)
    return Board(eps, agent, secret=key, timeout_s=timeout_s, conn=conn)


def connect_shared(endpoints: str | list[str], *, secret: bytes | str | None = None,
                   name: str = "shared") -> Connection:
    """A :class:`Connection` to the cluster at ``endpoints`` for many Boards of this process
    to share: at most one socket per replica, whatever the number of Boards and watches.
    Make each agent's Board with ``conn.board(agent)`` (or ``connect(..., conn=conn)``): each
    keeps its own session. ``name`` identifies the process to the replicas (their logs)."""
    eps, key = _endpoints_and_secret(endpoints, secret)
    return Connection(eps, secret=key, name=name)


def _endpoints_and_secret(endpoints: str | list[str], secret: bytes | str | None
                          ) -> tuple[list[str], bytes | None]:
    eps = [e.strip() for e in endpoints.split(",")] if isinstance(endpoints, str) else endpoints
    if not isinstance(eps, (list, tuple)):
        raise InvalidCommand(f"endpoints must be 'host:port,...' or a list of them "
                             f"(got {type(endpoints).__name__})")
    key = secret.encode() if isinstance(secret, str) else secret
    return [e for e in eps if e], key


_RETRY_ELSEWHERE = frozenset({Failure.NOT_LEADER, Failure.UNAVAILABLE, Failure.OUTCOME_UNKNOWN})
"""Failures after which another attempt (same session and seq) may succeed."""


def _final_error(reply: Reply, *, uncertain: bool) -> BoardError:
    """The exception for a failure no retry can mend (the client's one mapping of the wire's
    :class:`Failure` onto exceptions, with :func:`error_from` for committed refusals).
    ``uncertain``: an earlier attempt of this proposal may have applied, which this refusal
    says nothing about."""
    if reply.wire_error is Failure.COMPACTED:
        return RevisionCompacted(reply.message, compact_revision=reply.compact_revision)
    if reply.wire_error is Failure.SLOW_WATCHER:  # a watch stream's only, never a proposal's
        return WatchCancelled(reply.message, resume_revision=reply.resume_revision or 0)
    if uncertain:
        error = OutcomeUnknown(f"an earlier attempt may have applied; then: {reply.message}")
        error.__cause__ = InvalidCommand(reply.message)
        return error
    return InvalidCommand(reply.message)


def _budget(attempt_s: float) -> float:
    """The budget an attempt sends: its own wait less the time the answer needs to travel back,
    so the replica's verdict (``OUTCOME_UNKNOWN`` at worst) arrives before the client gives up."""
    return min(BUDGET_S_MAX, max(BUDGET_S_MIN, attempt_s - REPLY_MARGIN_S))


def _raise_if_all_refused(refusal: _Refused, refused: set[str], endpoints: list[str]) -> None:
    """Note that ``refusal.address`` refused us (our secret, or its connection cap); raise the
    refusal's typed error (:class:`AuthError`, :class:`TooManyConnections`) once every
    endpoint has: then no retry of this call can succeed soon, and waiting out the deadline to
    report the cluster "unavailable" would send scripts into a retry loop."""
    refused.add(refusal.address)
    if refused.issuperset(endpoints):
        raise refusal.error


def _check_endpoints(endpoints: object) -> list[str]:
    """``host:port`` strings with a port in 1..65535; at least one."""
    if not isinstance(endpoints, (list, tuple)) or not endpoints:
        raise InvalidCommand("endpoints: give at least one 'host:port'")
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":") if isinstance(endpoint, str) else ("", "", "")
        if not host or not port.isdecimal() or not 0 < int(port) < 65_536:
            raise InvalidCommand(f"endpoints: {endpoint!r:.80} is not 'host:port' with a port "
                                 "in 1..65535")
    return [str(e) for e in endpoints]


def _backoff(attempt: int, deadline: float) -> None:
    delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * (2 ** min(attempt, 10)))
    time.sleep(max(0.0, min(delay, deadline - time.monotonic())))


def _lease_id(call: str, lease: int | LeaseInfo | Claim | None) -> int | None:
    if lease is None:
        return None
    return _need_lease(call, lease)


def _need_lease(call: str, lease: int | LeaseInfo | Claim) -> int:
    if isinstance(lease, Claim):
        return lease.lease
    if isinstance(lease, LeaseInfo):
        return lease.id
    if isinstance(lease, bool) or not isinstance(lease, int):
        raise InvalidCommand(f"{call}: lease must be a lease id, a LeaseInfo or a Claim "
                             f"(got {type(lease).__name__})")
    return lease


def _fence(call: str, fence: Claim | FenceRef | None) -> FenceRef | None:
    if fence is None or isinstance(fence, FenceRef):
        return fence
    if not isinstance(fence, Claim):
        raise InvalidCommand(f"{call}: fence must be a Claim or a FenceRef "
                             f"(got {type(fence).__name__})")
    return FenceRef(key=fence.key, fence=fence.fence)


def _lease_of(result: Result) -> LeaseInfo:
    if result.lease is None:
        raise ProtocolError("lease reply carried no lease")
    return result.lease


def _pending_or_entry(result: Result) -> Entry | Pending:
    if result.pending is not None and (result.entry is None or
                                       result.pending.status != "approved"):
        return result.pending
    if result.entry is not None:
        return result.entry
    raise ProtocolError("reply carried neither an entry nor a proposal")
