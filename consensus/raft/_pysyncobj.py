"""Every change quorumboard makes to pysyncobj 0.3.17, in one place, installed explicitly.

This is the only module that imports pysyncobj (a test checks). The pin is exact because we
override private, name-mangled methods. Nothing here changes pysyncobj when imported:
:func:`install` does, once per process, called by
:class:`~quorumboard.consensus.raft.node.RaftNode` before it builds a node (a test checks that
importing the node module leaves pysyncobj untouched). What we change and why (see the notes
on pysyncobj):

* **No pickle on any input path.** The wire is our own transport (msgpack, authenticated,
  size-bounded: consensus/raft/transport.py, plugged in as :class:`QbTransport`); the journal
  and its meta are our own crc'd msgpack files (consensus/raft/journal.py, handed over through
  pysyncobj's journal factory); snapshots go through pysyncobj's ``serializer``/``deserializer``
  hooks into a crc'd msgpack file; ``pysyncobj.pickle`` itself is replaced by a restricted
  msgpack codec (tuples via an ext type, anything else refused) so the internal paths we do not
  use can never unpickle either.
* **Raft §5.3 on the follower** (:func:`_trim_matching_entries`): pysyncobj truncates every entry
  after ``prevLogIdx`` even when the incoming entries match; we skip the matching prefix and
  suppress the truncation when nothing conflicts.
* **Raft §5.1/§5.3 on the leader: replies carry their term.** pysyncobj's AppendEntries reply
  (``next_node_idx``) says nothing of the term it answers, so a late reply to an append of an
  earlier term of this leader would raise its ``matchIndex`` and count as a fresh acknowledgement
  toward ``leaderFallbackTimeout``'s majority. The follower now sends its current term (the term
  of the append it answers: it adopted that term before replying) and the leader ignores a reply
  of any other term (:meth:`SyncObjReplica._qb_reply_is_current`), so an acknowledgement a
  leader counts is one given to it in its current term: the precondition for confirming
  leadership with a heartbeat round (ReadIndex, Raft thesis §6.4). Every replica of a cluster
  runs the same version; the wire schema requires the field (consensus/raft/transport.py).
* **ReadIndex (Raft thesis §6.4): leadership confirmed by one heartbeat round.** A read asks
  for a round (:meth:`SyncObjReplica.qb_read_index`): the leader starts one (a new round id,
  its commit index as the read index) and sends every member a ``qb_heartbeat`` carrying the
  round and its term, which a member answers at once with its own current term; every
  AppendEntries carries the newest round as well, echoed in its reply. The read index is
  confirmed once a majority, counting the leader, has answered that round or a later one in
  the leader's current term (for AppendEntries, the replies :meth:`_qb_reply_is_current`
  keeps). Such an answer was given after the round started by a member whose term was still
  ours, so no leader of a newer term had been elected when the read arrived. A new leader
  starts no round before an entry of its own term is committed (its election no-op): until
  then its commit index may lag entries its predecessors committed (thesis §6.4, step 1).
  A follower asks the leader over the raft connection (``qb_read_index`` /
  ``qb_read_index_reply``); the leader runs the same round for it, except in a group of two or
  three, where the request, sent in the leader's term after the reads arrived, completes the
  majority by itself (:meth:`SyncObjReplica._qb_on_ask`). Waiting for the state to
  reach the index is :meth:`SyncObjReplica.qb_when_applied`. Every queue is bounded
  (:data:`READS_PENDING_MAX`) and every wait has a deadline.
* **Durable writes at one flush per commit (Raft thesis §10.2.1)**, with ``fsync``: a write is
  acknowledged only after a majority has its entry on disk, and the leader may be outside that
  majority. A follower holds its acknowledgements until one flush covers every append they
  acknowledge (:meth:`SyncObjReplica._SyncObj__sendNextNodeIdx`,
  :meth:`SyncObjReplica._qb_send_acks`); the leader sends its AppendEntries first and flushes
  while they travel and the followers flush (:meth:`SyncObjReplica._qb_sync_log`), and counts
  itself toward an entry's majority only once its own copy is on disk
  (:meth:`SyncObjReplica._qb_count_self_when_durable`; pysyncobj counts the leader always). One
  flush covers every entry appended since the last (group commit), so one commit costs about
  one flush plus a round trip, not two flushes in a row, and a burst of appends costs one
  flush on each member, not one per append.
* **The answer before the commit notice** (:meth:`SyncObjReplica._qb_defer_commit_notice`):
  pysyncobj tells the followers a new commit index right after applying, inside the tick,
  ahead of the callers' answers; on an event loop the notice now waits on a short timer and is
  dropped when another AppendEntries (the next proposals, a heartbeat) carries the index
  first, and leaves at once ahead of a read index a follower asked for.
* **A one-member group is not timer-bound** (:meth:`SyncObjReplica._qb_commit_alone`).
* **The apply hook**: entries reach the owner's ``_apply_entry``, which never raises.
* **Compaction**: the owner's ``_compaction_truncates`` decides whether the journal prefix a
  snapshot covers is dropped now (always, in production; the test harness overrides it to leave
  the state a crash between the two steps leaves).
* **Logging**: pysyncobj's stdlib logging goes to structlog at WARNING and above.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import heapq
import itertools
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol, TypeVar

import msgpack
import pysyncobj
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.poller
import pysyncobj.syncobj
import structlog
from pysyncobj.config import FAIL_REASON, SyncObjConf
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.syncobj import _RAFT_STATE, SyncObj, SyncObjException
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from quorumboard.consensus.errors import InvariantViolation, ProtocolError
from quorumboard.consensus.raft.journal import Entry, Journal

if TYPE_CHECKING:
    from quorumboard.consensus.raft.transport import QbConnection, WireConfig

__all__ = [
    "CONNECTION_STATE",
    "FAIL_REASON",
    "POLL_EVENT_TYPE",
    "PYSYNCOBJ_VERSION",
    "READS_PENDING_MAX",
    "Owner",
    "QbTransport",
    "SyncObjConf",
    "SyncObjException",
    "SyncObjReplica",
    "handing_over",
    "install",
    "installed",
]

log = structlog.get_logger("quorumboard.consensus.raft")

PYSYNCOBJ_VERSION: Final = "0.3.17"


class Owner(Protocol):
    """What :class:`SyncObjReplica` calls back into (a RaftNode)."""

    settings: Any
    _journal: Journal

    def _apply_entry(self, command: bytes) -> object: ...
    def _compaction_truncates(self) -> bool: ...
    def _tick_in(self, delay_s: float) -> None: ...
    def _later_on_loop(self, delay_s: float,
                       fn: Callable[[], None]) -> asyncio.TimerHandle | None: ...
    def _tick_soon_on_loop(self) -> bool: ...


# --- pickle replacement ------------------------------------------------------------------------

_TUPLE_EXT: Final = 1
_CODEC_BYTES_MAX: Final = 64 * 2**20


def _codec_default(obj: object) -> msgpack.ExtType:
    if isinstance(obj, tuple):
        return msgpack.ExtType(_TUPLE_EXT, _codec_dumps(list(obj)))
    raise TypeError(f"refusing to serialize {type(obj).__name__} (pysyncobj pickle is disabled)")


def _codec_ext_hook(code: int, data: bytes) -> tuple[Any, ...]:
    if code != _TUPLE_EXT:
        raise ValueError(f"unknown ext type {code}")
    value = _codec_loads(data)
    if not isinstance(value, list):
        raise ValueError("tuple ext does not hold an array")
    return tuple(value)


def _codec_dumps(obj: object, protocol: int | None = None) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True, strict_types=True, default=_codec_default))


def _codec_loads(data: bytes | str) -> Any:
    raw = data if isinstance(data, bytes) else bytes(data, "utf-8")
    return msgpack.unpackb(
        raw,
        raw=False,
        strict_map_key=True,
        ext_hook=_codec_ext_hook,
    )


def _codec_dump(obj: object, file: BinaryIO, protocol: int | None = None) -> None:
    file.write(_codec_dumps(obj))


def _codec_load(file: BinaryIO) -> Any:
    return _codec_loads(file.read(_CODEC_BYTES_MAX + 1))


_journal_handoff = threading.local()


def _create_journal(journalFile: str | None = None) -> Journal:
    """Stands in for pysyncobj.journal.createJournal: hands over the journal RaftNode opened."""
    journal: Journal | None = getattr(_journal_handoff, "journal", None)
    _journal_handoff.journal = None
    if journal is None or journalFile is None or str(journal.path) != journalFile:
        raise InvariantViolation("pysyncobj asked for a journal RaftNode did not provide")
    return journal


_poller_handoff = threading.local()
_create_pysyncobj_poller = pysyncobj.poller.createPoller


def _create_poller(poller_type: str) -> Any:
    """Stands in for pysyncobj's createPoller: the :class:`LoopPoller` RaftNode made, if any."""
    poller = getattr(_poller_handoff, "poller", None)
    _poller_handoff.poller = None
    return poller if poller is not None else _create_pysyncobj_poller(poller_type)


_bridge_state = threading.local()


class _StructlogBridge(logging.Handler):
    """Forward pysyncobj's stdlib logging (WARNING and up) to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if getattr(_bridge_state, "suppressing", False) and message.startswith("truncating"):
            return  # pysyncobj warns about a truncation we suppressed (nothing conflicted)
        logger = structlog.get_logger(record.name)
        kwargs: dict[str, Any] = {}
        if record.exc_info:
            kwargs["exc_info"] = record.exc_info
        logger.log(record.levelno, "pysyncobj", detail=message, **kwargs)


_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Put quorumboard's replacements into pysyncobj, process-wide; idempotent.

    Checks the pinned version, replaces ``pysyncobj.pickle`` (and the names ``pysyncobj.journal``
    bound from it at import) with the restricted msgpack codec, routes pysyncobj's journal and
    poller factories through :func:`handing_over`, and sends pysyncobj's logging to structlog.
    Called by :class:`~quorumboard.consensus.raft.node.RaftNode` before it builds a node; never
    at import, so a program that only imports quorumboard keeps pysyncobj as it is. Raises
    :class:`ImportError` if the installed pysyncobj is not the pinned version."""
    global _installed
    with _install_lock:
        if _installed:
            return
        version = getattr(pysyncobj, "__version__", None) or _pysyncobj_version()
        if version != PYSYNCOBJ_VERSION:
            raise ImportError(f"quorumboard needs pysyncobj=={PYSYNCOBJ_VERSION}, found {version}")
        for module in (pysyncobj.pickle, pysyncobj.journal):
            module.loads = _codec_loads
            module.dumps = _codec_dumps
        pysyncobj.pickle.load = _codec_load
        pysyncobj.pickle.dump = _codec_dump
        pysyncobj.syncobj.createJournal = _create_journal
        pysyncobj.journal.createJournal = _create_journal
        pysyncobj.syncobj.createPoller = _create_poller
        root = logging.getLogger("pysyncobj")
        root.setLevel(logging.WARNING)
        root.propagate = False
        root.handlers = [_StructlogBridge()]
        _installed = True


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    return _installed


def _pysyncobj_version() -> str:
    from pysyncobj.version import VERSION

    return str(VERSION)


@contextlib.contextmanager
def handing_over(journal: Journal, poller: Any) -> Iterator[None]:
    """While building one :class:`SyncObjReplica` on this thread: pysyncobj's journal factory
    returns ``journal`` and its poller factory ``poller`` (pysyncobj's own poller if ``None``).
    pysyncobj creates both inside its constructor, with no parameter to pass them in."""
    _journal_handoff.journal = journal
    _poller_handoff.poller = poller
    try:
        yield
    finally:
        _journal_handoff.journal = None
        _poller_handoff.poller = None


# --- ReadIndex -----------------------------------------------------------------------------------

READS_PENDING_MAX: Final = 4096
"""Reads one replica holds at once in each stage (waiting for a round, asking the leader,
waiting for the state to catch up): past it a read fails at once (backpressure). The client
endpoint batches its reads into one request per round, so this bounds followers' requests and
misuse, not normal load."""

M = TypeVar("M")

_ROUND_KINDS: Final = frozenset({"qb_heartbeat", "qb_heartbeat_reply"})

COMMIT_NOTICE_DELAY_S: Final = 0.005
"""How long a leader's commit notice waits for another AppendEntries to carry the new commit
index instead (:meth:`SyncObjReplica._qb_defer_commit_notice`): well past the gap between
one client's write and its next on this 2-core VM (0.2-1 ms measured, loaded), short
against the heartbeat interval (0.1 s) that would otherwise tell an idle follower."""
ROUND_WIDEN_S: Final = 0.005
"""A ReadIndex round goes to a majority's worth of members first; still unconfirmed this long
after (a tick is asked for at that moment), it goes to the others too. Well past a round's time on loopback (0.2-2 ms measured on 2 cores),
so the others are asked only when a chosen member is dead, paused or slow."""

IndexCallback = Callable[[int | None], None]
"""A read's confirmed read index, or ``None``: not confirmed (not the leader any more, no
leader to ask, the deadline passed, a queue full)."""


@dataclasses.dataclass(slots=True)
class _ReadWait:
    """One request for a read index: its callback, deadline and optional ``prepare`` (see
    :meth:`SyncObjReplica.qb_read_index`); once its round has started,
    the round id, the leader's term and the read index (the commit index at the round's
    start); on a follower, the leader it was sent to."""

    callback: IndexCallback
    deadline: float
    prepare: IndexCallback | None = None
    round: int = 0
    term: int = 0
    index: int = 0
    sent_to: Any = None


def round_members(others: Collection[M], connected: Collection[M],
                  answered: Mapping[M, int]) -> tuple[list[M], list[M]]:
    """Which connected members a ReadIndex round goes to first, and which it skips: as many
    as make a majority with the leader, those that answered the newest round first (ties in
    ``others`` order). Fewer when fewer are connected (the round then waits for a member to
    connect, or for an AppendEntries reply)."""
    members = sorted((n for n in others if n in connected),
                     key=lambda n: answered.get(n, 0), reverse=True)
    needed = (len(others) + 1) // 2
    return members[:needed], members[needed:]


def _answer(callback: Callable[[Any], None], value: Any) -> None:
    """Run a read's callback; one that raises must not stop the tick (nor other reads)."""
    try:
        callback(value)
    except Exception:
        log.exception("raft_read_callback_raised")


# --- Raft fixes ---------------------------------------------------------------------------------


def _trim_matching_entries(
    journal: Journal, message: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Drop the prefix of ``entries`` our log already has; say whether nothing conflicts.

    Returns the message to hand to pysyncobj and True when every entry matched (so pysyncobj
    must not truncate our suffix). The commit index is clamped to the last index the message
    verified (Raft Figure 2: commitIndex = min(leaderCommit, index of last new entry)).
    """
    prev_idx = message.get("prevLogIdx")
    entries: list[Entry] = list(message.get("entries") or [])
    if prev_idx is None or len(journal) == 0:
        return message, False
    first_idx = journal[0][1]
    position = prev_idx - first_idx
    if not 0 <= position < len(journal) or journal[position][2] != message.get("prevLogTerm"):
        return message, False
    if any(entry[1] != prev_idx + 1 + i for i, entry in enumerate(entries)):
        return message, False
    verified_last = prev_idx + len(entries)
    matched = 0
    # Bounded by the number of entries in the message.
    for entry in entries:
        at = entry[1] - first_idx
        if at >= len(journal) or journal[at][2] != entry[2]:
            break
        matched += 1
    trimmed = dict(message, commit_index=min(message["commit_index"], verified_last))
    if matched:
        last = entries[matched - 1]
        trimmed.update(entries=entries[matched:], prevLogIdx=last[1], prevLogTerm=last[2])
    return trimmed, matched == len(entries)


class SyncObjReplica(SyncObj):  # type: ignore[misc]
    """pysyncobj's SyncObj with our apply hook (no @replicated methods at all) and the Raft
    fixes below, for one :class:`Owner` (a RaftNode). Build it inside :func:`handing_over`,
    after :func:`install`."""

    # pysyncobj's private state that _qb_commit_alone advances (declared for the type checker).
    _SyncObj__raftCommitIndex: int
    _SyncObj__leaderCommitIndex: int

    def __init__(self, owner: Owner, conf: SyncObjConf, wire: WireConfig,
                 read_timeout_s: float = 10.0) -> None:
        self._qb_owner = owner
        self._qb_wire = wire
        # ReadIndex state (set before pysyncobj's constructor: its tick thread may start there).
        self._qb_read_timeout_s = read_timeout_s
        self._qb_round = 0  # the newest round started; carried by every append we send
        self._qb_answering_round = 0  # follower: the round of the append being answered
        self._qb_acked: dict[Any, int] = {}  # leader: newest round each member answered
        self._qb_round_skipped: list[Any] = []  # leader: members the newest round was not sent to
        self._qb_round_sent_at = 0.0  # leader: when the newest round was sent
        # whether every message since qb_arm_event was a round's heartbeat or its answer
        # (None: no message yet); see qb_event_needs_tick
        self._qb_reads_only: bool | None = None
        self._qb_leader_heard_at = 0.0  # follower: when the leader's last message came
        self._qb_unstarted: list[_ReadWait] = []  # leader: reads waiting for their round
        self._qb_rounds: deque[_ReadWait] = deque()  # leader: started, in round order
        self._qb_term_committed = -1  # the term whose first entry we saw committed
        self._qb_asks: dict[int, _ReadWait] = {}  # follower: requests to the leader
        self._qb_ask_ids = itertools.count(1)
        self._qb_applied_waits: list[tuple[int, int, float, Callable[[bool], None]]] = []
        self._qb_applied_serial = itertools.count()
        self._qb_commit_floor = 0  # the commit index when the current tick began
        # follower, fsync mode: AppendEntries replies waiting for the flush that covers them,
        # each with the journal's truncation count when it was made
        self._qb_acks: list[tuple[Any, dict[str, Any], int]] = []
        self._qb_hold_acks = bool(owner.settings.fsync)
        self._qb_appends_held = False  # leader: appending this tick's proposals
        self._qb_appends_wanted = False  # ... and pysyncobj asked to send them
        self._qb_notice_due = False  # leader: a commit notice waits (see _qb_defer_commit_notice)
        self._qb_notice_timer: asyncio.TimerHandle | None = None  # ... on this timer
        settings = owner.settings
        super().__init__(
            settings.self_address, list(settings.peers), conf, transportClass=QbTransport
        )

    def _SyncObj__doApplyCommand(self, command: bytes) -> object:
        return self._qb_owner._apply_entry(command)

    def _applyCommand(self, command: bytes, callback: Any, commandType: int | None = None) -> None:
        """Queue a proposal for the next tick to append, as pysyncobj does, but on an event
        loop's own thread wake that tick without pysyncobj's wake-up pipe.

        pysyncobj writes a byte to a pipe after every proposal so that its tick thread wakes;
        on the loop that byte came back as a readable event one turn later, read with two more
        system calls, before a tick was scheduled. A client's proposal is made on the loop
        (the client endpoint's callback), so the owner schedules the tick directly
        (:meth:`RaftNode._tick_soon_on_loop`): the same tick, a turn of the loop earlier.
        Anywhere else (another thread, pysyncobj's own tick thread) the pipe wakes it."""
        if not self._qb_owner._tick_soon_on_loop():
            SyncObj._applyCommand(self, command, callback, commandType)
            return
        entry = command if commandType is None else bytes((commandType,)) + command
        try:
            self._SyncObj__commandsQueue.put_nowait((entry, callback))
        except queue.Full:
            self._SyncObj__callErrCallback(FAIL_REASON.QUEUE_FULL, callback)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        """Fix two deviations from Raft §5.3 before pysyncobj handles a message.

        Follower: pysyncobj truncates every entry after ``prevLogIdx`` even when the incoming
        entries match, so a re-sent append can drop applied (and acked) entries from the
        journal. We skip the matching prefix, suppress truncation when nothing conflicts, and
        clamp the commit index to the last entry this message verified.
        Leader: a reply whose term is not the leader's current term is dropped before pysyncobj
        sees it (Raft §5.1: it answers an append of an earlier term); a late success reply moved
        ``nextIndex`` backwards, re-sending entries already in flight; we keep the optimistic
        ``nextIndex`` (a failed append resets it).
        """
        kind = message.get("type")
        self._qb_reads_only = (kind in _ROUND_KINDS) and self._qb_reads_only is not False
        if kind == "append_entries":
            self._qb_answering_round = message.get("round", 0)
            try:
                self._qb_on_append_entries(node, message)
            finally:
                self._qb_answering_round = 0
            if self._SyncObj__raftLeader == node:
                self._qb_leader_heard_at = time.monotonic()
            return
        if kind == "next_node_idx" and not self._qb_reply_is_current(message):
            return  # a reply to an append of another term: it acknowledges nothing now
        if kind == "next_node_idx":
            self._qb_on_round_answered(node, message.get("round", 0))
        elif kind == "qb_heartbeat":  # a ReadIndex round: answer with our current term
            if (self._SyncObj__raftLeader == node
                    and message["term"] == self._SyncObj__raftCurrentTerm):
                self._qb_leader_heard_at = time.monotonic()
            self._SyncObj__transport.send(node, {
                "type": "qb_heartbeat_reply", "term": self._SyncObj__raftCurrentTerm,
                "round": message["round"]})
            return
        elif kind == "qb_heartbeat_reply":
            if message["term"] == self._SyncObj__raftCurrentTerm and self._qb_leading():
                self._qb_on_round_answered(node, message["round"])
            return
        elif kind == "qb_read_index":
            self._qb_on_ask(node, message["read_id"], message["term"])
            return
        elif kind == "qb_read_index_reply":
            self._qb_on_ask_answered(message["read_id"], message.get("read_index"))
            return
        if kind == "next_node_idx" and message["success"] and not message["reset"]:
            next_index = self._SyncObj__raftNextIndex
            before = next_index.get(node)
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            after = next_index.get(node)
            if before is not None and after is not None and after < before:
                next_index[node] = before
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _qb_on_append_entries(self, node: Any, message: dict[str, Any]) -> None:
        if "prevLogIdx" not in message:  # a snapshot chunk: nothing to trim
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            return
        message, suppress = _trim_matching_entries(self._qb_owner._journal, message)
        self._qb_suppress_truncate = suppress
        _bridge_state.suppressing = suppress
        try:
            SyncObj._SyncObj__onMessageReceived(self, node, message)
        finally:
            self._qb_suppress_truncate = False
            _bridge_state.suppressing = False

    def _qb_reply_is_current(self, message: dict[str, Any]) -> bool:
        """Whether an AppendEntries reply answers an append of our current term (Raft §5.1).

        Only such a reply may raise ``matchIndex``, move ``nextIndex`` or count as an
        acknowledgement (``lastResponseTime``, the majority behind ``leaderFallbackTimeout``).
        A reply of an earlier term answers an append sent before we were (re-)elected: counting
        it would let a deposed-and-re-elected leader count a follower that has since moved on.
        A newer term cannot come from a follower answering us (it replies in our append's term);
        it is ignored as well, like a lost message."""
        return bool(message["term"] == self._SyncObj__raftCurrentTerm)

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False,
                                  nextNodeIdx: int | None = None, success: bool = False) -> None:
        """pysyncobj's AppendEntries reply, plus ``term``: our current term, which is the term
        of the append being answered (pysyncobj adopts an append's term before it replies, and
        replies only to appends of a term >= its own). See :meth:`_qb_reply_is_current`. And
        ``round``: the ReadIndex round the answered append carried (see :meth:`qb_read_index`);
        any reply in our term, success or not, shows the follower still follows our term.

        A success reply acknowledges every entry up to ``nextNodeIdx - 1``. With ``fsync`` the
        reply waits for the flush that covers those entries (:meth:`_qb_send_acks`, at the start
        of the next tick, right after the messages that arrived together are handled), so no
        acknowledgement ever counts an entry that a power cut here could still take back, and
        the appends that arrive together share one flush. Replies keep their order (a failed
        one waits with the rest)."""
        if nextNodeIdx is None:
            nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1
        message = {
            "type": "next_node_idx",
            "next_node_idx": nextNodeIdx,
            "reset": reset,
            "success": success,
            "term": self._SyncObj__raftCurrentTerm,
            "round": self._qb_answering_round,
        }
        if self._qb_hold_acks:
            self._qb_acks.append((node, message, self._qb_owner._journal.truncations))
        else:
            self._SyncObj__transport.send(node, message)

    def _qb_send_acks(self) -> None:
        """Flush the journal once, then send the AppendEntries replies that waited for it.

        A success reply prepared before a suffix of the log was cut, or in an earlier term,
        is dropped instead: the entries it acknowledges may be gone (an append of a newer
        leader replaced them before the flush), and a lost reply is what Raft tolerates (the
        leader's next append asks again). If the flush fails, nothing is sent."""
        if not self._qb_acks:
            return
        acks, self._qb_acks = self._qb_acks, []
        journal = self._qb_owner._journal
        journal.sync()
        term, cuts = self._SyncObj__raftCurrentTerm, journal.truncations
        for node, message, cuts_then in acks:  # bounded by the replies one poll produced
            if message["success"] and (cuts_then != cuts or message["term"] != term):
                continue
            self._SyncObj__transport.send(node, message)

    def _checkCommandsToApply(self) -> None:
        """Append queued proposals (pysyncobj), then commit them at once if we are alone.

        pysyncobj advances a leader's commit index only at the top of a tick, from its
        followers' match indexes, so an entry appended in this tick commits in the next one.
        With followers that is the tick their AppendEntries reply wakes; a one-member group
        gets no reply, and the entry waited for the idle tick (``tick_period_s``, 50 ms):
        every put and every read barrier cost ~50 ms. See :meth:`_qb_commit_alone`.
        """
        self._qb_appends_held = True
        try:
            SyncObj._checkCommandsToApply(self)
        finally:
            self._qb_appends_held = False
        if self._qb_appends_wanted:
            self._qb_appends_wanted = False
            self._qb_send_appends()
        self._qb_sync_log()
        self._qb_commit_alone()
        self._qb_reads_tick()

    def _SyncObj__sendAppendEntries(self) -> None:
        """pysyncobj sends AppendEntries after each proposal it appends: while it appends this
        tick's proposals (:meth:`_checkCommandsToApply`) that becomes one AppendEntries per
        member for all of them, sent right after the last (the proposals of a tick share one
        message, one append and one acknowledgement on each follower). Any AppendEntries
        carries the commit index, so one that leaves makes a pending commit notice
        (:meth:`_qb_defer_commit_notice`) needless."""
        if self._qb_appends_held:
            self._qb_appends_wanted = True
            return
        self._qb_send_appends()

    def _qb_send_appends(self) -> None:
        """pysyncobj's AppendEntries to every member; each carries the commit index (so a
        pending commit notice has nothing left to say: its timer is cancelled)."""
        self._qb_notice_due = False
        timer, self._qb_notice_timer = self._qb_notice_timer, None
        if timer is not None:
            timer.cancel()
        SyncObj._SyncObj__sendAppendEntries(self)

    def _qb_defer_commit_notice(self) -> bool:
        """After a leader applied entries, send the AppendEntries that tells the followers the
        new commit index only if no other AppendEntries carries it first, within
        :data:`COMMIT_NOTICE_DELAY_S`.

        pysyncobj sends that notice inside the tick, right after applying, and the callers'
        replies go out only after the tick (they are handed to the event loop): one client's
        put waited for the notice's two sends, a sixth of the put's time at the leader
        (timestamps in the three processes, bench/README.md). No write waits for the notice:
        a commit is decided by the leader alone, and a follower learns it from the next
        AppendEntries, whichever that is. Sent right after the replies, the notice still cost
        every put of one client two sends, each follower a wake-up and an acknowledgement, and
        the leader two more wake-ups to read them: on two cores about a sixth of the CPU one
        put cost the three replicas (a quarter of each follower's), competing with the next
        put for the cores (measured: bench/README.md). So it waits on a timer, and is dropped when an AppendEntries leaves
        first (the next proposal's, a heartbeat), which carries the index too: a writer that
        keeps writing never pays for it, and under load the next batch carries it as before.

        Only a follower's freshness waits, never a commit or a reply: a follower's
        linearizable read is answered with a read index the follower must apply up to, so
        the leader sends a due notice just before that answer, on the same connection
        (:meth:`_qb_flush_commit_notice`); its stale reads and its watches see a commit at
        most :data:`COMMIT_NOTICE_DELAY_S` later than before when nothing else is written.
        Returns whether pysyncobj should still send it now (thread mode: no loop to wait
        on)."""
        if self._qb_notice_timer is None:
            self._qb_notice_timer = self._qb_owner._later_on_loop(
                COMMIT_NOTICE_DELAY_S, self._qb_send_commit_notice)
            if self._qb_notice_timer is None:
                return True
        self._qb_notice_due = True
        return False

    def _qb_send_commit_notice(self) -> None:
        """The deferred notice, run by the loop outside any tick: a failure is logged as a
        tick's is (the next AppendEntries carries the index anyway)."""
        self._qb_notice_timer = None
        try:
            if self._qb_notice_due and self._qb_leading():
                self._SyncObj__sendAppendEntries()
        except Exception:
            log.exception("raft_commit_notice_raised")
        finally:
            self._qb_notice_due = False

    def _qb_flush_commit_notice(self) -> None:
        """Send a due commit notice now (before a read index a follower must apply up to);
        the AppendEntries cancels its timer (:meth:`_qb_send_appends`)."""
        if self._qb_notice_due and self._qb_leading():
            self._SyncObj__sendAppendEntries()

    def _qb_sync_log(self) -> None:
        """Flush what this tick appended, once its AppendEntries are on the wire.

        This tick's AppendEntries left just before (:meth:`_checkCommandsToApply`), so the
        followers are receiving and flushing their copies while we flush ours (Raft thesis
        §10.2.1): one commit waits for about one flush and a round trip instead of our flush,
        then theirs. One flush covers every entry appended since the last (all the
        proposals this tick took from the queue, bounded by ``commandsQueueSize``: group
        commit), and a follower's tick has nothing to flush here (it flushed before it
        acknowledged). Until this flush the leader does not count itself for these entries
        (:meth:`_qb_count_self_when_durable`)."""
        self._qb_owner._journal.sync()

    def _onTick(self, timeToWait: float = 0.0) -> None:
        """pysyncobj's tick, after sending the acknowledgements the last poll's appends
        produced (:meth:`_qb_send_acks`: one flush for all of them, before this tick applies
        anything). Remembers the commit index the tick starts from, which
        :meth:`_qb_count_self_when_durable` keeps as a floor (it was committed before)."""
        self._qb_send_acks()
        self._qb_commit_floor = self._SyncObj__raftCommitIndex
        SyncObj._onTick(self, timeToWait)

    def _SyncObj__applyLogEntries(self) -> bool:
        leading = bool(self._SyncObj__otherNodes) and self._qb_leading()
        if leading:
            self._qb_count_self_when_durable()
        notice = bool(SyncObj._SyncObj__applyLogEntries(self))  # True: send the new commit index
        if notice and leading:  # one notice pending covers this apply too
            return False if self._qb_notice_due else self._qb_defer_commit_notice()
        return notice

    def _qb_count_self_when_durable(self) -> None:
        """Leader: recount the commit index pysyncobj just raised, counting ourselves only for
        the entries our journal has on disk (Raft thesis §10.2.1).

        pysyncobj's leader counts itself for every entry in its log, which is right only when
        its log is on disk before it replicates. Ours is flushed after the AppendEntries leave
        (:meth:`_qb_sync_log`), so an entry is committed once a majority, counting us only up
        to the journal's ``durable_index``, acknowledged it: possibly the followers alone.
        Without ``fsync`` ``durable_index`` is the log's end and nothing changes. Runs right
        after pysyncobj's commit rule at the top of a tick (before anything is applied); the
        commit index the tick began with was committed already and stays. As in Raft §5.4.2
        only an entry of our current term commits by counting."""
        commit = self._SyncObj__raftCommitIndex
        floor = self._qb_commit_floor
        durable = self._qb_owner._journal.durable_index
        if commit <= floor or durable >= commit:
            return
        others = self._SyncObj__otherNodes
        match = self._SyncObj__raftMatchIndex
        acked = sorted([durable, *(match.get(node, 0) for node in others)], reverse=True)
        majority = acked[(len(others) + 1) // 2]  # the highest index a majority has on disk
        target = min(commit, majority)
        entries = self._SyncObj__getEntries(target, 1) if target > floor else []
        if not entries or entries[0][2] != self._SyncObj__raftCurrentTerm:
            target = floor  # terms never fall along the log: no entry of ours below either
        self._SyncObj__raftCommitIndex = target
        self._SyncObj__raftLog.setRaftCommitIndex(target)
        self._SyncObj__leaderCommitIndex = target

    def _qb_alone_leading(self) -> bool:
        return (not self._SyncObj__otherNodes
                and self._SyncObj__raftState == _RAFT_STATE.LEADER)

    def _qb_commit_alone(self) -> None:
        """A one-member group's leader commits every entry of its term once it is durable.

        Raft §5.3/§5.4: an entry of the leader's current term is committed once a majority
        stores it; the majority of a one-member group is the leader itself, so appended (and,
        with ``fsync``, fsynced) is committed. This is pysyncobj's own rule (the top of
        ``_onTick``) applied without waiting for the next tick. With any other member nothing
        changes here: commits still follow the members' replies.
        """
        if not self._qb_alone_leading():
            return
        last_index = self._SyncObj__getCurrentLogIndex()
        if (last_index <= self._SyncObj__raftCommitIndex
                or self._SyncObj__getCurrentLogTerm() != self._SyncObj__raftCurrentTerm):
            return
        self._qb_owner._journal.sync()  # fsync mode: durable before it counts as committed
        self._SyncObj__raftCommitIndex = last_index
        self._SyncObj__raftLog.setRaftCommitIndex(last_index)
        self._SyncObj__leaderCommitIndex = last_index
        self._SyncObj__applyLogEntries()

    def _qb_alone_caught_up(self) -> bool:
        """A one-member group's leader with every log entry committed and applied: a read now
        sees every write acknowledged before it (Raft §8, with the majority being itself)."""
        return (self._qb_alone_leading()
                and self._SyncObj__raftLastApplied == self._SyncObj__raftCommitIndex
                == self._SyncObj__getCurrentLogIndex())

    # --- ReadIndex (Raft thesis §6.4) -----------------------------------------------------------
    # Everything below runs on the tick thread only (RaftNode routes calls there).

    def qb_leader_in_touch(self, now: float, within_s: float) -> bool:
        """Whether we lead, or follow a leader whose last AppendEntries or round heartbeat came
        within ``within_s``. pysyncobj keeps the leader it knew for as long as no member is
        connected (a follower starts no election alone), so a follower whose links were all
        reset still names its old leader while the rest of the cluster moves on."""
        if self._qb_leading():
            return True
        return (self._SyncObj__raftLeader is not None
                and now - self._qb_leader_heard_at <= within_s)

    def qb_arm_event(self) -> None:
        """Before an I/O event is handled: start noting what its messages were."""
        self._qb_reads_only = None

    def qb_event_needs_tick(self) -> bool:
        """After an I/O event: whether a tick must act on it. Not when all it carried was
        round heartbeats and their answers: a member answers a heartbeat as it arrives and a
        leader counts the answer as it arrives (reads resolve there), and neither touches
        pysyncobj's state, so the tick would find nothing to do (on a follower it cost about
        as much as answering the heartbeat, measured). The periodic tick still runs."""
        return self._qb_reads_only is not True

    def _qb_leading(self) -> bool:
        return bool(self._SyncObj__raftState == _RAFT_STATE.LEADER)

    def qb_read_index(self, callback: IndexCallback,
                      prepare: IndexCallback | None = None) -> None:
        """``callback(index)`` with a read index confirmed by a heartbeat round started after
        this call, or ``callback(None)`` (not confirmed within the read timeout, no leader to
        ask, leadership lost, a queue full).

        ``prepare(index)``, if given, runs first on a leader whose state is already applied up
        to the read index when the round starts, right after the round's heartbeat left: what
        the state holds then is what the read returns if the round confirms, so the caller
        can build its answer while the heartbeat travels instead of after the answer (the
        round still decides whether it may be sent: ``callback`` follows with the index or
        ``None``). The leader's log up to its commit index never changes while it leads, and
        its applied index is at most its commit index, so the state then is exactly the state
        at the read index, the one a read served at confirmation sees up to that index. Not
        on a follower, which learns its read index from the leader's answer.

        On the leader a round starts at once (a new leader's, once its own first entry has
        committed) with the commit index as the read index; on a follower the request goes to
        the leader, which runs a round for it and answers with that round's index. Reading
        after :meth:`qb_when_applied` ``(index)`` then sees every write acknowledged before this
        call: at the round's start no newer leader existed, so every such write was committed
        by us or a predecessor, hence is at or below our commit index."""
        held = len(self._qb_unstarted) + len(self._qb_rounds) + len(self._qb_asks)
        if held >= READS_PENDING_MAX:
            _answer(callback, None)
            return
        wait = _ReadWait(callback, time.monotonic() + self._qb_read_timeout_s, prepare)
        if self._qb_leading():
            self._qb_unstarted.append(wait)
            self._qb_start_round()
        else:
            self._qb_asks[next(self._qb_ask_ids)] = wait
            self._qb_send_asks()

    def qb_when_applied(self, index: int, callback: Callable[[bool], None]) -> None:
        """``callback(True)`` once every entry up to ``index`` is applied here (at once if it
        is); ``callback(False)`` past the read timeout or with the queue full."""
        if self._SyncObj__raftLastApplied >= index:
            _answer(callback, True)
            return
        if len(self._qb_applied_waits) >= READS_PENDING_MAX:
            _answer(callback, False)
            return
        heapq.heappush(self._qb_applied_waits, (
            index, next(self._qb_applied_serial), time.monotonic() + self._qb_read_timeout_s,
            callback))

    def _qb_own_term_committed(self) -> bool:
        """Whether an entry of our current term is committed: only then does our commit index
        cover every entry our predecessors committed (Raft §5.4.2, thesis §6.4 step 1)."""
        term = self._SyncObj__raftCurrentTerm
        if self._qb_term_committed == term:
            return True
        entries = self._SyncObj__getEntries(self._SyncObj__raftCommitIndex, 1)
        if entries and entries[0][2] == term:
            self._qb_term_committed = term
            return True
        return False

    def _qb_start_round(self) -> None:
        """Start one round for every read waiting for one: a new round id, our commit index as
        their read index, and a heartbeat (AppendEntries carrying the round) to every member.
        Not before our own term has a committed entry."""
        if not self._qb_unstarted or not self._qb_leading() or not self._qb_own_term_committed():
            return
        self._qb_round += 1
        term, index = self._SyncObj__raftCurrentTerm, self._SyncObj__raftCommitIndex
        started, self._qb_unstarted = self._qb_unstarted, []
        for wait in started:
            wait.round, wait.term, wait.index = self._qb_round, term, index
        self._qb_rounds.extend(started)
        self._qb_send_round(term)
        if self._SyncObj__raftLastApplied >= index:
            for wait in started:
                if wait.prepare is not None:
                    _answer(wait.prepare, index)
        self._qb_resolve_rounds()

    def _qb_send_round(self, term: int) -> None:
        """The round's heartbeat, ``qb_heartbeat``, which a member answers at once with its
        current term (``qb_heartbeat_reply``), to just enough members to make a majority with
        us: those that answered the newest rounds first (alive and quick). The others get it
        only if the round is still unconfirmed :data:`ROUND_WIDEN_S` later
        (:meth:`_qb_widen_round`). On two cores a heartbeat nobody waits for is not free: its
        send, the member's wake-up and its answer compete for the cores the reply on the
        critical path needs.

        The heartbeat stays outside the log, so a follower touches neither its journal nor
        pysyncobj's append path for it (a round through AppendEntries cost about a third more
        per read, measured). AppendEntries carry the round too, so their replies confirm it
        as well (a lost heartbeat costs at most one ``heartbeat_interval_s``). Sending to
        fewer members changes no safety argument: a round counts answers, and a member we
        skipped is one whose answer was lost."""
        chosen, skipped = round_members(
            self._SyncObj__otherNodes, self._SyncObj__connectedNodes, self._qb_acked)
        self._qb_send_heartbeats(term, chosen)  # first: the widening's bookkeeping can wait
        if not self._qb_round_skipped:  # the oldest unwidened round's time is the one to keep
            self._qb_round_sent_at = time.monotonic()
            if skipped:
                self._qb_owner._tick_in(ROUND_WIDEN_S)
        self._qb_round_skipped = list(dict.fromkeys(self._qb_round_skipped + skipped))

    def _qb_send_heartbeats(self, term: int, members: list[Any]) -> None:
        message = {"type": "qb_heartbeat", "term": term, "round": self._qb_round}
        for node in members:
            self._SyncObj__transport.send(node, dict(message))

    def _qb_widen_round(self, now: float) -> None:
        """Leader, every tick: a round still unconfirmed :data:`ROUND_WIDEN_S` after the oldest
        round not sent to every member was (a chosen member is dead, paused or slow) goes to
        the members those rounds skipped; their answers confirm every older round as well. A
        tick is asked for at that moment: with a chosen member silent, no event would bring
        one sooner than the periodic tick."""
        if not (self._qb_rounds and self._qb_round_skipped):
            return
        wait_s = self._qb_round_sent_at + ROUND_WIDEN_S - now
        if wait_s > 0:
            self._qb_owner._tick_in(wait_s)
            return
        connected = self._SyncObj__connectedNodes
        skipped, self._qb_round_skipped = self._qb_round_skipped, []
        self._qb_send_heartbeats(self._SyncObj__raftCurrentTerm,
                                 [n for n in skipped if n in connected])

    def qb_timed_tick_wanted(self, now: float) -> bool:
        """Whether a tick asked for with ``Owner._tick_in`` has anything to do when its timer
        fires: that is only ever a round's widening (:meth:`_qb_widen_round`), which has work
        only once a round that skipped members has gone unconfirmed for
        :data:`ROUND_WIDEN_S`. A newer such round, not due yet, asks for the timer again
        instead (with one client a round is in flight much of the time, so a timer set by
        the previous round usually finds the next one under way)."""
        if not (self._qb_rounds and self._qb_round_skipped):
            return False
        wait_s = self._qb_round_sent_at + ROUND_WIDEN_S - now
        if wait_s > 0:
            self._qb_owner._tick_in(wait_s)
            return False
        return True

    def _qb_on_round_answered(self, node: Any, answered: int) -> None:
        """A reply of our current term answered the append that carried round ``answered``."""
        if answered > self._qb_acked.get(node, 0):
            self._qb_acked[node] = answered
            if self._qb_rounds:
                self._qb_resolve_rounds()

    def _qb_confirmed_round(self) -> int:
        """The newest round a majority, counting ourselves, answered in our current term.

        Round ids only grow (one counter for the life of the process), and a heartbeat or an
        append carries the newest round started before it was sent, so a member that answered
        round ``r`` or later answered after round ``r`` started; answers given in another term
        never get here."""
        others = self._SyncObj__otherNodes
        needed = (len(others) + 1) // 2  # members besides us that make a majority
        if needed == 0:
            return self._qb_round
        answered = sorted((self._qb_acked.get(n, 0) for n in others), reverse=True)
        return answered[needed - 1]

    def _qb_resolve_rounds(self) -> None:
        """Answer every read whose round a majority has answered (rounds are in order)."""
        rounds = self._qb_rounds
        confirmed = self._qb_confirmed_round()
        leading, term = self._qb_leading(), self._SyncObj__raftCurrentTerm
        for _ in range(len(rounds)):  # bounded by the rounds held
            if not rounds or rounds[0].round > confirmed:  # (a callback may have started reads)
                break
            wait = rounds.popleft()
            _answer(wait.callback, wait.index if leading and wait.term == term else None)
        if not rounds:
            self._qb_round_skipped = []  # nothing left to widen

    def _qb_send_asks(self) -> None:
        """Follower: send every request not yet sent to the current leader (again, after a
        leader change: a later leader's confirmed index serves the read just as well)."""
        leader = self._SyncObj__raftLeader
        if leader is None or leader not in self._SyncObj__connectedNodes:
            return
        for read_id, wait in self._qb_asks.items():  # bounded by READS_PENDING_MAX
            if wait.sent_to is not leader:
                wait.sent_to = leader
                self._SyncObj__transport.send(leader, {
                    "type": "qb_read_index", "read_id": read_id,
                    "term": self._SyncObj__raftCurrentTerm})

    def _qb_on_ask(self, node: Any, read_id: int, term: int) -> None:
        """Leader: a follower asks for a read index; answer once a round confirms one (no
        ``read_index`` in the answer: not confirmed).

        The request itself is half a confirmation: the follower sent it after its reads
        arrived, in ``term`` (its current term then). If that is our term, two members, the
        asker when it sent and we now, were in our term after those reads arrived, so none of
        them can have voted a newer leader in before. In a group of two or three that is a
        majority: no leader of a newer term existed when the reads arrived, and our commit
        index answers at once, without a round (one round trip for a follower's read instead
        of two). In larger groups the round runs as for our own reads."""
        def reply(index: int | None) -> None:
            message: dict[str, Any] = {"type": "qb_read_index_reply", "read_id": read_id}
            if index is not None:
                message["read_index"] = index
                self._qb_flush_commit_notice()  # the asker applies up to index: tell it first
            self._SyncObj__transport.send(node, message)

        if (not self._qb_leading()
                or len(self._qb_unstarted) + len(self._qb_rounds) >= READS_PENDING_MAX):
            reply(None)
            return
        if (term == self._SyncObj__raftCurrentTerm and self._qb_own_term_committed()
                and (len(self._SyncObj__otherNodes) + 1) // 2 <= 1):
            reply(self._SyncObj__raftCommitIndex)
            return
        self._qb_unstarted.append(_ReadWait(reply, time.monotonic() + self._qb_read_timeout_s))
        self._qb_start_round()

    def _qb_on_ask_answered(self, read_id: int, index: int | None) -> None:
        wait = self._qb_asks.pop(read_id, None)
        if wait is not None:
            _answer(wait.callback, index)

    def _qb_reads_tick(self) -> None:
        """Every tick, after committed entries are applied: start the round reads wait for (a
        new leader's first commit may just have happened), fail what a lost leadership or a
        deadline ends, send followers' requests, answer the reads whose state caught up."""
        now = time.monotonic()
        if self._qb_leading():
            if self._qb_asks:  # asked as a follower, now leading: confirm them ourselves
                self._qb_unstarted.extend(self._qb_asks.values())
                self._qb_asks.clear()
            self._qb_start_round()
            self._qb_widen_round(now)
        elif self._qb_unstarted or self._qb_rounds:
            ended = self._qb_unstarted + list(self._qb_rounds)
            self._qb_unstarted, self._qb_rounds = [], deque()
            self._qb_acked.clear()
            self._qb_round_skipped = []
            for wait in ended:
                _answer(wait.callback, None)
        self._qb_expire(now)
        if self._qb_asks:
            self._qb_send_asks()
        if self._qb_applied_waits:
            self._qb_check_applied(now)

    def _qb_expire(self, now: float) -> None:
        """Fail reads past their deadline. Each queue is in arrival order (a round holds reads
        that arrived before it started), so deadlines grow along it: stop at the first live."""
        if not (self._qb_unstarted or self._qb_rounds or self._qb_asks):
            return
        expired: list[_ReadWait] = []
        unstarted = self._qb_unstarted
        cut = next((i for i, w in enumerate(unstarted) if w.deadline > now), len(unstarted))
        if cut:
            expired.extend(unstarted[:cut])
            self._qb_unstarted = unstarted[cut:]
        rounds = self._qb_rounds
        for _ in range(len(rounds)):
            if rounds[0].deadline > now:
                break
            expired.append(rounds.popleft())
        for read_id in list(self._qb_asks)[:READS_PENDING_MAX]:
            if self._qb_asks[read_id].deadline > now:
                break
            expired.append(self._qb_asks.pop(read_id))
        for wait in expired:
            _answer(wait.callback, None)

    def _qb_check_applied(self, now: float) -> None:
        waits = self._qb_applied_waits
        applied = self._SyncObj__raftLastApplied
        for _ in range(len(waits)):  # bounded by the waits held
            if waits[0][0] > applied:
                break
            _answer(heapq.heappop(waits)[3], True)
        if any(w[2] <= now for w in waits):
            late = [w for w in waits if w[2] <= now]
            self._qb_applied_waits = [w for w in waits if w[2] > now]
            heapq.heapify(self._qb_applied_waits)
            for wait in late:
                _answer(wait[3], False)

    def _SyncObj__deleteEntriesFrom(self, fromIDx: int) -> None:
        if getattr(self, "_qb_suppress_truncate", False):
            return
        SyncObj._SyncObj__deleteEntriesFrom(self, fromIDx)

    def _SyncObj__deleteEntriesTo(self, toIDx: int) -> None:
        if not self._qb_owner._compaction_truncates():
            return
        SyncObj._SyncObj__deleteEntriesTo(self, toIDx)


# --- transport -----------------------------------------------------------------------------------


class QbTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj TCPTransport with our connection class, no utility messages, no read-only nodes.

    Only configured peers that complete the handshake become nodes. The higher address dials the
    lower one (pysyncobj's rule), so an inbound connection is accepted only from peers that dial
    us.
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self._wire: WireConfig = syncObj._qb_wire
        super().__init__(syncObj, selfNode, otherNodes)

    # pysyncobj hooks --------------------------------------------------------------------------

    def setOnUtilityMessageCallback(self, message: str, callback: Any) -> None:
        """Utility (admin) messages are never accepted on the raft port: ignore registrations."""

    def _createServer(self) -> None:
        from quorumboard.consensus.raft.transport import _Server

        host, port = self._selfNode.address.rsplit(":", 1)
        self._server = _Server(self._syncObj._poller, host, int(port), self._on_accepted)

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        """pysyncobj's send (``False`` when the node's connection is not up, before or after),
        with the connection looked up once: pysyncobj's looks it up four times, and each
        lookup hashes the node in Python (``Node.__hash__``), on every heartbeat and answer of
        a read's round. (Its other step, a random sleep before sending, is a test knob it never
        sets.) Every AppendEntries carries the newest ReadIndex round started before it was
        sent (see :meth:`SyncObjReplica.qb_read_index`)."""
        if message.get("type") == "append_entries":
            message["round"] = self._syncObj._qb_round
        conn = self._connections.get(node)
        if conn is None or conn.state != CONNECTION_STATE.CONNECTED:
            return False
        conn.send(message)
        return bool(conn.state == CONNECTION_STATE.CONNECTED)

    def _onTick(self) -> None:
        super()._onTick()
        now = time.monotonic()
        for conn in list(self._connections.values()) + list(self._unknownConnections):
            conn.check_timeouts(now)

    def addNode(self, node: Any) -> None:
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            from quorumboard.consensus.raft.transport import QbConnection

            conn = QbConnection(self._syncObj._poller, self._wire, expected_peer=node.address,
                                dial=self._wire.dial.get(node.address))
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def _onOutgoingConnected(self, conn: QbConnection) -> None:
        node = self._connToNode(conn)
        if node is not None:
            self._onNodeConnected(node)

    def _onNewIncomingConnection(self, conn: Any) -> None:
        raise ProtocolError("pysyncobj connections are not used")

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        raise ProtocolError("pysyncobj's unauthenticated first-message path is disabled")

    def _onOutgoingMessageReceived(self, conn: Any, message: Any) -> None:
        raise ProtocolError("pysyncobj's key-exchange path is disabled")

    def _onUtilityMessage(self, conn: Any, message: Any) -> bool:
        return False

    # ours -------------------------------------------------------------------------------------

    def _peer_dials_us(self, identity: str) -> bool:
        node = self._nodeAddrToNode.get(identity)
        return isinstance(node, TCPNode) and not self._shouldConnect(node)

    def _on_accepted(self, sock: socket.socket) -> None:
        if len(self._unknownConnections) >= self._wire.pending_connections_max:
            log.warning(
                "raft_too_many_pending_connections", limit=self._wire.pending_connections_max
            )
            sock.close()
            return
        from quorumboard.consensus.raft.transport import QbConnection

        try:
            conn = QbConnection(
                self._syncObj._poller, self._wire, sock=sock, peer_allowed=self._peer_dials_us
            )
        except OSError as exc:
            log.warning("raft_accept_setup_failed", error=str(exc))
            sock.close()
            return
        if conn.state == CONNECTION_STATE.DISCONNECTED:
            return
        self._unknownConnections.add(conn)
        conn.setOnConnectedCallback(functools.partial(self._on_incoming_authenticated, conn))
        conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))

    def _on_incoming_authenticated(self, conn: QbConnection) -> None:
        identity = conn.peer_identity
        node = self._nodeAddrToNode.get(identity) if identity is not None else None
        self._unknownConnections.discard(conn)
        if node is None or not self._peer_dials_us(node.address):
            conn.setOnDisconnectedCallback(None)
            conn.disconnect()
            return
        old = self._connections.get(node)
        self._connections[node] = conn
        if old is not None and old is not conn:
            old.setOnDisconnectedCallback(None)
            old.disconnect()
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        self._onNodeConnected(node)
