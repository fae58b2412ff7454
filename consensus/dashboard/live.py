"""A live cluster's views: replica status polled at a bounded rate, cached reads, and one
gap-free watch per open page.

However many pages are open, the replicas see one status poll per :data:`POLL_PERIOD_S` (a
digest at most every :data:`DIGEST_PERIOD_S`: it costs a replica a pass over its state under
its lock) and at most one read per view and prefix per :data:`READ_REFRESH_S`. A page's event
stream is the client's own watch (:meth:`Board.watch`), which resumes on another replica from
the next revision when one fails; the dashboard adds only the hand-off to the page. Only
reads: nothing here proposes anything (tests/test_dashboard_server.py checks the source).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel

from quorumboard.consensus.client.board import Board, connect
from quorumboard.consensus.core.model import Event
from quorumboard.consensus.dashboard.models import (
    ClaimRow,
    ClaimsView,
    ClusterView,
    EventRow,
    KeyRow,
    KeysView,
    LeaseRow,
    LeasesView,
    PoliciesView,
    PolicyRow,
    ReplicaView,
)
from quorumboard.consensus.errors import (
    BoardError,
    RevisionCompacted,
    Unavailable,
    WatchCancelled,
)
from quorumboard.consensus.wire.protocol import ReplicaStatus

__all__ = ["EventStream", "LiveSource", "StreamNotice"]

log = structlog.get_logger("quorumboard.consensus.dashboard.live")

POLL_PERIOD_S = 1.0
STATUS_TIMEOUT_S = 1.5
"""One replica's status must come within this, or it is shown down."""
DIGEST_PERIOD_S = 5.0
READ_REFRESH_S = 1.0
READ_TIMEOUT_S = 5.0
READS_CACHED_MAX = 64
"""Distinct (view, prefix) reads kept; the oldest is dropped past it."""
ROWS_MAX = 1_000
"""Rows a view shows; past it the view says it was cut."""
PREVIEW_CHARS = 200
STREAMS_MAX = 16
"""Pages streaming at once (each holds one watch and one thread)."""
HANDOFF_MAX = 1_024
"""Events a stream holds for a page that reads slowly; past it the watch waits (and the
replica cancels a watch that stays a whole buffer behind: it is then resumed)."""
HANDOFF_SLICE_S = 0.25
WATCH_IDLE_S = 30.0
"""A watch with no event for this long is restarted from its cursor (a safety net: closing
the page's board is what normally ends it)."""
WATCH_RESTARTS_MAX = 100_000
RESTART_PAUSE_S = 0.5

_V = TypeVar("_V", bound=BaseModel)


def _preview(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _failed(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def event_row(event: Event) -> EventRow:
    entry = event.entry
    return EventRow(revision=event.revision, kind=event.kind, key=event.key,
                    author=entry.author, version=entry.version, cause=event.cause,
                    value=_preview(entry.value) if event.kind == "put" else "")


class StreamNotice(BaseModel):
    """Something the page should know about its stream besides events: ``gap`` (events
    were compacted away before they could be sent) or ``retrying`` (no replica answers)."""

    kind: str
    message: str


class LiveSource:
    """Everything the page shows of one cluster. Start with :meth:`start`, end with
    :meth:`close` (which stops every thread and stream it started)."""

    def __init__(self, endpoints: list[str], secret: bytes | None, *,
                 poll_period_s: float = POLL_PERIOD_S) -> None:
        if not endpoints:
            raise Unavailable("the dashboard needs at least one endpoint")
        self.endpoints = list(endpoints)
        self._secret = secret
        self.poll_period_s = poll_period_s
        self._reads = connect(self.endpoints, agent="dashboard", secret=secret,
                              timeout_s=READ_TIMEOUT_S)
        self._status_boards = [connect([e], agent="dashboard", secret=secret,
                                       timeout_s=STATUS_TIMEOUT_S) for e in self.endpoints]
        self._view = ClusterView(
            replicas=[ReplicaView(endpoint=e, up=False, error="not polled yet")
                      for e in self.endpoints],
            leader=None, polled_at=time.time(), poll_period_s=poll_period_s)
        self._digests: dict[str, str] = {}
        self._digest_at = 0.0
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=len(self.endpoints),
                                        thread_name_prefix="dashboard-status")
        self._cache: OrderedDict[tuple[str, str], tuple[float, BaseModel]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._read_lock = threading.Lock()  # one read at a time: the rate stays bounded
        self._streams: set[EventStream] = set()
        self._ending: set[EventStream] = set()
        self._closing = False
        self._streams_lock = threading.Lock()

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._poller = threading.Thread(target=self._poll_loop, name="dashboard-poll",
                                        daemon=True)
        self._poller.start()

    def end_streams(self) -> None:
        """End every page's stream and refuse new ones: the first step of stopping, so the
        server's wait for open responses is not spent on streams that never end."""
        with self._streams_lock:
            self._closing = True
            streams = list(self._streams)
        for stream in streams:
            stream.stop()

    def close(self) -> None:
        self._stop.set()
        self.end_streams()
        with self._streams_lock:
            ending = list(self._ending)
        for stream in ending:
            stream.join()
        if self._poller is not None:
            self._poller.join(STATUS_TIMEOUT_S * 4)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for board in [self._reads, *self._status_boards]:
            board.close()

    # --------------------------------------------------------------------------- status

    def cluster(self) -> ClusterView:
        return self._view

    def _poll_loop(self) -> None:
        delay = 0.0
        for _ in range(2**62):  # bounded by close()
            if self._stop.wait(delay):
                return
            started = time.monotonic()
            try:
                self._view = self.poll()
            except Exception:  # never let the poller die: the page would freeze silently
                log.exception("status poll failed")
            delay = max(0.0, self.poll_period_s - (time.monotonic() - started))

    def poll(self) -> ClusterView:
        """Ask every replica for its status at once; a replica that does not answer within
        :data:`STATUS_TIMEOUT_S` is down."""
        digest = time.monotonic() - self._digest_at >= DIGEST_PERIOD_S
        if digest:
            self._digest_at = time.monotonic()

        def ask(board: Board) -> ReplicaStatus | BaseException:
            try:
                return board.status(digest=digest)
            except (BoardError, OSError) as exc:
                return exc

        answers = list(self._pool.map(ask, self._status_boards))
        top = max((a.commit_index for a in answers if isinstance(a, ReplicaStatus)), default=0)
        replicas = []
        leader = None
        for endpoint, answer in zip(self.endpoints, answers, strict=True):
            if not isinstance(answer, ReplicaStatus):
                replicas.append(ReplicaView(endpoint=endpoint, up=False, error=_failed(answer)))
                continue
            if answer.digest:
                self._digests[endpoint] = answer.digest
            leads = answer.role == "leader"
            if leads:
                leader = endpoint
            replicas.append(ReplicaView(
                endpoint=endpoint, up=True, role=answer.role, leader=leads, term=answer.term,
                commit_index=answer.commit_index, applied_index=answer.last_applied,
                lag=max(0, top - answer.last_applied), revision=answer.revision,
                keys=answer.keys, digest=self._digests.get(endpoint, ""),
                has_quorum=answer.has_quorum))
        return ClusterView(replicas=replicas, leader=leader, polled_at=time.time(),
                           poll_period_s=self.poll_period_s)

    # ---------------------------------------------------------------------------- reads

    def _cached(self, view: str, prefix: str, read: Callable[[], _V]) -> _V:
        """``read()``'s view, at most :data:`READ_REFRESH_S` old: however many pages ask, a
        (view, prefix) is read from the cluster at most once per refresh."""
        key = (view, prefix)
        with self._read_lock:
            with self._cache_lock:
                hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < READ_REFRESH_S:
                cached: _V = hit[1]  # type: ignore[assignment]
                return cached
            fresh = read()
            with self._cache_lock:
                self._cache[key] = (time.monotonic(), fresh)
                self._cache.move_to_end(key)
                while len(self._cache) > READS_CACHED_MAX:
                    self._cache.popitem(last=False)
            return fresh

    def keys(self, prefix: str) -> KeysView:
        def read() -> KeysView:
            try:
                entries = self._reads.list(prefix, limit=ROWS_MAX + 1)
            except BoardError as exc:
                return KeysView(prefix=prefix, revision=0, keys=[], truncated=False,
                                error=_failed(exc))
            rows = [KeyRow(key=e.key, version=e.version, author=e.author, lease=e.lease,
                           mod_revision=e.mod_revision, value=_preview(e.value))
                    for e in entries[:ROWS_MAX]]
            return KeysView(prefix=prefix, revision=max((e.revision for e in entries), default=0),
                            keys=rows, truncated=len(entries) > ROWS_MAX)

        return self._cached("keys", prefix, read)

    def claims(self, prefix: str) -> ClaimsView:
        def read() -> ClaimsView:
            try:
                claims = self._reads.claims(prefix, limit=ROWS_MAX + 1)
                left = {s.id: s.time_left_s for s in self._reads.leases()}
            except BoardError as exc:
                return ClaimsView(claims=[], truncated=False, error=_failed(exc))
            rows = [ClaimRow(key=c.key, owner=c.owner, fence=c.fence, lease=c.lease, ttl=c.ttl,
                             time_left_s=left.get(c.lease)) for c in claims[:ROWS_MAX]]
            return ClaimsView(claims=rows, truncated=len(claims) > ROWS_MAX)

        return self._cached("claims", prefix, read)

    def leases(self) -> LeasesView:
        def read() -> LeasesView:
            try:
                leases = self._reads.leases(limit=ROWS_MAX + 1)
            except BoardError as exc:
                return LeasesView(leases=[], truncated=False, error=_failed(exc))
            rows = [LeaseRow(id=s.id, owner=s.owner, ttl=s.ttl, time_left_s=s.time_left_s,
                             keys=len(s.keys), claims=s.claims, refreshes=s.refreshes)
                    for s in leases[:ROWS_MAX]]
            return LeasesView(leases=rows, truncated=len(leases) > ROWS_MAX)

        return self._cached("leases", "", read)

    def policies(self) -> PoliciesView:
        def read() -> PoliciesView:
            try:
                bindings = self._reads.policies(limit=ROWS_MAX)
            except BoardError as exc:
                return PoliciesView(policies=[], error=_failed(exc))
            return PoliciesView(policies=[
                PolicyRow(prefix=b.prefix, name=b.name,
                          params=json.dumps(b.params, sort_keys=True)) for b in bindings])

        return self._cached("policies", "", read)

    # -------------------------------------------------------------------------- streams

    def stream(self, prefix: str, after_revision: int | None,
               loop: asyncio.AbstractEventLoop) -> EventStream:
        """A page's event stream from ``after_revision + 1`` (``None``: from now). Raises
        :class:`Unavailable` when :data:`STREAMS_MAX` pages already stream."""
        with self._streams_lock:
            if self._closing:
                raise Unavailable("the dashboard is stopping")
            if len(self._streams) >= STREAMS_MAX:
                raise Unavailable(f"{STREAMS_MAX} pages are streaming already")
            stream = EventStream(self, prefix, after_revision, loop)
            self._streams.add(stream)
        stream.start()
        return stream

    def streams_full(self) -> bool:
        with self._streams_lock:
            return len(self._streams) >= STREAMS_MAX

    def _forget(self, stream: EventStream) -> None:
        """A stopped stream: no longer counted, but joined at :meth:`close` if its thread has
        not ended by then."""
        with self._streams_lock:
            self._streams.discard(stream)
            self._ending = {s for s in self._ending if s.alive()} | {stream}

    def _watch_board(self) -> Board:
        return connect(self.endpoints, agent="dashboard", secret=self._secret,
                       timeout_s=READ_TIMEOUT_S)

    def current_revision(self) -> int:
        """The revision the leader (as the client believes) has applied: where "from now"
        starts (a follower's would only replay a little, never skip)."""
        return self._reads.status().revision


class EventStream:
    """One page's events: a watch on a board of its own, run on a thread, handed to the
    page's coroutine through at most :data:`HANDOFF_MAX` queued items.

    The watch is :meth:`Board.watch`: gap-free, and resumed from the next revision on another
    replica when its replica fails. The stream adds a cursor of its own for the rare restart
    the watch cannot do by itself (the replica cancelled it as too slow; compaction; no
    replica for a long while): it restarts at the revision of the last event it handed over,
    which the page may see twice (it drops repeats), never not at all."""

    def __init__(self, source: LiveSource, prefix: str, after_revision: int | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self.prefix = prefix
        self._after = after_revision
        self._loop = loop
        self.queue: asyncio.Queue[EventRow | StreamNotice | None] = asyncio.Queue()
        self._room = threading.Condition()
        self._held = 0  # items handed to the page's coroutine and not yet taken
        self._stop = threading.Event()
        self._board = source._watch_board()
        self._thread = threading.Thread(target=self._run, name="dashboard-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def consumed(self) -> None:
        """The page's coroutine took one item off :attr:`queue`."""
        with self._room:
            self._held -= 1
            self._room.notify()

    def stop(self) -> None:
        """End the stream without waiting: the watch ends (closing its board ends a blocked
        watch), and the page's coroutine gets ``None``, its last item."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._board.close()
        self._source._forget(self)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self.queue.put_nowait, None)

    def join(self, timeout_s: float = 5.0) -> None:
        self._thread.join(timeout_s)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _hand(self, item: EventRow | StreamNotice) -> bool:
        for _ in range(2**62):  # bounded by stop()
            if self._stop.is_set():
                return False
            with self._room:
                if self._room.wait_for(lambda: self._held < HANDOFF_MAX, HANDOFF_SLICE_S):
                    self._held += 1
                    break
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the page is gone
            return False
        return True

    def _run(self) -> None:
        try:
            self._stream()
        except Exception:
            if not self._stop.is_set():
                log.exception("event stream failed", prefix=self.prefix)

    def _stream(self) -> None:
        start: int | None = None if self._after is None else self._after + 1
        for _ in range(WATCH_RESTARTS_MAX):
            if self._stop.is_set():
                return
            try:
                if start is None:  # from now: anchor at a revision, so restarts leave no gap
                    start = self._source.current_revision() + 1
                for event in self._board.watch(self.prefix, start, idle_timeout_s=WATCH_IDLE_S):
                    if not self._hand(event_row(event)):
                        return
                    start = event.revision  # a restart re-sends this revision whole
            except WatchCancelled as exc:
                start = max(start or 0, exc.resume_revision)
            except RevisionCompacted as exc:
                if not self._hand(StreamNotice(kind="gap", message=str(exc))):
                    return
                start = exc.compact_revision
            except (Unavailable, BoardError, OSError) as exc:
                if self._stop.is_set():
                    return
                if not self._hand(StreamNotice(kind="retrying", message=_failed(exc))):
                    return
                self._stop.wait(RESTART_PAUSE_S)
